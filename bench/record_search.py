"""The search and ablation behind the one-epoch record recipe (pylenet.recipe.RECORD_RECIPE).

Every variant is the record recipe with some ingredients changed, trained for ONE epoch from
LeNet5(seed=S) and shuffled with seed S. Selection uses validation folds carved from the
60,000 training images: fold k validates on images [55,000 - 5,000 k, 60,000 - 5,000 k) and
trains on the other 55,000 (fold 0: the last 5,000). --test trains on all 60,000 and
evaluates on the 10,000 test images: the check, made after the choice.

Variants the library runs (optimizer, rates, schedule, label smoothing, batch size) go through
pylenet.fit(recipe=...); the others (an EMA of the weights, Lookahead, a class-balanced order,
linear decay, a batch size that changes within the epoch) through this script's own loop,
which is checked first to reproduce fit() bit for bit on the plain recipe. Every run is also
evaluated with test-time augmentation (pylenet.tta: "vshift" and "shift4", which cost no
training), so the TTA columns come from the same models.

One CSV row per run is appended to --csv (default bench/results/record_search.csv); runs
already there (same variant, config, split, seed, SIMD level) are skipped, so an interrupted search
resumes. --summary prints the tables from the CSV alone.

Usage:
  python bench/record_search.py [--folds 0,1] [--seeds 0-4] [--variants "A;B"] [--threads 1]
  python bench/record_search.py --test [--seeds 0-4]
  python bench/record_search.py --summary
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLD_SIZE = 5000

# The search: name -> changes to the first round's base, which is the record recipe with label
# smoothing 0.1 (the first round chose 0.2). Keys of RECORD_RECIPE change it; "ema",
# "lookahead", "order", "decay" and "batches" are ingredients of this script's loop (see
# train_explicit); TTA is a column of every run.
ROUND1 = {"label_smoothing": 0.1}
SEARCH = {name: {**ROUND1, **changes} for name, changes in {
    "round-1 base (label smoothing 0.1)": {},
    "no label smoothing": {"label_smoothing": 0.0},
    "no warm-up": {"warmup": 0.0},
    "constant rate (no schedule)": {"schedule": "none"},
    "Adam's usual rate 1e-3": {"lr": 0.001},
    "SGD (the fast recipe's) instead of Adam": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                                 "weight_decay": 5e-4},
    "lr 0.006": {"lr": 0.006},
    "lr 0.009": {"lr": 0.009},
    "lr 0.015": {"lr": 0.015},
    "lr 0.02": {"lr": 0.02},
    "warm-up 0.1": {"warmup": 0.1},
    "warm-up 0.3": {"warmup": 0.3},
    "label smoothing 0.05": {"label_smoothing": 0.05},
    "label smoothing 0.2": {"label_smoothing": 0.2},
    "batch 32": {"batch_size": 32},
    "batch 32, lr 0.006": {"batch_size": 32, "lr": 0.006},
    "batch 128": {"batch_size": 128},
    "batch 128, lr 0.017": {"batch_size": 128, "lr": 0.017},
    "betas (0.9, 0.99)": {"betas": (0.9, 0.99)},
    "betas (0.7, 0.9)": {"betas": (0.7, 0.9)},
    "weight decay 1e-4": {"weight_decay": 1e-4},
    "+ EMA 0.98": {"ema": 0.98},
    "+ EMA 0.995": {"ema": 0.995},
    "+ Lookahead (k 5, alpha 0.5)": {"lookahead": (5, 0.5)},
    "+ class-balanced order": {"order": "balanced"},
    "linear decay": {"decay": "linear"},
    "batch 32 then 64 (first quarter at 32)": {"batches": ((0.25, 32), (1.0, 64))},
    "batch 64 then 128 (second half at 128)": {"batches": ((0.5, 64), (1.0, 128))},
    "+ distortions: shifts of up to 1 pixel": {"augment": {"shift": 1.0}},
    "+ distortions: affine": {"augment": "affine"},
    # the second round: the best of the first, combined (with fold 2 added)
    "label smoothing 0.2, warm-up 0.3": {"label_smoothing": 0.2, "warmup": 0.3},
    "label smoothing 0.3": {"label_smoothing": 0.3},
    "batch 32, lr 0.006, label smoothing 0.2": {"batch_size": 32, "lr": 0.006, "label_smoothing": 0.2},
    "batch 32, lr 0.006, label smoothing 0.2, warm-up 0.3": {"batch_size": 32, "lr": 0.006,
                                                              "label_smoothing": 0.2, "warmup": 0.3},
    "label smoothing 0.2, class-balanced order": {"label_smoothing": 0.2, "order": "balanced"},
    "batch 32, lr 0.006, label smoothing 0.2, class-balanced order": {
        "batch_size": 32, "lr": 0.006, "label_smoothing": 0.2, "order": "balanced"},
}.items()}
# The ablation: the chosen recipe (RECORD_RECIPE) and the recipe minus each ingredient (its
# TTA: the plain accuracy column).
ABLATION = {
    "record": {},
    "record without label smoothing": {"label_smoothing": 0.0},
    "record without warm-up": {"warmup": 0.0},
    "record at a constant rate (no schedule)": {"schedule": "none"},
    "record at Adam's usual rate 1e-3": {"lr": 0.001},
    "record with SGD (the fast recipe's) instead of Adam": {"optimizer": "sgd", "lr": 0.05,
                                                             "momentum": 0.9, "weight_decay": 5e-4},
}
VARIANTS = {**SEARCH, **ABLATION}
EXTRAS = ("ema", "lookahead", "order", "decay", "batches")
TTA_COLUMNS = ("vshift", "shift4")  # accuracies with these pylenet.tta.TTAS views
FIELDS = ("variant", "split", "seed", "train_images", "accuracy", *(f"acc_{t}" for t in TTA_COLUMNS),
          "train_s", "simd", "threads", "config")


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,2,5' -> [0, 1, 2, 3, 4] / [0, 2, 5]."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def make_config(changes: dict) -> dict:
    """The full settings of a variant: RECORD_RECIPE with `changes` (lr: the optimizer's rate)."""
    from pylenet.recipe import RECORD_RECIPE
    cfg = {k: v for k, v in RECORD_RECIPE.items()}
    for key, value in changes.items():
        if key == "lr":
            continue
        if key not in cfg and key not in EXTRAS:
            raise ValueError(f"variant changes unknown setting {key!r}")
        cfg[key] = value
    cfg["lr"] = {**RECORD_RECIPE["lr"], cfg["optimizer"]: changes.get("lr", RECORD_RECIPE["lr"][cfg["optimizer"]])}
    cfg["betas"] = tuple(cfg["betas"])
    return cfg


def config_key(cfg: dict) -> str:
    """A stable JSON of the settings that decide the result (the CSV's config column)."""
    skip = {"seed", "epochs", "tta"}
    return json.dumps({k: cfg[k] for k in sorted(cfg) if k not in skip}, sort_keys=True, default=list)


def recipe_of(cfg: dict) -> dict:
    """The library recipe part of a config (without this script's extras)."""
    return {k: v for k, v in cfg.items() if k not in EXTRAS}


def train_fit(cfg: dict, seed: int, train) -> tuple:
    """(model, seconds): one epoch through pylenet.fit with the config's recipe."""
    import pylenet
    model = pylenet.LeNet5(seed=seed)
    start = time.perf_counter()
    pylenet.fit(model, train, epochs=1, recipe=recipe_of(cfg), seed=seed, progress=False)
    return model, time.perf_counter() - start


def _order(cfg: dict, seed: int, labels):
    """The epoch's sample order: fit's (default_rng([seed, 0]).permutation(n)), or with
    order "balanced" the same samples re-spaced so that every class is spread evenly."""
    import numpy as np
    n = len(labels)
    order = np.random.default_rng([seed, 0]).permutation(n)
    if cfg.get("order") == "balanced":
        ys = labels[order]
        position = np.empty(n)
        for c in np.unique(ys):
            members = np.flatnonzero(ys == c)
            offset = np.random.default_rng([seed, 1, int(c)]).random()
            position[members] = (np.arange(len(members)) + offset) / len(members)
        order = order[np.argsort(position, kind="stable")]
    return order


def _batch_sizes(cfg: dict, n: int) -> list[int]:
    """The batch sizes of the epoch: cfg batch_size throughout, or "batches" ((fraction, size), ...)
    (each size until that fraction of the epoch's images is used)."""
    if not cfg.get("batches"):
        b = cfg["batch_size"]
        return [min(b, n - s) for s in range(0, n, b)]
    sizes, used = [], 0
    for fraction, b in cfg["batches"]:
        end = n if fraction >= 1.0 else min(n, int(round(fraction * n)))
        while used < end:
            sizes.append(min(b, end - used))
            used += sizes[-1]
    return sizes


def train_explicit(cfg: dict, seed: int, train) -> tuple:
    """(model, seconds): the epoch written out from the library's parts, with this script's
    extras. Without extras it is fit()'s epoch step for step (check_explicit_matches_fit)."""
    import numpy as np
    import pylenet
    from pylenet.data import pad_and_normalize
    from pylenet.engine import cpu_net_for
    from pylenet.recipe import make_loss, make_optimizer, make_scheduler
    images, labels = train
    labels = labels.astype(np.int64)
    n = len(images)
    model = pylenet.LeNet5(seed=seed)
    params = model.parameters()
    optimizer = make_optimizer(params, recipe=recipe_of(cfg))
    scheduler = make_scheduler(optimizer, 1, recipe=recipe_of(cfg))
    smoothing = make_loss("cross_entropy", recipe=recipe_of(cfg)).label_smoothing
    order = _order(cfg, seed, labels)
    sizes = _batch_sizes(cfg, n)
    fixed = not cfg.get("batches")
    peak, warmup = cfg["lr"][cfg["optimizer"]], cfg["warmup"]
    ema = [p.data.astype(np.float32).copy() for p in params] if cfg.get("ema") else None
    slow = [p.data.copy() for p in params] if cfg.get("lookahead") else None
    start, used = time.perf_counter(), 0
    for i, b in enumerate(sizes):
        # the fractional epoch at which the step starts: fit's i / batches for a fixed batch size
        t = i / len(sizes) if fixed else used / n
        if cfg.get("decay") == "linear":  # the warm-up of WarmupCosineLR, then a straight line to 0
            optimizer.lr = (peak * (0.1 + 0.9 * t / warmup) if t < warmup
                            else peak * (1.0 - (t - warmup) / (1.0 - warmup)))
        elif scheduler is not None and hasattr(scheduler, "step_batch"):
            scheduler.step_batch(t)
        idx = order[used:used + b]
        used += b
        x = pad_and_normalize(images[idx], pad=2)
        cpu_net_for(model, x.shape[1:]).train_step(x, labels[idx], "cross_entropy", smoothing=smoothing)
        optimizer.step()
        if slow is not None and (i + 1) % cfg["lookahead"][0] == 0:
            alpha = cfg["lookahead"][1]
            for s, p in zip(slow, params):
                s += alpha * (p.data - s)
                p.data[...] = s
        if ema is not None:  # the usual warm-up of the decay: (1 + t) / (10 + t) early on
            d = min(cfg["ema"], (1.0 + i) / (10.0 + i))
            for e, p in zip(ema, params):
                e *= d
                e += (1.0 - d) * p.data
    if ema is not None:
        for e, p in zip(ema, params):
            p.data[...] = e
    return model, time.perf_counter() - start


def check_explicit_matches_fit(train) -> None:
    """The script's loop without extras gives fit()'s weights bit for bit (on 3,000 images)."""
    import numpy as np
    small = (train[0][:3000], train[1][:3000])
    cfg = make_config({})
    a, _ = train_fit(cfg, 0, small)
    b, _ = train_explicit(cfg, 0, small)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        if not np.array_equal(p.data, q.data):
            raise SystemExit(f"record_search: the script's loop differs from fit() in {name}")
    print("check: the script's loop reproduces fit() bit for bit", flush=True)


def accuracies(model, evalset) -> dict:
    """Accuracy without and with each TTA of TTA_COLUMNS."""
    import pylenet
    out = {"accuracy": pylenet.evaluate(model, evalset)["accuracy"]}
    for name in TTA_COLUMNS:
        out[f"acc_{name}"] = pylenet.evaluate(model, evalset, tta=name)["accuracy"]
    return out


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def summarize(rows: list[dict], names: list[str]) -> None:
    """Per variant and split: mean and min over seeds of the accuracy, plain and with TTA (the
    AVX-512 runs; simd_table has the others)."""
    import numpy as np
    from collections import defaultdict
    rows = [r for r in rows if r["simd"] == "avx512"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["variant"], r["split"])].append(r)
    splits = sorted({r["split"] for r in rows}, key=lambda s: (s == "test", s))
    header = "| variant | " + " | ".join(
        f"{s}: mean / min (seeds) | {s} +vshift" for s in splits) + " |"
    print(header)
    print("|" + " --- |" * (1 + 2 * len(splits)))
    order = names + sorted({r["variant"] for r in rows} - set(names))
    for name in order:
        cells = []
        for s in splits:
            g = groups.get((name, s), [])
            if not g:
                cells += ["", ""]
                continue
            acc = np.array([float(r["accuracy"]) for r in g]) * 100
            tta = np.array([float(r["acc_vshift"]) for r in g]) * 100
            cells.append(f"{acc.mean():.2f} / {acc.min():.2f} ({len(g)})")
            cells.append(f"{tta.mean():.2f} / {tta.min():.2f}")
        if any(cells):
            print(f"| {name} | " + " | ".join(cells) + " |")


def search_table(rows: list[dict]) -> None:
    """README's search table: per SEARCH variant, mean / min over the 5 seeds on each fold, and
    the mean over folds 0 and 1 (which every variant ran on), without and with TTA "vshift"
    (AVX-512 runs)."""
    import numpy as np
    rows = [r for r in rows if r["simd"] == "avx512" and r["split"] != "test"]
    print("| variant (round-1 base: Adam 0.012, warm-up + cosine, label smoothing 0.1, batch 64) "
          "| fold 0 | fold 1 | fold 2 | folds 0-1 mean: plain / +vshift |")
    print("| --- | --- | --- | --- | --- |")
    for name in SEARCH:
        cells, plain, tta = [], [], []
        for split in ("fold0", "fold1", "fold2"):
            g = [r for r in rows if r["variant"] == name and r["split"] == split]
            acc = np.array([float(r["accuracy"]) for r in g]) * 100
            cells.append(f"{acc.mean():.2f} / {acc.min():.2f}" if len(g) else "")
            if split != "fold2":  # every variant ran on folds 0 and 1: the comparable mean
                plain += list(acc)
                tta += [float(r["acc_vshift"]) * 100 for r in g]
        if plain:
            print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(plain):.2f} / {np.mean(tta):.2f} |")


def simd_table(rows: list[dict]) -> None:
    """The recipe's test accuracy per seed at each SIMD level run (forced with --simd)."""
    from pylenet.recipe import RECORD_RECIPE
    column = f"acc_{RECORD_RECIPE['tta']}" if RECORD_RECIPE["tta"] != "none" else "accuracy"
    print("| SIMD level | seed: test accuracy with TTA (without) |")
    print("| --- | --- |")
    for level in sorted({r["simd"] for r in rows}):
        runs = sorted((int(r["seed"]), float(r[column]) * 100, float(r["accuracy"]) * 100) for r in rows
                      if r["variant"] == "record" and r["split"] == "test" and r["simd"] == level)
        if runs:
            print(f"| {level} | " + ", ".join(f"{s}: {a:.2f} ({p:.2f})" for s, a, p in runs) + " |")


def ablation_table(rows: list[dict]) -> None:
    """README's ablation: per ABLATION variant (and the recipe without its TTA), the mean and
    min over seeds of the recipe's accuracy (with TTA "vshift" unless the row drops it) on the
    validation folds together and on the test set, and each test seed (AVX-512 runs)."""
    import numpy as np
    from pylenet.recipe import RECORD_RECIPE
    rows = [r for r in rows if r["simd"] == "avx512"]
    column = f"acc_{RECORD_RECIPE['tta']}" if RECORD_RECIPE["tta"] != "none" else "accuracy"
    lines = [(name, name, column) for name in ABLATION]
    lines.insert(1, ("record without test-time augmentation", "record", "accuracy"))
    print("| variant | validation, folds 0-2: mean / min (runs) | test: mean / min | test, seeds 0-4 |")
    print("| --- | --- | --- | --- |")
    for label, name, col in lines:
        val = np.array([float(r[col]) for r in rows if r["variant"] == name and r["split"] != "test"]) * 100
        test = sorted(((int(r["seed"]), float(r[col]) * 100) for r in rows
                       if r["variant"] == name and r["split"] == "test"))
        tv = np.array([a for _, a in test])
        vcell = f"{val.mean():.2f} / {val.min():.2f} ({len(val)})" if len(val) else ""
        tcell = f"{tv.mean():.2f} / {tv.min():.2f}" if len(tv) else ""
        print(f"| {label} | {vcell} | {tcell} | {' '.join(f'{a:.2f}' for _, a in test)} |")


def main(argv=None) -> int:
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", default="0,1", help="validation folds (default 0,1)")
    ap.add_argument("--test", action="store_true", help="train on all 60,000, evaluate on the test set")
    ap.add_argument("--seeds", default="0-4", help="seeds, '0-4' or '0,3' (default 0-4)")
    ap.add_argument("--variants", help="names of VARIANTS separated by ';', or 'search' or "
                                       "'ablation' (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="core threads (default 1)")
    ap.add_argument("--simd", help="SIMD level (sets PYLENET_SIMD before pylenet is imported)")
    ap.add_argument("--data", default=default_data, help=f"MNIST folder (default {default_data})")
    ap.add_argument("--csv", default=str(REPO / "bench" / "results" / "record_search.csv"))
    ap.add_argument("--summary", action="store_true", help="print the tables from --csv and stop")
    ap.add_argument("--ablation-table", action="store_true",
                    help="print README's search, ablation and SIMD tables from --csv and stop")
    args = ap.parse_args(argv)
    groups = {"search": list(SEARCH), "ablation": list(ABLATION), None: list(VARIANTS)}
    names = groups.get(args.variants) or [v.strip() for v in args.variants.split(";")]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    path = Path(args.csv)
    if args.summary or args.ablation_table:
        sys.path.insert(0, str(REPO))
        if args.summary:
            summarize(read_rows(path), list(VARIANTS))
        else:
            search_table(read_rows(path))
            print()
            ablation_table(read_rows(path))
            print()
            simd_table(read_rows(path))
        return 0
    if args.simd:
        os.environ["PYLENET_SIMD"] = args.simd
    sys.path.insert(0, str(REPO))
    import numpy as np
    import pylenet

    pylenet.ops.set_num_threads(args.threads)
    simd = pylenet.ops.build_info()["simd_used"]
    images, labels = pylenet.load_mnist("train", root=args.data, progress=False)
    if args.test:
        splits = {"test": ((images, labels), pylenet.load_mnist("test", root=args.data, progress=False))}
    else:
        splits = {}
        for k in (int(f) for f in args.folds.split(",")):
            lo, hi = len(images) - FOLD_SIZE * (k + 1), len(images) - FOLD_SIZE * k
            keep = np.r_[0:lo, hi:len(images)]
            splits[f"fold{k}"] = ((images[keep], labels[keep]), (images[lo:hi], labels[lo:hi]))
    check_explicit_matches_fit(next(iter(splits.values()))[0])
    done = {(r["variant"], r["config"], r["split"], r["seed"], r["simd"]) for r in read_rows(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for name in names:
            cfg = make_config(VARIANTS[name])
            key = config_key(cfg)
            explicit = any(cfg.get(k) for k in EXTRAS)
            for split, (train, evalset) in splits.items():
                for seed in parse_seeds(args.seeds):
                    if (name, key, split, str(seed), simd) in done:
                        continue
                    model, seconds = (train_explicit if explicit else train_fit)(cfg, seed, train)
                    row = {"variant": name, "split": split, "seed": seed, "train_images": len(train[0]),
                           **{k: f"{v:.4f}" for k, v in accuracies(model, evalset).items()},
                           "train_s": f"{seconds:.2f}", "simd": simd, "threads": args.threads,
                           "config": key}
                    writer.writerow(row)
                    f.flush()
                    print(f"{name:42s} {split:6s} seed {seed}  {100 * float(row['accuracy']):.2f}%  "
                          f"vshift {100 * float(row['acc_vshift']):.2f}%  shift4 "
                          f"{100 * float(row['acc_shift4']):.2f}%  {seconds:.1f} s", flush=True)
    summarize(read_rows(path), list(VARIANTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
