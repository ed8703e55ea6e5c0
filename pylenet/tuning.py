"""Hyperparameter sweeps on Ray Tune: `pylenet sweep` and pylenet.sweep().

A trial is one `pylenet train` run: its sampled options become train flags, parsed by the train
command's own parser and built into a Trainer by the same code (cli.train_args, cli.build_trainer),
so a trial's weights are bit for bit those of `pylenet train` with the same flags. Each epoch the
trial writes an ordinary pylenet checkpoint into a Tune checkpoint and reports its test accuracy
and loss (_TuneReport); a trial whose worker dies is restarted from that checkpoint and loses
nothing, since pylenet's resume is bit-exact. The driver (_Recorder) keeps OUT/results.csv and
OUT/best/model.ckpt up to date as trials finish, so an interrupted sweep keeps every finished
trial, and draws OUT/sweep.png at the end.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pylenet.callbacks import Callback
from pylenet.cluster import RAY_EXTRA, ray_session, require_ray

SEARCHES = ("random", "grid", "optuna")
SCHEDULERS = ("none", "asha")
# `pylenet train` options that say where data and results go or how one run is carried out
# (the sweep sets those for every trial); every other train option can be searched.
NOT_SEARCHABLE = ("data", "dataset", "download", "out", "resume", "no_progress", "threads",
                  "device", "limit", "epochs", "until_accuracy", "workers", "address")
SPEC_KINDS = ("choice", "uniform", "loguniform", "grid")
_SPEC = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)
# Tune's metric: the test accuracy after each epoch, the higher the better.
METRIC, MODE = "accuracy", "max"


def searchable_options() -> dict:
    """The train options a sweep can search: name (as in pylenet.cli: lr, batch_size, ...) ->
    its argparse action (type and choices), read from the train command's parser."""
    from pylenet.cli import train_options
    return {name: a for name, a in train_options().items() if name not in NOT_SEARCHABLE}


def _option(name: str, where: str):
    """(canonical name, action) of a searchable option given as lr, batch_size or batch-size."""
    options = searchable_options()
    key = name.strip().lstrip("-").replace("-", "_")
    if key in options:
        return key, options[key]
    if key in NOT_SEARCHABLE:
        raise ValueError(f"{where}: {key} is not searchable: the sweep sets it for every trial"
                         + (" (--epochs)" if key == "epochs" else "")
                         + f"; searchable: {', '.join(options)}")
    raise ValueError(f"{where}: {name!r} is not an option of pylenet train; searchable: "
                     f"{', '.join(options)}")


def _value(name: str, action, value, where: str):
    """One value of option `name` (text, or a number from a Tune space), converted and checked
    as the train parser would."""
    convert = action.type or str
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            result = convert(value)
        elif convert is int:  # 64 or 64.0, not 64.5
            if not float(value).is_integer():
                raise ValueError
            result = int(value)
        else:
            result = convert(value) if convert is float else value
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number"}.get(convert, "a string")
        raise ValueError(f"{where}: {value!r} is not a valid {name} (it takes {kind})") from None
    if action.choices is not None and result not in action.choices:
        raise ValueError(f"{where}: {result!r} is not a valid {name} (choose from "
                         f"{', '.join(map(str, action.choices))})")
    return result


def parse_spec(name: str, spec: str):
    """(name, Tune search-space object) for NAME=SPEC's parts; ValueError naming what is wrong.

    SPEC: choice(a,b,...) samples one of the values, uniform(lo,hi) and loguniform(lo,hi) a
    number between lo and hi (an integer for integer options, both ends included), grid(a,b,...)
    tries every value (grid values multiply out, as in Ray Tune)."""
    from ray import tune
    where = f"--space {name}={spec}"
    key, action = _option(name, where)
    m = _SPEC.match(spec)
    if not m or m.group(1) not in SPEC_KINDS:
        raise ValueError(f"{where}: SPEC must be choice(a,b,...), uniform(lo,hi), "
                         f"loguniform(lo,hi) or grid(a,b,...)")
    kind, items = m.group(1), [v.strip() for v in m.group(2).split(",")]
    if not m.group(2).strip() or any(not v for v in items):
        raise ValueError(f"{where}: {kind}() needs values separated by commas, none empty")
    if kind in ("choice", "grid"):
        values = [_value(key, action, v, where) for v in items]
        if len(set(values)) < len(values):
            raise ValueError(f"{where}: a value is repeated")
        return key, tune.choice(values) if kind == "choice" else tune.grid_search(values)
    if action.choices is not None or action.type not in (int, float):
        raise ValueError(f"{where}: {key} takes one of {', '.join(map(str, action.choices or []))}"
                         f"; use choice(...) or grid(...)")
    if len(items) != 2:
        raise ValueError(f"{where}: {kind}(lo,hi) takes two numbers, got {len(items)}")
    lo, hi = (_value(key, action, v, where) for v in items)
    if not lo < hi:
        raise ValueError(f"{where}: lo must be below hi")
    if kind == "loguniform" and lo <= 0:
        raise ValueError(f"{where}: loguniform needs lo > 0")
    if action.type is int:
        return key, (tune.randint if kind == "uniform" else tune.lograndint)(lo, hi + 1)
    return key, (tune.uniform if kind == "uniform" else tune.loguniform)(lo, hi)


def parse_space(specs) -> dict:
    """{name: Tune object} from NAME=SPEC strings (the CLI's --space); ValueError when one is bad
    or none is given."""
    space = {}
    for item in specs or []:
        name, sep, spec = item.partition("=")
        if not sep:
            raise ValueError(f"--space {item}: expected NAME=SPEC, e.g. lr=loguniform(0.001,0.1)")
        key, value = parse_spec(name, spec)
        if key in space:
            raise ValueError(f"--space {item}: {key} is given twice")
        space[key] = value
    if not space:
        raise ValueError(f"give at least one --space NAME=SPEC to search (searchable: "
                         f"{', '.join(searchable_options())})")
    return space


def make_space(space) -> dict:
    """{name: Tune object} from pylenet.sweep's `space`: each value a SPEC string, or one of
    Ray Tune's own search-space objects (tune.choice, tune.loguniform, tune.grid_search, ...),
    used as it is. Names are train options (lr, batch_size, ...)."""
    from ray.tune.search.sample import Categorical, Domain
    if not isinstance(space, dict) or not space:
        raise ValueError("space must be a non-empty dict {option: SPEC or Tune search space}, "
                         f"got {space!r}; searchable: {', '.join(searchable_options())}")
    out = {}
    for name, spec in space.items():
        if not isinstance(name, str):
            raise TypeError(f"space: option names are strings, got {name!r}")
        if isinstance(spec, str):
            key, value = parse_spec(name, spec)
        elif isinstance(spec, Domain) or (isinstance(spec, dict) and set(spec) == {"grid_search"}):
            key, action = _option(name, f"space[{name!r}]")
            values = (spec.categories if isinstance(spec, Categorical)
                      else spec["grid_search"] if isinstance(spec, dict) else [])
            for v in values:
                _value(key, action, v, f"space[{name!r}]")
            value = spec
        else:
            raise TypeError(f"space[{name!r}]: expected a SPEC string such as 'choice(32,64)' or "
                            f"a Ray Tune search space (tune.choice, tune.loguniform, ...), got "
                            f"{type(spec).__name__}")
        if key in out:
            raise ValueError(f"space: {key} is given twice")
        out[key] = value
    return out


def _is_grid(value) -> bool:
    return isinstance(value, dict) and "grid_search" in value


def train_argv(options: dict) -> list[str]:
    """`pylenet train` flags for a trial's options ({"lr": 0.01, "batch_size": 64} ->
    ["--lr", "0.01", "--batch-size", "64"]); floats written so that they parse back exactly."""
    argv = []
    for name, value in options.items():
        if hasattr(value, "item"):  # numpy scalars from a search algorithm
            value = value.item()
        text = repr(value) if isinstance(value, float) else str(value)
        argv += [f"--{name.replace('_', '-')}", text]
    return argv


# --------------------------------------------------------------------------- in the trial

class _TuneReport(Callback):
    """Reports every epoch to Tune with an ordinary pylenet checkpoint attached."""

    def __init__(self, start_epoch: int):
        self.start_epoch = start_epoch  # epochs restored from a checkpoint (0: a fresh start)

    def on_epoch_end(self, epoch, logs):
        from ray import tune
        metrics = {"epoch": epoch, METRIC: logs.get("val_accuracy"), "loss": logs.get("val_loss"),
                   "train_loss": logs.get("loss"), "train_accuracy": logs.get("accuracy"),
                   "lr": logs.get("lr"), "diverged": 0, "start_epoch": self.start_epoch}
        with tempfile.TemporaryDirectory() as tmp:
            self.trainer.save(Path(tmp) / "model.ckpt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _trial(config: dict, *, data, setup: dict) -> None:
    """One trial (runs in a Ray worker): `pylenet train` with the sampled options, resumed from
    the trial's last checkpoint when Tune restarts it."""
    from ray import tune

    from pylenet.checkpoint import load_checkpoint
    from pylenet.cli import build_trainer, train_args
    from pylenet.train import TrainingDiverged
    args = train_args(train_argv({**setup["fixed"], **config}) + [
        "--epochs", str(setup["epochs"]), "--threads", str(setup["threads"]), "--no-progress"])
    train, test = data
    resumed, path = None, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            path = Path(folder) / "model.ckpt"
            resumed = load_checkpoint(path)
    reporter = _TuneReport(start_epoch=resumed.epoch if resumed is not None else 0)
    trainer = build_trainer(args, resumed=resumed, resume_path=path, progress=False,
                            device="cpu", callbacks=[reporter, *setup["callbacks"]])
    try:
        trainer.fit(train, epochs=args.epochs, validation=test)
    except TrainingDiverged:
        # A result, not a failure: retrying would diverge again. Accuracy 0 ranks it last.
        tune.report({"epoch": trainer.epoch + 1, METRIC: 0.0, "loss": float("nan"),
                     "diverged": 1, "start_epoch": reporter.start_epoch})


# --------------------------------------------------------------------------- on the driver

@dataclass
class SweepResult:
    """What a sweep leaves: one row per trial (as in results.csv), the best row, and the files."""
    rows: list
    best: dict | None
    out: Path
    wall_time_s: float
    interrupted: bool = False
    failures: list = field(default_factory=list)  # (trial, message, traceback file)

    @property
    def best_checkpoint(self) -> Path | None:
        """OUT/best/model.ckpt (the best trial's final weights), or None when no trial finished."""
        path = self.out / "best" / "model.ckpt"
        return path if self.best is not None and path.exists() else None


@dataclass
class _Failure:
    """A trial that failed for good: its attempts' errors (last lines) and the traceback file."""
    trial: str
    causes: list
    traceback: Path
    attempts: int

    def message(self) -> str:
        """One line: which trial, how often, and why (the same reason every time, or the last)."""
        same = len(set(self.causes)) == 1
        why = (f"every time with {self.causes[-1]}" if same and self.attempts > 1
               else f"the last time with {self.causes[-1]}")
        return f"trial {self.trial} failed {self.attempts} time(s), {why}; traceback in {self.traceback}"


def _cause(traceback_text: str) -> str:
    """The exception line of a traceback ("ValueError: ..."), else its last line."""
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Diverged|Interrupt)\b", line)),
                lines[-1] if lines else "unknown error")


def _number(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


class _Recorder:
    """Tune callback on the driver: rows, results.csv, best/model.ckpt, errors/ and the
    progress line, kept up to date as trials report and finish."""

    def __init__(self, out: Path, names: list, epochs: int, progress: bool):
        self.out, self.names, self.epochs, self.progress = out, names, epochs, progress
        self.rows, self.curves, self.failures = {}, {}, []
        self.best_accuracy, self.best_trial = -1.0, None
        self.start = time.perf_counter()
        self.tty = progress and bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.interrupted = lambda: False  # set by sweep(): whether Ctrl-C was pressed

    # Tune's hooks, called through _TuneCallback.
    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = result.get("epoch")
        if epoch is not None and result.get(METRIC) is not None and not result.get("diverged"):
            self.curves.setdefault(trial.trial_id, {})[int(epoch)] = float(result[METRIC])
        self._row(trial, "running")
        self._show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if last.get("diverged"):
            status = "diverged"
        elif int(last.get("epoch") or 0) >= self.epochs:
            status = "completed"
        else:  # ended early: by ASHA, or by Ctrl-C
            status = "interrupted" if self.interrupted() else "stopped"
        row = self._row(trial, status)
        if status in ("completed", "stopped") and row["final_accuracy"] is not None and row["final_accuracy"] > self.best_accuracy:
            self._keep_best(trial, row)
        self._write()
        self._show(trials, force=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._show(trials, force=True, note=f"trial {trial.trial_id} failed; restarting it "
                                            f"from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._row(trial, "error")
        (self.out / "errors").mkdir(exist_ok=True)
        target = self.out / "errors" / f"{trial.trial_id}.txt"
        text = ""
        if trial.error_file and Path(trial.error_file).exists():
            # Tune's record of every failure of the trial, each with its traceback.
            text = re.sub(r"\x1b\[[0-9;]*m", "", Path(trial.error_file).read_text(errors="replace"))
        target.write_text(text or "no traceback was recorded\n")
        causes = [_cause(part) for part in re.split(r"^Failure # \d+.*$", text, flags=re.M) if part.strip()]
        self.failures.append(_Failure(trial.trial_id, causes or ["unknown error"], target,
                                      trial.num_failures))
        self._write()
        self._show(trials, force=True)

    def _row(self, trial, status: str) -> dict:
        last = trial.last_result or {}
        curve = self.curves.get(trial.trial_id, {})
        row = {"trial": trial.trial_id}
        for name in self.names:
            row[name] = trial.config.get(name)
        final = last.get(METRIC) if not last.get("diverged") else None
        row.update(final_accuracy=_number(final), best_accuracy=max(curve.values()) if curve else None,
                   final_loss=_number(last.get("loss")), epochs=last.get("epoch", 0) or 0,
                   status=status, wall_time_s=round(float(last.get("time_total_s", 0.0)), 2),
                   restarts=trial.num_failures)
        self.rows[trial.trial_id] = row
        return row

    def _keep_best(self, trial, row) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        best = self.out / "best"
        best.mkdir(exist_ok=True)
        with checkpoint.as_directory() as folder:
            tmp = best / ".model.ckpt.tmp"
            shutil.copyfile(Path(folder) / "model.ckpt", tmp)
            os.replace(tmp, best / "model.ckpt")
        self.best_accuracy = row["final_accuracy"]
        self.best_trial = trial.trial_id

    def finished_rows(self) -> list:
        return [r for r in self.rows.values() if r["status"] != "running"]

    def _write(self) -> None:
        write_csv(self.out / "results.csv", self.finished_rows(), self.names)

    def _show(self, trials, force: bool = False, note: str | None = None) -> None:
        if not self.progress:
            return
        # Counted from the rows: Tune sets a trial's status after the hook that reports it.
        finished = {r["trial"] for r in self.finished_rows()}
        failed = sum(r["status"] == "error" for r in self.rows.values())
        running = sum(t.status == "RUNNING" and t.trial_id not in finished for t in trials)
        line = (f"sweep: {len(finished) - failed}/{len(trials)} done, {running} running, "
                f"{len(trials) - len(finished) - running} pending, {failed} failed")
        if self.best_accuracy >= 0:
            line += f"; best {100 * self.best_accuracy:.2f}% ({self.best_trial})"
        line += f"; {time.perf_counter() - self.start:.0f}s"
        if note:
            print(("\r\033[K" if self.tty else "") + note, file=sys.stderr, flush=True)
        if self.tty:
            print("\r\033[K" + line, end="", file=sys.stderr, flush=True)
        elif force:
            print(line, file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def write_csv(path: Path, rows: list, names: list) -> None:
    """results.csv: one row per trial (written to a temporary file, then renamed)."""
    columns = ["trial", *names, "final_accuracy", "best_accuracy", "final_loss", "epochs",
               "status", "wall_time_s", "restarts"]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    os.replace(tmp, path)


def _ranked(rows: list) -> list:
    """Rows with a final accuracy, best first (ties: fewer epochs, then trial name)."""
    scored = [r for r in rows if r["final_accuracy"] is not None and r["status"] != "diverged"]
    return sorted(scored, key=lambda r: (-r["final_accuracy"], r["epochs"], r["trial"]))


def top_table(rows: list, names: list, count: int = 5) -> str:
    """The top `count` trials as a text table."""
    ranked = _ranked(rows)[:count]
    header = ["rank", "trial", *names, "final", "best", "epochs", "status", "time"]
    body = []
    for i, r in enumerate(ranked, 1):
        body.append([str(i), r["trial"], *(_fmt(r[n]) for n in names),
                     f"{100 * r['final_accuracy']:.2f}%",
                     "" if r["best_accuracy"] is None else f"{100 * r['best_accuracy']:.2f}%",
                     str(r["epochs"]), r["status"], f"{r['wall_time_s']:.1f}s"])
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in [header, *body])


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def plot_sweep(path: Path, rows: list, curves: dict, names: list, log_names=()) -> bool:
    """OUT/sweep.png: final accuracy against each searched option, and every trial's accuracy
    curve. False (and a warning) when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, so no sweep.png was written "
              "(pip install 'pylenet[plot]')", file=sys.stderr)
        return False
    scored = _ranked(rows)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        xs = [r[name] for r in scored]
        ys = [100 * r["final_accuracy"] for r in scored]
        if xs and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, ys)
            if name in log_names:
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], ys)
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=name, ylabel="final test accuracy (%)")
        ax.grid(alpha=0.3)
    ax = axes[0][-1]
    for trial, curve in sorted(curves.items()):
        epochs = sorted(curve)
        ax.plot(epochs, [100 * curve[e] for e in epochs], "o-", ms=3, alpha=0.7)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{len(curves)} trials")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _log_scaled(space: dict) -> set:
    """The options searched on a log scale (loguniform, lograndint)."""
    from ray.tune.search.sample import LogUniform
    return {name for name, value in space.items()
            if isinstance(getattr(value, "get_sampler", lambda: None)(), LogUniform)}


def _searcher(search: str, space: dict, seed: int):
    """(search algorithm, space to hand Tune) for --search."""
    from ray.tune.search.basic_variant import BasicVariantGenerator
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "grid":
        from ray.tune.search.sample import Categorical, Domain
        grid = {}
        for name, value in space.items():
            if isinstance(value, Categorical):
                value = {"grid_search": list(value.categories)}
            elif isinstance(value, Domain):
                raise ValueError(f"--search grid tries every value, so {name} needs choice(...) or "
                                 f"grid(...), not a range")
            grid[name] = value
        return BasicVariantGenerator(random_state=seed), grid
    if search == "optuna":
        for name, value in space.items():
            if _is_grid(value):
                raise ValueError(f"--search optuna samples, so {name} needs choice(...) instead "
                                 f"of grid(...)")
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna
        except ImportError:
            raise ImportError(f"--search optuna needs Optuna; install it with: {RAY_EXTRA}") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study and trial
        return OptunaSearch(metric=METRIC, mode=MODE, seed=seed), space
    return BasicVariantGenerator(random_state=seed), space


def _scheduler(scheduler: str, epochs: int):
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler
    # Rungs at epochs 1, 2, 4, ...: at each, a trial below the best half of those that got
    # there stops (reduction factor 2 suits sweeps of a few epochs).
    return ASHAScheduler(time_attr="epoch", max_t=max(epochs, 1), grace_period=1, reduction_factor=2)


def _load(data, dataset: str, download: bool, progress: bool):
    """(train, test) tuples: data is a folder (or None: $PYLENET_DATA / the cache) or the pair."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, tuple) for d in data):
        return data
    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a folder or ((train images, labels), (test images, labels)), "
                        f"got {type(data).__name__}")
    from pylenet.data import load_dataset, missing_files
    if data is not None and not download:
        missing = [n for s in ("train", "test") for n in missing_files(dataset, s, data)]
        if missing:
            raise FileNotFoundError(f"data {data} lacks the {dataset} files {', '.join(missing)}")
    return tuple(load_dataset(dataset, s, data, progress=progress) for s in ("train", "test"))


def sweep(space, *, out, data=None, trials: int = 8, epochs: int = 3, search: str = "random",
          scheduler: str = "none", threads_per_trial: int = 1, address: str | None = None,
          limit: int | None = None, seed: int = 0, max_failures: int = 2, fixed: dict | None = None,
          callbacks=None, dataset: str = "mnist", download: bool = False,
          progress: bool = True) -> SweepResult:
    """Searches `pylenet train` options on Ray Tune; returns a SweepResult and writes into `out`:
    results.csv (one row per trial), best/model.ckpt (the best trial's final weights, a pylenet
    checkpoint) and sweep.png.

    space: {option: SPEC} with option a train option (lr, batch_size, momentum, weight_decay,
    optimizer, schedule, warmup, augment, activation, pooling, variant, seed, ...) and SPEC a
    string choice(a,b), uniform(lo,hi), loguniform(lo,hi), grid(a,b) or a Ray Tune search space
    object (tune.choice, tune.loguniform, tune.grid_search, ...), used as it is. trials: samples
    (per grid point). search: random (seeded by `seed`), grid (every choice() tried) or optuna.
    scheduler: none or asha (stops weak trials early). Each trial reserves threads_per_trial
    CPUs and runs that many core threads. address None starts a local Ray with this machine's
    CPUs; "auto" or HOST:PORT joins a running cluster. data: a folder, None (as pylenet train)
    or ((train images, labels), (test images, labels)); limit trains on the first N images.
    fixed: train options every trial gets ({"optimizer": "adam"}). callbacks: pylenet
    callbacks added to every trial's Trainer (picklable). A trial is retried from its last
    checkpoint up to max_failures times. Ctrl-C (from the main thread) stops the running
    trials and returns what finished, with interrupted=True.
    """
    require_ray()
    from ray import tune
    space = make_space(space)
    fixed = dict(fixed or {})
    for name, value in fixed.items():
        key, action = _option(name, f"fixed[{name!r}]")
        _value(key, action, value, f"fixed[{name!r}]")
    _check_int("trials", trials, 1)
    _check_int("epochs", epochs, 1)
    _check_int("threads_per_trial", threads_per_trial, 1)
    _check_int("max_failures", max_failures, 0)
    if limit is not None:
        _check_int("limit", limit, 1)
    search_alg, param_space = _searcher(search, space, seed)
    trial_scheduler = _scheduler(scheduler, epochs)
    from pylenet.callbacks import check_callbacks
    callbacks = check_callbacks(callbacks)
    out = Path(out)
    if (out / "results.csv").exists():
        raise FileExistsError(f"--out {out} already holds results.csv from an earlier sweep; "
                              f"choose another --out")
    train, test = _load(data, dataset, download, progress)
    if limit is not None:
        train = (train[0][:limit], train[1][:limit])
    out.mkdir(parents=True, exist_ok=True)
    names = list(space)
    recorder = _Recorder(out, names, epochs, progress)
    setup = {"fixed": fixed, "epochs": epochs, "threads": threads_per_trial, "callbacks": callbacks}
    start = time.perf_counter()
    # Ctrl-C stops the experiment through _CtrlC (Tune's own handler would too, but without
    # telling us); the finished trials are already on disk. Tune's own output is off (its new
    # output engine prints a banner even when told to be silent).
    with _environ(TUNE_DISABLE_SIGINT_HANDLER="1", RAY_AIR_NEW_OUTPUT="0"), \
            ray_session(address) as ray, _CtrlC() as ctrl_c:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if threads_per_trial > cpus:
            raise ValueError(f"--threads-per-trial {threads_per_trial} exceeds the {cpus} CPUs of "
                             f"the Ray cluster, so no trial could start")
        trainable = tune.with_resources(tune.with_parameters(_trial, data=(train, test), setup=setup),
                                        {"cpu": threads_per_trial})
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=trials,
                                        search_alg=search_alg, scheduler=trial_scheduler),
            run_config=tune.RunConfig(
                name="sweep", storage_path=str((out / "tune").resolve()), verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[_TuneCallback(recorder)], stop=ctrl_c.stopper()))
        recorder.interrupted = lambda: ctrl_c.pressed
        tuner.fit()
        interrupted = ctrl_c.pressed
    recorder.end_line()
    rows = recorder.finished_rows() if interrupted else list(recorder.rows.values())
    write_csv(out / "results.csv", rows, names)
    if not interrupted:
        plot_sweep(out / "sweep.png", rows, recorder.curves, names, _log_scaled(space))
    ranked = _ranked(rows)
    return SweepResult(rows=rows, best=ranked[0] if ranked else None, out=out,
                       wall_time_s=time.perf_counter() - start, interrupted=interrupted,
                       failures=recorder.failures)


def _TuneCallback(recorder):
    """recorder wrapped in a ray.tune.Callback subclass (defined here: Ray is imported lazily)."""
    from ray.tune import Callback as TuneCallback

    class Hooks(TuneCallback):
        def on_trial_result(self, *args, **kwargs):
            recorder.on_trial_result(*args, **kwargs)

        def on_trial_complete(self, *args, **kwargs):
            recorder.on_trial_complete(*args, **kwargs)

        def on_trial_recover(self, *args, **kwargs):
            recorder.on_trial_recover(*args, **kwargs)

        def on_trial_error(self, *args, **kwargs):
            recorder.on_trial_error(*args, **kwargs)
    return Hooks()


class _CtrlC:
    """While active (in the main thread), the first Ctrl-C only sets `pressed`, which stopper()
    hands to Tune as a request to end the experiment (its running trials are stopped, the
    finished ones kept); a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self):
        self.pressed, self.previous = False, None

    def __enter__(self) -> "_CtrlC":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None and signal.getsignal(signal.SIGINT) == self._handler:
            signal.signal(signal.SIGINT, self.previous)

    def _handler(self, signum, frame) -> None:
        self.pressed = True
        signal.signal(signal.SIGINT, self.previous)

    def stopper(self):
        """A ray.tune.Stopper that ends the whole experiment once Ctrl-C was pressed."""
        from ray.tune import Stopper
        ctrl_c = self

        class StopOnCtrlC(Stopper):
            def __call__(self, trial_id, result):
                return False

            def stop_all(self):
                return ctrl_c.pressed
        return StopOnCtrlC()


@contextlib.contextmanager
def _environ(**values):
    """Environment variables set for the duration of the block, then put back."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
