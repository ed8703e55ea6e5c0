"""ChanceAccuracyWarning: fit warns, naming the learning rate, when an epoch of at least
MIN_CHANCE_SAMPLES real MNIST digits leaves the training accuracy at chance; a run that learns
and an epoch too short to judge stay silent; `pylenet train` shows it as one stderr line.

pyproject.toml ignores this warning for the rest of the suite, so every test here opts in
(pytest.warns, or a filterwarnings mark) to see it."""
import warnings

import numpy as np
import pytest

import pylenet
from pylenet import ChanceAccuracyWarning, LeNet5, fit
from pylenet.cli import main
from pylenet.optim import SGD
from pylenet.train import MIN_CHANCE_SAMPLES

pytestmark = pytest.mark.usefixtures("restore_threads")
SEE_IT = "always::pylenet.train.ChanceAccuracyWarning"  # overrides pyproject's ignore


@pytest.fixture(scope="module")
def digits(mnist_dir):
    images, labels = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    return images[:2000], labels[:2000]


def dead_lenet() -> LeNet5:
    """A LeNet-5 stuck at chance whatever the learning rate, as one whose ReLUs a huge rate
    killed: F6's units are all dead (weights and bias 0) and the output reads none of them, so
    no gradient reaches below the output bias and every batch's prediction is one class."""
    model = LeNet5(seed=0)
    layers = dict(model.layers)
    for param in (layers["F6"].weight, layers["F6"].bias, layers["output"].weight):
        param.data[...] = 0
    return model


def train(model, data, lr, *, epochs=1):
    return fit(model, data, epochs=epochs, batch_size=64, progress=False, threads=2,
               optimizer=SGD(model.parameters(), lr=lr, momentum=0.9))


@pytest.mark.parametrize("lr", [0.0, 0.25], ids=["frozen", "stuck"])
def test_an_epoch_at_chance_warns_naming_the_learning_rate(digits, lr):
    model = dead_lenet()
    with pytest.warns(ChanceAccuracyWarning, match=rf"the learning rate {lr:g} is likely wrong") as caught:
        history = train(model, digits, lr)
    assert history["accuracy"][0] < 0.15  # the precondition: chance is 0.1 for 10 classes
    (warning,) = caught.list
    message = str(warning.message)
    assert "\n" not in message
    assert message.startswith(f"epoch 1 left the training accuracy at {100 * history['accuracy'][0]:.1f}%, "
                              f"chance for 10 classes")
    assert warning.filename == __file__  # it points at the fit() call, not into pylenet


def test_a_run_that_learns_does_not_warn(digits):
    model = LeNet5(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChanceAccuracyWarning)
        history = fit(model, digits, epochs=1, progress=False, threads=2)  # the default recipe
    assert history["accuracy"][0] > 0.2  # well clear of the 0.15 threshold


def test_epochs_shorter_than_min_chance_samples_do_not_warn(digits):
    short = (digits[0][:MIN_CHANCE_SAMPLES - 1], digits[1][:MIN_CHANCE_SAMPLES - 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChanceAccuracyWarning)
        history = train(dead_lenet(), short, 0.25, epochs=2)  # 2 x 999 images: counted per epoch
    assert max(history["accuracy"]) < 0.15  # at chance, yet too few images to judge
    exact = (digits[0][:MIN_CHANCE_SAMPLES], digits[1][:MIN_CHANCE_SAMPLES])
    with pytest.warns(ChanceAccuracyWarning, match="learning rate 0.25"):
        train(dead_lenet(), exact, 0.25)


@pytest.mark.filterwarnings(SEE_IT)
def test_the_cli_prints_the_warning_as_one_stderr_line(mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYLENET_MNIST_MIRRORS", "http://127.0.0.1:9/")  # never the network
    code = main(["train", "--data", str(mnist_dir), "--epochs", "1", "--limit", "2000", "--lr", "0",
                 "--out", str(tmp_path / "run"), "--no-progress", "--threads", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "warnings.warn" not in err and "ChanceAccuracyWarning" not in err
    # stderr holds the run's "training ..." header line and the warning, one line, whole
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("training ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("pylenet: warning: epoch 1 left the training accuracy at "), err
    assert "the learning rate 0 is likely wrong" in lines[0]
    assert lines[0].endswith("(its recipe: pylenet.recipe.model_recipe)"), err
    assert "epoch   1" in out  # the run itself went on and reported its epoch
