"""The `pylenet` command: train, evaluate, predict, export, serve, info, explain."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pylenet._version import __version__
from pylenet.callbacks import Callback
from pylenet.data import AUGMENTS, DATASETS
from pylenet.device import DEVICES
from pylenet.losses import LOSSES
from pylenet.models import ACTIVATIONS, POOLINGS, VARIANTS
from pylenet.recipe import (DEFAULT_RECIPE, OPTIMIZERS, RECIPES, SCHEDULES, get_recipe, make_loss,
                            make_optimizer, make_scheduler)
from pylenet.tta import TTAS

EPILOG = ("Data: --data DIR (a folder of MNIST-format IDX files, used as it is; --download fetches "
          "missing files into it), else $PYLENET_DATA (MNIST), else a per-user cache that is "
          "downloaded into.")


def _parser(R: dict = DEFAULT_RECIPE) -> argparse.ArgumentParser:
    """The command line; the train flags' defaults are recipe R's (main re-parses for --recipe)."""
    p = argparse.ArgumentParser(prog="pylenet", description="Train and use LeNet-5 on MNIST.",
                                epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"pylenet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train LeNet-5 on MNIST", epilog=EPILOG,
                       description="Train LeNet-5; writes model.ckpt, metrics.json and curves.png into --out.")
    _data_arguments(t)
    t.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="the defaults of the flags below: default (SGD lr 0.02, cosine, 10 epochs), "
                        "fast (3 epochs, lr 0.05, per-step warm-up + cosine), lecun98 (the default "
                        "at the 1998 network's rates) or record (1 epoch, Adam, per-step warm-up + "
                        "cosine, label smoothing, test-time shifts); flags given win. Without it: "
                        "the model's own (lecun98 for --variant lecun98, else default)")
    t.add_argument("--epochs", type=int, default=R["epochs"], help="total epochs (default %(default)s)")
    t.add_argument("--batch-size", type=int, default=R["batch_size"], help="default %(default)s")
    t.add_argument("--lr", type=float, help="learning rate (default: the recipe's, " + ", ".join(
        f"{v:g} for {k}" for k, v in R["lr"].items()) + "; lecun98: " + ", ".join(
        f"{v:g} for {k}" for k, v in RECIPES["lecun98"]["lr"].items()) + ")")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=R["optimizer"], help="default %(default)s")
    t.add_argument("--momentum", type=float, default=R["momentum"], help="SGD momentum (default %(default)s)")
    t.add_argument("--weight-decay", type=float, default=R["weight_decay"], help="default %(default)s")
    t.add_argument("--schedule", choices=SCHEDULES, default=R["schedule"],
                   help="learning-rate schedule over the epochs (default %(default)s; "
                        "warmup_cosine changes the rate every batch)")
    t.add_argument("--warmup", type=float, default=R["warmup"], metavar="EPOCHS",
                   help="linear warm-up epochs of warmup_cosine (default %(default)s)")
    t.add_argument("--augment", choices=list(AUGMENTS), default=R["augment"],
                   help="random distortions of every training image, new each epoch "
                        "(default %(default)s; see pylenet.data.AUGMENTS)")
    t.add_argument("--until-accuracy", type=float, metavar="ACC",
                   help="stop after the first epoch whose test accuracy reaches ACC (e.g. 0.99) "
                        "and report the wall time to it")
    t.add_argument("--early-stop", type=int, metavar="PATIENCE",
                   help="stop once the test accuracy has not improved for PATIENCE epochs in a row "
                        "(pylenet.callbacks.EarlyStopping; model.ckpt keeps the last epoch)")
    t.add_argument("--csv", metavar="FILE",
                   help="write one CSV row per epoch (its record) to FILE, each flushed as the "
                        "epoch ends (pylenet.callbacks.CSVLogger)")
    t.add_argument("--variant", choices=list(VARIANTS), default="modern",
                   help="modern (default; --activation, --pooling) or lecun98, the 1998 network "
                        "(scaled tanh, trainable subsampling, C3 table, RBF output)")
    t.add_argument("--activation", choices=list(ACTIVATIONS), help="modern variant (default relu)")
    t.add_argument("--pooling", choices=list(POOLINGS), help="modern variant (default max)")
    t.add_argument("--loss", choices=list(LOSSES),
                   help=f"default {R['loss']}, or rbf_map for --variant lecun98")
    t.add_argument("--label-smoothing", type=float, default=R["label_smoothing"], metavar="S",
                   help="cross-entropy against (1 - S) onehot + S / classes (default %(default)s)")
    t.add_argument("--tta", choices=list(TTAS), default=R["tta"],
                   help="test-time augmentation of the test-set evaluations: the class probabilities "
                        "averaged over pixel-shifted copies (default %(default)s; see pylenet.tta.TTAS)")
    _device_argument(t, "train")
    t.add_argument("--threads", type=int, help="core threads (default: all cores)")
    t.add_argument("--seed", type=int, default=R["seed"], help="weights and shuffling seed (default %(default)s)")
    t.add_argument("--limit", type=int, metavar="N", help="train on the first N images only")
    t.add_argument("--out", default="runs/lenet5", metavar="DIR", help="default runs/lenet5")
    t.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint written by train")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--workers", type=int, metavar="N",
                   help="data-parallel training on N Ray workers (pip install 'pylenet[ray]'): "
                        "each computes whole blocks of every batch; the weights equal plain "
                        "training's bit for bit (--threads: threads per worker, default 1)")
    t.add_argument("--address", metavar="ADDR",
                   help="with --workers: the Ray cluster to run on (auto, or HOST:PORT of "
                        "`ray start --head`); default: a local Ray with this machine's CPUs")

    e = sub.add_parser("evaluate", help="accuracy and confusion matrix on the MNIST test set",
                       epilog=EPILOG)
    e.add_argument("--model", required=True, metavar="CKPT")
    _data_arguments(e)
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--tta", choices=list(TTAS), default="none",
                   help="test-time augmentation (default none; see pylenet.tta.TTAS)")
    _device_argument(e, "evaluate")

    r = sub.add_parser("predict", help="classify PNG/JPEG images of digits")
    r.add_argument("--model", required=True, metavar="CKPT")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    _device_argument(r, "predict")

    x = sub.add_parser("export", help="write a checkpoint as ONNX and/or a PyTorch state_dict",
                       description="Export a checkpoint written by train. --onnx needs "
                                   "pip install 'pylenet[onnx]', --torch needs 'pylenet[torch]'.")
    x.add_argument("--model", required=True, metavar="CKPT")
    x.add_argument("--onnx", metavar="FILE", help="ONNX file to write (logits, dynamic batch axis)")
    x.add_argument("--preprocess", action="store_true",
                   help="ONNX input is raw uint8 digits (N, 28, 28): padding and normalisation "
                        "baked in (default: normalised float32 (N, 1, 32, 32))")
    x.add_argument("--torch", metavar="FILE", help="torch.save'd state_dict of pylenet.interop.to_torch")

    w = sub.add_parser("serve", help="web page and JSON API: draw a digit, see the prediction and feature maps",
                       description="Serve a drawing page and a JSON API (POST /api/predict, "
                                   "POST /api/features, POST /api/saliency, GET /api/model); needs "
                                   "pip install 'pylenet[serve]'.")
    w.add_argument("--model", required=True, metavar="CKPT")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")

    sub.add_parser("info", help="print the core's build information and the GPU it can use")

    xp = sub.add_parser("explain", help="why the network said 7: a figure of the saliency and feature maps",
                        description="Draw the digit, the gradient of the predicted class's score (and of "
                                    "the runner-up's) with respect to its pixels, and the feature maps; "
                                    "needs pip install 'pylenet[plot,images]'.")
    xp.add_argument("--model", required=True, metavar="CKPT")
    xp.add_argument("image", metavar="IMAGE", help="a PNG/JPEG of one digit, read as `pylenet predict` reads it")
    xp.add_argument("--out", default="explain.png", metavar="PNG", help="figure to write (default %(default)s)")
    _sweep_parser(sub)
    return p


def _sweep_parser(sub) -> None:
    """`pylenet sweep`: hyperparameter search on Ray Tune (pylenet/tuning.py)."""
    from pylenet.tuning import SCHEDULERS, SEARCHES
    s = sub.add_parser(
        "sweep", help="search train options on Ray Tune (pip install 'pylenet[ray]')",
        epilog=EPILOG,
        description="Runs many `pylenet train` trials on Ray Tune and writes OUT/results.csv "
                    "(one row per trial), OUT/best/model.ckpt (the best trial's weights) and "
                    "OUT/sweep.png. Example: pylenet sweep --out runs/sweep --trials 8 "
                    "--epochs 3 --space 'lr=loguniform(0.005,0.2)' --space 'batch_size=grid(32,64)'")
    _data_arguments(s)
    s.add_argument("--out", default="runs/sweep", metavar="DIR", help="default runs/sweep")
    s.add_argument("--space", action="append", default=[], metavar="NAME=SPEC",
                   help="an option of pylenet train to search (lr, batch_size, momentum, "
                        "weight_decay, optimizer, schedule, warmup, augment, activation, pooling, "
                        "variant, seed, ...) and its SPEC: choice(a,b,...), uniform(lo,hi), "
                        "loguniform(lo,hi) or grid(a,b,...); repeat for more options")
    s.add_argument("--trials", type=int, default=8, help="samples (per grid point; default 8)")
    s.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    s.add_argument("--search", choices=SEARCHES, default="random",
                   help="random (default; seeded by --seed), grid (every choice tried) or optuna")
    s.add_argument("--scheduler", choices=SCHEDULERS, default="none",
                   help="none (default) or asha: stop weak trials after 1, 2, 4, ... epochs")
    s.add_argument("--threads-per-trial", type=int, default=1, metavar="T",
                   help="CPUs each trial reserves and core threads it runs (default 1)")
    s.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to run on: auto or HOST:PORT of `ray start --head` "
                        "(default: a local Ray with this machine's CPUs)")
    s.add_argument("--limit", type=int, metavar="N", help="train on the first N images only")
    s.add_argument("--seed", type=int, default=0, help="seed of the search (default 0); the "
                                                       "trials' own seed is the train option seed")
    s.add_argument("--max-failures", type=int, default=2,
                   help="restarts of a failing trial from its last checkpoint (default 2)")
    s.add_argument("--no-progress", action="store_true", help="no progress line")


def train_options() -> dict:
    """`pylenet train`'s options: dest name (lr, batch_size, ...) -> its argparse action."""
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions if a.option_strings and a.dest != "help"}


def train_args(argv: list[str]) -> argparse.Namespace:
    """The arguments of `pylenet train ARGV` as main parses them (--recipe's defaults applied);
    ValueError with argparse's message, not an exit, when one is bad."""
    import contextlib
    import io
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = _parser().parse_args(["train", *argv])
            if args.recipe not in (None, "default"):
                args = _parser(RECIPES[args.recipe]).parse_args(["train", *argv])
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        raise ValueError(lines[-1].split("error: ", 1)[-1] if lines else f"bad train arguments {argv}") from None
    return args


def _device_argument(parser, verb: str) -> None:
    parser.add_argument("--device", choices=list(DEVICES), default="auto",
                        help=f"where to {verb}: auto (default: the GPU when pylenet was built with "
                             f"CUDA, one is present and it can run the model, else the CPU), cpu, "
                             f"or cuda (an error saying why when it cannot be used)")


def _model_device(asked: str, model) -> str:
    """The device to run `model` on: "cuda" asked for must work (errors saying why); "auto"
    falls back to the CPU, saying so on stderr, when the GPU cannot run this model."""
    from pylenet.device import describe_device, resolve_device
    from pylenet.gpu import gpu_net_for
    device = resolve_device(asked)
    if device == "cuda":
        try:
            gpu_net_for(model, (1, 32, 32))  # builds (and caches) the model's GPU network
        except (TypeError, ValueError) as e:
            if asked != "auto":
                raise
            print(f"note: running on the CPU: the GPU cannot run this model ({_one_line(str(e))})",
                  file=sys.stderr)
            device = "cpu"
    if device == "cuda" or asked == "cuda":
        print(f"device: {describe_device(device)}", file=sys.stderr)
    return device


def _data_arguments(parser) -> None:
    parser.add_argument("--data", metavar="DIR",
                        help="folder with the dataset's IDX files (.gz or not); nothing is "
                             "downloaded into it unless --download is given")
    parser.add_argument("--dataset", choices=list(DATASETS), default="mnist",
                        help="which MNIST-format dataset (default mnist)")
    parser.add_argument("--download", action="store_true",
                        help="download missing files (with checksums) into --data DIR")


def _load_splits(args, splits, progress):
    """The dataset's splits; a given --data folder lacking files is an error naming them all."""
    from pylenet.data import load_dataset, missing_files
    if args.data is not None and not args.download:
        missing = [n for split in splits for n in missing_files(args.dataset, split, args.data)]
        if missing:
            where = "" if Path(args.data).is_dir() else " (no such folder)"
            raise FileNotFoundError(
                f"--data {args.data}{where} lacks the {args.dataset} files {', '.join(missing)} "
                f"(or their uncompressed copies); pass the folder that holds them, add --download "
                f"to fetch them into it, or leave out --data to use the per-user cache")
    return [load_dataset(args.dataset, split, args.data, progress=progress) for split in splits]


def _check_checkpoint_arg(flag: str, path) -> None:
    """FileNotFoundError naming the flag when a checkpoint argument is not an existing file."""
    if path is not None and not Path(path).is_file():
        what = "no such file" if not Path(path).exists() else "not a file"
        raise FileNotFoundError(f"{flag} {path}: {what}; it takes a checkpoint written by "
                                f"`pylenet train` (e.g. runs/lenet5/model.ckpt)")


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p, returning the folders it created, deepest first."""
    created, p = [], path
    while not p.exists():
        created.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return created


def _remove_if_empty(created: list[Path]) -> None:
    for p in created:
        try:
            p.rmdir()
        except OSError:
            return


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _plot(history: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, so no plot was written "
              "(pip install 'pylenet[plot]')", file=sys.stderr)
        return False
    epochs = [r["epoch"] for r in history]
    nan = float("nan")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [nan if r["loss"] is None else r["loss"] for r in history], "o-", label="train")
    if all("val_loss" in r for r in history):
        ax1.plot(epochs, [r["val_loss"] for r in history], "o-", label="test")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.plot(epochs, [nan if r["accuracy"] is None else 100 * r["accuracy"] for r in history],
             "o-", label="train")
    if all("val_accuracy" in r for r in history):
        ax2.plot(epochs, [100 * r["val_accuracy"] for r in history], "o-", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def cmd_train(args) -> int:
    import pylenet
    from pylenet.checkpoint import load_checkpoint
    from pylenet.recipe import model_recipe
    from pylenet.train import _live_progress

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < (0 if name == "epochs" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be >= {0 if name == 'epochs' else 1}, "
                             f"got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.until_accuracy is not None and not 0.0 < args.until_accuracy <= 1.0:
        raise ValueError(f"--until-accuracy must be in (0, 1], got {args.until_accuracy}")
    if args.early_stop is not None and args.early_stop < 1:
        raise ValueError(f"--early-stop must be >= 1 (epochs without a better test accuracy "
                         f"before stopping), got {args.early_stop}")
    if args.csv is not None and Path(args.csv).is_dir():
        raise ValueError(f"--csv {args.csv} is a folder; give the path of a file to write")
    _check_checkpoint_arg("--resume", args.resume)
    if args.address is not None and args.workers is None:
        raise ValueError("--address goes with --workers N (the cluster the workers run on)")
    if args.workers is not None:
        _check_workers(args)
    from pylenet.device import resolve_device
    resolve_device(args.device)  # an unusable --device cuda fails before any data is read
    out = Path(args.out)
    ckpt_path = out / "model.ckpt"
    if ckpt_path.exists() and not (args.resume and Path(args.resume).resolve() == ckpt_path.resolve()):
        raise FileExistsError(f"--out {out} already holds model.ckpt from an earlier run, which this "
                              f"run would overwrite; continue it with --resume {ckpt_path}, or "
                              f"choose another --out")
    progress = not args.no_progress
    train, test = _load_splits(args, ("train", "test"), progress)
    if args.limit is not None:
        train = (train[0][:args.limit], train[1][:args.limit])

    resumed = load_checkpoint(args.resume) if args.resume else None
    until = _UntilAccuracy(args.until_accuracy) if args.until_accuracy is not None else None
    early = (pylenet.EarlyStopping("val_accuracy", patience=args.early_stop)
             if args.early_stop is not None else None)
    # Per-epoch lines go to stdout as each epoch ends (_EpochLines), so the trainer's own
    # per-epoch lines on stderr, which it writes when no bar can be redrawn, would repeat them:
    # it shows bars on a terminal only.
    callbacks = [_EpochLines()] + [cb for cb in (until, early) if cb is not None]
    if args.csv is not None:
        callbacks.append(pylenet.CSVLogger(args.csv))
    trainer = build_trainer(args, resumed=resumed, resume_path=args.resume,
                            progress=progress and _live_progress(), checkpoint=ckpt_path,
                            device="cpu" if args.workers is not None else None, callbacks=callbacks)
    model, device = trainer.model, trainer.device
    # --out is made only now that data and model are ready, and removed again if this run
    # made it and could not write into it.
    created = _make_dirs(out)
    try:
        if resumed is not None:
            print(f"resuming from {args.resume} at epoch {trainer.epoch}", file=sys.stderr)
        else:
            trainer.save()  # so that an interrupted first epoch still leaves a loadable model
    except BaseException:
        _remove_if_empty(created)
        raise
    print(f"training {model!r} on {len(train[0])} images for {args.epochs} epochs; "
          f"writing {out}/", file=sys.stderr)
    start = time.perf_counter()
    if until is not None:
        until.start = start
    try:
        if args.workers is not None:  # data-parallel on Ray workers (pylenet.distributed)
            from pylenet.distributed import train_on_workers
            train_on_workers(trainer, train, epochs=args.epochs, validation=test,
                             workers=args.workers, address=args.address, threads=args.threads)
        else:
            trainer.fit(train, epochs=args.epochs, validation=test)
        history = trainer.history
    except KeyboardInterrupt:
        data = f" --data {args.data}" if args.data else ""
        data += f" --dataset {args.dataset}" if args.dataset != "mnist" else ""
        limit = f" --limit {args.limit}" if args.limit else ""
        print(f"\ninterrupted: {ckpt_path} holds epoch {trainer.epoch} (continue with: pylenet "
              f"train --resume {ckpt_path} --epochs {args.epochs} --out {out}{data}{limit})",
              file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    result = pylenet.evaluate(model, test, device=device, tta=args.tta)
    metrics = {"model": model.config, "epochs": trainer.epoch, "history": history.records,
               "test_accuracy": result["accuracy"], "test_loss": result["loss"],
               "confusion": result["confusion"].tolist(), "wall_time_s": wall,
               "threads": pylenet.ops.get_num_threads(), "train_images": len(train[0]),
               "recipe": args.recipe or model_recipe(model), "augment": args.augment, "device": device,
               "label_smoothing": args.label_smoothing, "tta": args.tta}
    if args.workers is not None:
        metrics["workers"] = args.workers  # data-parallel; "threads" is then per worker
        metrics["threads"] = args.threads or 1
    reached = until.reached if until is not None else None
    if until is not None:
        metrics["until_accuracy"] = {"target": args.until_accuracy,
                                     "epoch": reached[0] if reached else None,
                                     "wall_time_s": reached[1] if reached else None}
    if early is not None:
        metrics["early_stop"] = {"patience": args.early_stop, "stopped_epoch": early.stopped_epoch,
                                 "best_epoch": early.best_epoch, "best_val_accuracy": early.best}
    _write_json(out / "metrics.json", metrics)
    plotted = _plot(history.records, out / "curves.png")
    # The epochs' lines were printed as they ended; what follows sums the run up.
    if until is not None:
        target = f"{100 * args.until_accuracy:.2f}%"
        print(f"reached {target} test accuracy at epoch {reached[0]}, {reached[1]:.1f}s after the "
              f"start of training" if reached else
              f"did not reach {target} test accuracy in {trainer.epoch} epochs")
    if early is not None and early.stopped_epoch is not None:
        print(f"stopped early after epoch {early.stopped_epoch}: the best test accuracy, "
              f"{100 * early.best:.2f}% at epoch {early.best_epoch}, was not bettered in "
              f"{args.early_stop} epoch{'s' if args.early_stop > 1 else ''}")
    print(f"test accuracy {100 * result['accuracy']:.2f}% after {trainer.epoch} epochs "
          f"({wall:.1f}s); wrote {ckpt_path}, {out / 'metrics.json'}"
          + (f", {out / 'curves.png'}" if plotted else ""))
    return 0


def _epoch_line(r: dict) -> str:
    """`pylenet train`'s line for one finished epoch."""
    loss = "n/a" if r["loss"] is None else f"{r['loss']:.4f}"
    acc = "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
    return (f"epoch {r['epoch']:3d}  loss {loss}  train acc {acc}  "
            f"test acc {100 * r.get('val_accuracy', float('nan')):.2f}%  {r['time']:.1f}s")


class _EpochLines(Callback):
    """Prints each finished epoch's line on stdout and flushes it, whatever stdout is (a
    terminal, a pipe, a file), so that a log keeps every finished epoch of a killed run."""

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        print(_epoch_line(logs), flush=True)


class _UntilAccuracy(Callback):
    """--until-accuracy: stops after the first epoch whose test accuracy reaches the target;
    reached is then (that epoch, seconds from `start`, the start of training)."""

    def __init__(self, target: float):
        self.target, self.start, self.reached = target, time.perf_counter(), None

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        if logs["val_accuracy"] >= self.target:
            self.reached = (epoch, time.perf_counter() - self.start)
            return True
        return False


def build_trainer(args, *, resumed=None, resume_path=None, progress: bool = True, checkpoint=None,
                  device: str | None = None, callbacks=None):
    """The Trainer (model, optimizer, schedule) that `pylenet train` runs for its parsed args;
    sweep trials and data-parallel workers build theirs with it too. resumed: a loaded
    checkpoint to continue (its optimizer type, seed and batch size win, as for --resume).
    device None: args.device, resolved for the model."""
    import pylenet
    from pylenet.serialize import model_from_checkpoint
    if resumed is not None:
        model = model_from_checkpoint(resumed, resume_path)
        opt_type = (resumed.optimizer or {}).get("config", {}).get("type", args.optimizer)
        args.optimizer = opt_type
        args.seed = int(resumed.extra.get("seed", args.seed))
        args.batch_size = int(resumed.extra.get("batch_size", args.batch_size))
    else:
        model = pylenet.LeNet5(variant=args.variant, activation=args.activation,
                               pooling=args.pooling, seed=args.seed)
    recipe = get_recipe(args.recipe, model)  # --recipe, else the model's own (fit's rule too)
    optimizer = make_optimizer(model.parameters(), args.optimizer, lr=args.lr,
                               momentum=args.momentum, weight_decay=args.weight_decay,
                               recipe=recipe)
    scheduler = make_scheduler(optimizer, args.epochs, args.schedule, warmup=args.warmup)
    device = _model_device(args.device, model) if device is None else device
    from pylenet.train import default_loss
    loss = make_loss(args.loss or default_loss(model), label_smoothing=args.label_smoothing)
    trainer = pylenet.Trainer(model, optimizer, loss=loss, scheduler=scheduler,
                              batch_size=args.batch_size, seed=args.seed, threads=args.threads,
                              progress=progress, checkpoint=checkpoint, augment=args.augment,
                              device=device, callbacks=callbacks, tta=args.tta)
    if resumed is not None:
        trainer.restore(resumed, resume_path)
    return trainer


def _check_workers(args) -> None:
    """--workers' own errors, before any data is read."""
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.until_accuracy is not None:
        raise ValueError("--until-accuracy is not available with --workers (it stops one "
                         "process's training; drop one of them)")
    if args.device == "cuda":
        raise ValueError("--workers trains on the workers' CPUs; --device cuda cannot be combined with it")
    from pylenet.cluster import check_address, require_ray, require_torch
    require_ray()
    require_torch()
    check_address(args.address)


def cmd_sweep(args) -> int:
    from pylenet.cluster import check_address, require_ray
    from pylenet.tuning import _scheduler, _searcher, parse_space, sweep, top_table
    require_ray()
    space = parse_space(args.space)  # spec errors before anything starts
    _searcher(args.search, space, args.seed)
    _scheduler(args.scheduler, args.epochs)
    for name in ("trials", "epochs", "threads_per_trial"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.max_failures < 0:
        raise ValueError(f"--max-failures must be >= 0, got {args.max_failures}")
    check_address(args.address)
    out = Path(args.out)
    if (out / "results.csv").exists():
        raise FileExistsError(f"--out {out} already holds results.csv from an earlier sweep; "
                              f"choose another --out")
    progress = not args.no_progress
    data = tuple(_load_splits(args, ("train", "test"), progress))
    print(f"sweep: {args.trials} trial(s) x {args.epochs} epoch(s) of {', '.join(space)}, "
          f"search {args.search}, scheduler {args.scheduler}; writing {out}/", file=sys.stderr)
    result = sweep(space, out=out, data=data, trials=args.trials, epochs=args.epochs,
                   search=args.search, scheduler=args.scheduler,
                   threads_per_trial=args.threads_per_trial, address=args.address,
                   limit=args.limit, seed=args.seed, max_failures=args.max_failures,
                   progress=progress)
    names = list(space)
    if result.interrupted:
        stopped = sum(r["status"] == "interrupted" for r in result.rows)
        print(f"\ninterrupted: {out / 'results.csv'} holds the {len(result.rows) - stopped} "
              f"finished trial(s)" + (f" and {stopped} interrupted one(s)" if stopped else ""),
              file=sys.stderr)
    if result.best is not None:
        print(top_table(result.rows, names))
    for failure in result.failures:
        print(f"pylenet: error: {_one_line(failure.message())}", file=sys.stderr)
    if result.best is None:
        if not result.interrupted and not result.failures:
            print("pylenet: error: no trial finished with an accuracy", file=sys.stderr)
        return 130 if result.interrupted else 1
    best = result.best
    options = " ".join(f"--{n.replace('_', '-')} {best[n]}" for n in names)
    print(f"best: trial {best['trial']}, test accuracy {100 * best['final_accuracy']:.2f}% after "
          f"{best['epochs']} epochs ({options}); {len(result.rows)} trials in "
          f"{result.wall_time_s:.0f}s; wrote {out / 'results.csv'}, {result.best_checkpoint}"
          + (f", {out / 'sweep.png'}" if (out / "sweep.png").exists() else ""))
    return 130 if result.interrupted else 1 if result.failures else 0


def _confusion_table(confusion) -> str:
    n = len(confusion)
    width = max(5, len(str(int(confusion.max()))) + 1)
    lines = ["true\\pred" + "".join(f"{j:>{width}}" for j in range(n))]
    for i in range(n):
        lines.append(f"{i:>9}" + "".join(f"{int(v):>{width}}" for v in confusion[i]))
    return "\n".join(lines)


def cmd_evaluate(args) -> int:
    import pylenet
    pylenet.resolve_device(args.device)  # an unusable --device cuda fails before any data is read
    model = pylenet.load_model(args.model)
    device = _model_device(args.device, model)
    (data,) = _load_splits(args, (args.split,), progress=True)
    result = pylenet.evaluate(model, data, device=device, tta=args.tta)
    if args.json:
        print(json.dumps({"accuracy": result["accuracy"], "loss": result["loss"],
                          "confusion": result["confusion"].tolist()}))
    else:
        print(f"{args.split} accuracy {100 * result['accuracy']:.2f}%  "
              f"loss {result['loss']:.4f}  ({len(data[0])} images)")
        print(_confusion_table(result["confusion"]))
    return 0


def cmd_predict(args) -> int:
    import pylenet
    from pylenet.images import load_image
    pylenet.resolve_device(args.device)  # an unusable --device cuda fails before the model is read
    model = pylenet.load_model(args.model)
    device = _model_device(args.device, model)
    failed = 0
    for path in args.images:
        try:
            labels, probs = pylenet.predict(model, load_image(path), device=device)
        except (ValueError, OSError) as e:
            print(f"pylenet: error: {e}", file=sys.stderr)
            failed += 1
            continue
        label = int(labels[0])
        print(f"{path}: {label} (probability {probs[0, label]:.3f})")
    return 1 if failed else 0


def cmd_serve(args) -> int:
    from pylenet.serve import serve
    serve(args.model, host=args.host, port=args.port)
    return 0


def cmd_explain(args) -> int:
    import numpy as np

    import pylenet
    from pylenet.explain import _pyplot, digit_scores, figure
    from pylenet.images import load_image
    plt = _pyplot()                  # a missing plot extra fails before anything is read
    digit = load_image(args.image)   # ImportError naming the images extra without Pillow
    model = pylenet.load_model(args.model)
    first, second = (int(c) for c in np.argsort(-digit_scores(model, digit), kind="stable")[:2])
    fig = figure(model, digit)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)   # only left behind by a failed write
    print(f"{args.image}: {first} (runner-up {second}); wrote {out}")
    return 0


def cmd_export(args) -> int:
    import io

    import pylenet
    from pylenet.export import _onnx, write_atomic
    from pylenet.interop import _torch
    if not (args.onnx or args.torch):
        raise ValueError("export: give --onnx FILE and/or --torch FILE")
    if args.preprocess and not args.onnx:
        raise ValueError("export: --preprocess shapes the ONNX input, so it needs --onnx FILE")
    outputs = [Path(p).resolve() for p in (args.onnx, args.torch) if p]
    if Path(args.model).resolve() in outputs or len(set(outputs)) < len(outputs):
        raise ValueError("export: --model, --onnx and --torch must be three different files "
                         "(an export never overwrites its own checkpoint)")
    torch = _torch() if args.torch else None  # a missing extra fails before anything is written
    if args.onnx:
        _onnx()
    model = pylenet.LeNet5.load(args.model)
    if args.onnx:
        path = pylenet.export_onnx(model, args.onnx, preprocess=args.preprocess)
        kind = "uint8 pixels (N, 28, 28)" if args.preprocess else "normalised float32 (N, 1, 32, 32)"
        print(f"wrote {path}: {model!r}, input {kind}, output logits (N, {model.config['num_classes']})")
    if args.torch:
        buf = io.BytesIO()
        torch.save(pylenet.interop.to_torch(model).state_dict(), buf)
        write_atomic(Path(args.torch), buf.getvalue(), what="PyTorch state_dict")
        print(f"wrote {args.torch}: state_dict of pylenet.interop.to_torch({model!r})")
    return 0


def cmd_info(args) -> int:
    import pylenet
    for key, value in pylenet.ops.build_info().items():
        if not key.startswith("cuda"):  # the CUDA lines below say it for people
            print(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    for key, value in _cuda_lines(pylenet.cuda_info()):
        print(f"{key}: {value}")
    return 0


def _cuda_lines(info: dict) -> list[tuple[str, str]]:
    """`pylenet info`'s CUDA lines: what was compiled in, and the GPU used or why there is none."""
    from pylenet.device import BUILD_WITH_CUDA, NOT_COMPILED
    if not info["compiled"]:
        return [("cuda", f"no ({NOT_COMPILED}; to build it with CUDA: {BUILD_WITH_CUDA})"),
                ("cuda_device", f"none ({NOT_COMPILED})")] + _emulated_line(info)
    archs = ", ".join(info["archs"]) or "?"
    lines = [("cuda", f"yes, CUDA runtime {info['runtime_version']}, compiled for {archs}")]
    if info["usable"]:
        memory = f", {info['total_memory'] / 2**30:.1f} GiB" if info.get("total_memory") else ""
        driver = f", driver CUDA {info['driver_version']}" if info.get("driver_version") else ""
        lines.append(("cuda_device", f"{info['name']}, compute capability {info['capability']}"
                                     f"{memory}{driver}"))
    else:
        lines.append(("cuda_device", f"none ({info['reason']})"))
    return lines + _emulated_line(info)


def _emulated_line(info: dict) -> list[tuple[str, str]]:
    from pylenet.device import EMULATE_ENV
    if not info.get("emulated"):
        return []
    return [("cuda_emulated", f"yes ({EMULATE_ENV}=1: device cuda runs emulated on the host, a "
                              f"testing aid)")]


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as the command's one-line warnings on stderr."""
    print(f"pylenet: warning: {_one_line(str(message))}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pylenet` command; returns the exit code."""
    import warnings
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "recipe", None) not in (None, "default"):  # its defaults, the given flags kept
        args = _parser(RECIPES[args.recipe]).parse_args(argv)
    try:
        _check_checkpoint_arg("--model", getattr(args, "model", None))
    except FileNotFoundError as e:
        print(f"pylenet: error: {e}", file=sys.stderr)
        return 1
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "export": cmd_export, "serve": cmd_serve, "info": cmd_info, "explain": cmd_explain,
                "sweep": cmd_sweep}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ImportError, ArithmeticError) as e:
        # CheckpointError, DownloadError, TrainingDiverged and FileNotFoundError land here.
        print(f"pylenet: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line, with the type to report it by
        print(f"pylenet: error: {type(e).__name__}: {_one_line(str(e))}", file=sys.stderr)
        return 1


def _one_line(message: str) -> str:
    """Multi-line messages (a download error lists its mirrors) joined into one line."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
