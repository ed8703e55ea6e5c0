"""pylenet sweep without a Ray cluster: search-space specs and their errors, the trial's train
flags, results.csv, the plot, and the one-line CLI errors (tests/test_ray.py runs real sweeps)."""
import contextlib
import csv
import io
import sys
from types import SimpleNamespace

import pytest

from pylenet import cli
from pylenet.cluster import check_address, require_ray

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install ".[ray]")')
from ray import tune  # noqa: E402
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform  # noqa: E402

from pylenet.tuning import (_Recorder, _searcher, make_space, parse_space, plot_sweep,  # noqa: E402
                            searchable_options, top_table, train_argv, write_csv)


def _err(argv) -> tuple[int, str]:
    """(exit code, stderr) of the pylenet command, given a --data folder without MNIST so that
    a command that got as far as reading data fails there instead of downloading it."""
    argv = [*argv, "--data", "/nonexistent/mnist"]
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, buf.getvalue()


def test_searchable_options_are_the_train_options():
    names = set(searchable_options())
    assert {"lr", "batch_size", "momentum", "weight_decay", "optimizer", "schedule", "warmup",
            "augment", "activation", "pooling", "variant", "seed"} <= names
    assert not names & {"data", "out", "epochs", "threads", "resume", "workers", "address"}


def test_specs_map_to_tune_objects():
    space = parse_space(["lr=loguniform(0.001,0.1)", "batch-size=uniform(16,128)",
                         "momentum=uniform(0.5,0.99)", "optimizer=choice(sgd,adam)",
                         "seed=grid(1,2,3)", "weight_decay=choice(0,0.0005)"])
    assert isinstance(space["lr"], Float) and isinstance(space["lr"].get_sampler(), LogUniform)
    assert (space["lr"].lower, space["lr"].upper) == (0.001, 0.1)
    # an integer option samples integers, both ends included
    assert isinstance(space["batch_size"], Integer)
    assert (space["batch_size"].lower, space["batch_size"].upper) == (16, 129)
    assert space["optimizer"].categories == ["sgd", "adam"]
    assert space["seed"] == {"grid_search": [1, 2, 3]}
    assert space["weight_decay"].categories == [0.0, 0.0005]


@pytest.mark.parametrize("spec,message", [
    ("lr=unif(0,1)", "SPEC must be choice(a,b,...), uniform(lo,hi), loguniform(lo,hi) or grid"),
    ("lr=choice()", "choice() needs values separated by commas"),
    ("lr=choice(0.1,,0.2)", "none empty"),
    ("lr=choice(fast)", "'fast' is not a valid lr (it takes a number)"),
    ("batch_size=choice(32.5)", "'32.5' is not a valid batch_size (it takes an integer)"),
    ("optimizer=choice(sgd,rmsprop)", "'rmsprop' is not a valid optimizer (choose from sgd, adam)"),
    ("optimizer=uniform(0,1)", "optimizer takes one of sgd, adam; use choice(...) or grid(...)"),
    ("lr=uniform(0.1,0.01)", "lo must be below hi"),
    ("lr=loguniform(0,0.1)", "loguniform needs lo > 0"),
    ("lr=uniform(0.1)", "takes two numbers, got 1"),
    ("lr=grid(0.1,0.1)", "a value is repeated"),
    ("foo=choice(1,2)", "'foo' is not an option of pylenet train; searchable: "),
    ("epochs=choice(1,2)", "epochs is not searchable: the sweep sets it for every trial (--epochs)"),
    ("lr", "expected NAME=SPEC"),
])
def test_bad_specs_name_what_is_wrong(spec, message):
    with pytest.raises(ValueError) as e:
        parse_space([spec])
    assert message in str(e.value)


def test_empty_and_repeated_spaces():
    with pytest.raises(ValueError, match=r"give at least one --space NAME=SPEC .*searchable: "):
        parse_space([])
    with pytest.raises(ValueError, match="batch_size is given twice"):
        parse_space(["batch_size=choice(32)", "batch-size=choice(64)"])


def test_python_space_takes_tune_objects_as_they_are():
    lr, grid = tune.loguniform(1e-3, 1e-1), tune.grid_search([32, 64])
    space = make_space({"lr": lr, "batch_size": grid, "optimizer": "choice(sgd,adam)"})
    assert space["lr"] is lr and space["batch_size"] is grid
    assert isinstance(space["optimizer"], Categorical)
    with pytest.raises(ValueError, match="'rmsprop' is not a valid optimizer"):
        make_space({"optimizer": tune.choice(["sgd", "rmsprop"])})
    with pytest.raises(ValueError, match="'x' is not a valid batch_size"):
        make_space({"batch_size": tune.grid_search([32, "x"])})
    with pytest.raises(TypeError, match="expected a SPEC string .* or a Ray Tune search space"):
        make_space({"lr": 0.1})
    with pytest.raises(ValueError, match="non-empty dict"):
        make_space({})
    with pytest.raises(ValueError, match="'bogus' is not an option of pylenet train"):
        make_space({"bogus": tune.choice([1])})


def test_trial_flags_parse_back_exactly():
    options = {"lr": 0.012345678901234567, "batch_size": 48, "optimizer": "adam",
               "weight_decay": 0.0, "augment": "affine", "seed": 7}
    args = cli.train_args(train_argv(options))
    for name, value in options.items():
        assert getattr(args, name) == value and type(getattr(args, name)) is type(value)
    import numpy as np  # values a search algorithm hands over as numpy scalars
    assert cli.train_args(train_argv({"lr": np.float64(0.1), "batch_size": np.int64(32)})).batch_size == 32
    with pytest.raises(ValueError, match="invalid choice: 'x'"):
        cli.train_args(["--optimizer", "x"])
    # --recipe's defaults apply, as for `pylenet train --recipe fast`
    assert cli.train_args(["--recipe", "fast"]).schedule == "warmup_cosine"


def test_grid_and_optuna_searchers():
    space = parse_space(["optimizer=choice(sgd,adam)", "seed=grid(1,2)"])
    _, grid = _searcher("grid", space, seed=0)
    assert grid == {"optimizer": {"grid_search": ["sgd", "adam"]}, "seed": {"grid_search": [1, 2]}}
    with pytest.raises(ValueError, match="--search grid tries every value, so lr needs choice"):
        _searcher("grid", parse_space(["lr=uniform(0.01,0.1)"]), seed=0)
    with pytest.raises(ValueError, match="--search optuna samples, so seed needs choice"):
        _searcher("optuna", space, seed=0)
    pytest.importorskip("optuna")
    searcher, same = _searcher("optuna", parse_space(["lr=loguniform(0.01,0.1)"]), seed=0)
    assert type(searcher).__name__ == "OptunaSearch"


def _trial(tid, config, last, failures=0):
    return SimpleNamespace(trial_id=tid, config=config, last_result=last, num_failures=failures,
                           checkpoint=None, status="RUNNING", error_file=None)


def test_rows_statuses_csv_table_and_plot(tmp_path):
    rec = _Recorder(tmp_path, ["lr", "optimizer"], epochs=3, progress=False)
    a = _trial("t0", {"lr": 0.05, "optimizer": "sgd"}, {"epoch": 3, "accuracy": 0.97, "loss": 0.1,
                                                        "time_total_s": 4.2})
    b = _trial("t1", {"lr": 0.002, "optimizer": "adam"}, {"epoch": 1, "accuracy": 0.91, "loss": 0.3,
                                                          "time_total_s": 1.0})
    c = _trial("t2", {"lr": 0.9, "optimizer": "sgd"}, {"epoch": 1, "accuracy": 0.0, "diverged": 1})
    for t, acc in ((a, [0.95, 0.96, 0.97]), (b, [0.91])):
        for epoch, value in enumerate(acc, 1):
            rec.on_trial_result(0, [a, b, c], t, {"epoch": epoch, "accuracy": value})
    for t in (a, b, c):
        rec.on_trial_complete(0, [a, b, c], t)
    with open(tmp_path / "results.csv") as f:
        rows = {r["trial"]: r for r in csv.DictReader(f)}
    assert rows["t0"]["status"] == "completed" and rows["t0"]["best_accuracy"] == "0.97"
    assert rows["t1"]["status"] == "stopped"  # fewer epochs than asked: ASHA stopped it
    assert rows["t2"]["status"] == "diverged" and rows["t2"]["final_accuracy"] == ""
    table = top_table(list(rec.rows.values()), ["lr", "optimizer"])
    assert table.splitlines()[1].split()[:3] == ["1", "t0", "0.05"] and "t2" not in table
    assert plot_sweep(tmp_path / "sweep.png", list(rec.rows.values()), rec.curves, ["lr", "optimizer"])
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    write_csv(tmp_path / "again.csv", [], ["lr"])
    assert (tmp_path / "again.csv").read_text().startswith("trial,lr,final_accuracy")


@pytest.mark.parametrize("argv,message", [
    (["sweep", "--space", "lr=unif(1,2)"], "--space lr=unif(1,2): SPEC must be"),
    (["sweep"], "give at least one --space NAME=SPEC"),
    (["sweep", "--space", "foo=choice(1,2)"], "'foo' is not an option of pylenet train"),
    (["sweep", "--space", "lr=choice(0.1)", "--trials", "0"], "--trials must be >= 1"),
    (["sweep", "--space", "lr=choice(0.1)", "--address", "nowhere"], "expected auto or HOST:PORT"),
    (["sweep", "--space", "lr=choice(0.1)", "--address", "127.0.0.1:1"],
     "--address 127.0.0.1:1: no Ray cluster answers there"),
    (["sweep", "--space", "lr=uniform(0.01,0.1)", "--search", "grid"], "--search grid tries every value"),
    (["train", "--workers", "0"], "--workers must be >= 1"),
    (["train", "--address", "auto"], "--address goes with --workers N"),
    (["train", "--workers", "2", "--until-accuracy", "0.9"], "--until-accuracy is not available with --workers"),
])
def test_cli_errors_are_one_line(argv, message):
    code, err = _err(argv)
    assert code == 1 and err.count("\n") == 1 and err.startswith("pylenet: error: "), err
    assert message in err


def test_sweep_refuses_an_earlier_out(tmp_path):
    (tmp_path / "results.csv").write_text("trial\n")
    code, err = _err(["sweep", "--space", "lr=choice(0.1)", "--out", str(tmp_path)])
    assert code == 1 and "already holds results.csv" in err


def test_unreachable_address_fails_fast():
    with pytest.raises(ConnectionError, match="Connection refused"):
        check_address("127.0.0.1:1")


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "pylenet\[ray\]"'):
        require_ray()
    for argv in (["sweep", "--space", "lr=choice(0.1)"], ["train", "--workers", "2"]):
        code, err = _err(argv)
        assert code == 1 and err.count("\n") == 1 and 'pip install "pylenet[ray]"' in err, err
