"""BatchNorm2d/1d, Dropout and AdaptiveAvgPool2d(1): PyTorch's semantics in training and in
evaluation, gradients against finite differences and torch.autograd, the fused engine against
the layer path bit for bit, any thread count the same bits, and the model modes, state_dict
keys, checkpoints and exports that carry them."""
import numpy as np
import pytest

import pylenet
from gradcheck import gradcheck
from pylenet import ops
from pylenet.engine import cpu_net_for
from pylenet.layers import (AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten,
                            Linear, MaxPool2d, ReLU, Sequential)
from pylenet.losses import CrossEntropyLoss

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def randn(*shape, seed=0, scale=1.0, shift=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + shift).astype(np.float32)


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# ----------------------------------------------------------------------------------- BatchNorm

@pytest.mark.parametrize("shape", [(8, 3, 5, 4), (17, 6, 1, 1), (2, 4, 7, 7), (9, 5), (64, 12)])
@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_training_forward_and_backward_match_torch(shape, affine):
    x = randn(*shape, seed=1, scale=3.0, shift=2.0)
    dy = randn(*shape, seed=2)
    layer = (BatchNorm2d if len(shape) == 4 else BatchNorm1d)(shape[1], momentum=0.3, affine=affine)
    ref = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[1], momentum=0.3,
                                                                              affine=affine)
    if affine:
        layer.weight.data[...] = randn(shape[1], seed=3)
        layer.bias.data[...] = randn(shape[1], seed=4)
        with torch.no_grad():
            ref.weight.copy_(t(layer.weight.data))
            ref.bias.copy_(t(layer.bias.data))
    xt = t(x).requires_grad_()
    yt = ref(xt)
    yt.backward(t(dy))
    y = layer.forward(x)
    dx = layer.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.running_mean, ref.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, ref.running_var.numpy(), rtol=1e-5, atol=1e-6)
    assert int(layer.num_batches_tracked) == int(ref.num_batches_tracked) == 1
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    if affine:
        np.testing.assert_allclose(layer.weight.grad, ref.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.bias.grad, ref.bias.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_batchnorm_evaluation_uses_the_running_statistics_as_torch_does():
    layer, ref = BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for seed in range(3):  # a few training batches move the running statistics
        x = randn(6, 3, 4, 4, seed=seed, scale=2.0, shift=1.0)
        layer.forward(x)
        ref(t(x))
    layer.eval()
    ref.eval()
    x = randn(5, 3, 4, 4, seed=9)
    np.testing.assert_allclose(layer.forward(x), ref(t(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert int(layer.num_batches_tracked) == 3  # evaluation moves nothing
    np.testing.assert_allclose(layer.running_var, ref.running_var.numpy(), rtol=1e-5)


def test_batchnorm_gradients_against_finite_differences():
    x = randn(6, 2, 3, 3, seed=5)
    w, b = randn(2, seed=6), randn(2, seed=7)

    def forward(x, weight, bias):
        return ops.batchnorm_forward_train(x, weight, bias, None, None)[0]

    def backward(G, x, weight, bias):
        _, mean, invstd, _, _ = ops.batchnorm_forward_train(x, weight, bias, None, None)
        dx, dw, db = ops.batchnorm_backward(x, G, mean, invstd, weight)
        return {"x": dx, "weight": dw, "bias": db}

    gradcheck(forward, backward, {"x": x, "weight": w, "bias": b})


def test_batchnorm_training_needs_more_than_one_value_per_channel():
    with pytest.raises(ValueError, match=r"more than one value per channel"):
        BatchNorm1d(4).forward(randn(1, 4))
    BatchNorm2d(4).forward(randn(1, 4, 2, 2))  # one image, 4 values per channel: fine
    model = Sequential(Flatten(), Linear(4, 3), BatchNorm1d(3), Linear(3, 2))
    with pytest.raises(ValueError, match=r"layer 2 \(BatchNorm1d\) needs more than one value per channel"):
        cpu_net_for(model, (1, 2, 2)).train_step(randn(1, 1, 2, 2), np.zeros(1, np.int64))


@pytest.mark.parametrize("bad,message", [
    (dict(num_features=0), r"BatchNorm2d: num_features must be >= 1, got 0"),
    (dict(num_features=3, eps=0.0), r"eps must be > 0, got 0"),
    (dict(num_features=3, momentum=1.5), r"momentum must be in \[0, 1\], got 1.5"),
    (dict(num_features=3, affine=1), r"affine must be True or False"),
    (dict(num_features=2.5), r"num_features must be an int, got float 2.5"),
])
def test_batchnorm_arguments_are_checked_by_the_core(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        BatchNorm2d(**bad)


# ------------------------------------------------------------------------------------- Dropout

def test_dropout_keeps_the_right_fraction_scaled_and_is_the_identity_in_evaluation():
    x = np.ones((50, 400), np.float32)
    for p in (0.0, 0.25, 0.5, 0.9, 1.0):
        y = ops.dropout_forward(x, p, 3, 1, 2, 0)
        kept = y != 0
        assert abs(kept.mean() - (1 - p)) < 0.01, (p, kept.mean())
        if p < 1:
            np.testing.assert_array_equal(y[kept], np.float32(1 / (1 - p)))
    layer = Dropout(0.5).eval()
    assert layer.forward(x) is x


def test_dropout_masks_come_from_seed_epoch_layer_and_sample_index_only():
    x = randn(12, 30, seed=1)
    a = ops.dropout_forward(x, 0.5, 7, 2, 3, 100)
    np.testing.assert_array_equal(a, ops.dropout_forward(x, 0.5, 7, 2, 3, 100))  # same key: same bits
    for changed in [(8, 2, 3, 100), (7, 3, 3, 100), (7, 2, 4, 100), (7, 2, 3, 101)]:
        assert not np.array_equal(a, ops.dropout_forward(x, 0.5, *changed)), changed
    # A sample's mask does not depend on its batch: samples 100..111 one batch or two.
    split = np.concatenate([ops.dropout_forward(x[:5], 0.5, 7, 2, 3, 100),
                            ops.dropout_forward(x[5:], 0.5, 7, 2, 3, 105)])
    np.testing.assert_array_equal(a, split)
    # backward masks dy with the same mask and scale
    np.testing.assert_array_equal(ops.dropout_backward(x, 0.5, 7, 2, 3, 100), a)


def test_dropout_gradient_against_finite_differences_and_nan_as_torch():
    x = randn(4, 6, seed=2)
    gradcheck(lambda x: ops.dropout_forward(x, 0.3, 1, 0, 0, 0),
              lambda G, x: {"x": ops.dropout_backward(G, 0.3, 1, 0, 0, 0)}, {"x": x})
    y = ops.dropout_forward(np.full((1, 64), np.nan, np.float32), 0.5)
    assert np.isnan(y).all()  # x * 0 keeps NaN, as torch's x * mask does


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_p_is_checked(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\]"):
        Dropout(p)


# ------------------------------------------------------------------------------ global pooling

def test_global_average_pooling_matches_torch():
    x = randn(3, 5, 6, 7, seed=3)
    dy = randn(3, 5, 1, 1, seed=4)
    xt = t(x).requires_grad_()
    yt = torch.nn.AdaptiveAvgPool2d(1)(xt)
    yt.backward(t(dy))
    layer = AdaptiveAvgPool2d(1)
    np.testing.assert_allclose(layer.forward(x), yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-6)
    assert layer.output_shape((5, 6, 7)) == (5, 1, 1)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: output_size must be 1 \(the only value"):
        AdaptiveAvgPool2d(2)


# ----------------------------------------------------------------- the fused engine and the layers

def small_cnn(seed=0, p=0.3):
    rng = np.random.default_rng(seed)
    return Sequential(Conv2d(1, 4, 3, padding=1, rng=rng), BatchNorm2d(4), ReLU(), MaxPool2d(2),
                      Conv2d(4, 6, 3, rng=rng), ReLU(), Dropout(p), AdaptiveAvgPool2d(1), Flatten(),
                      Linear(6, 8, rng=rng), BatchNorm1d(8), ReLU(), Dropout(p), Linear(8, 5, rng=rng))


def layer_step(model, x, labels, noise):
    model.train()
    model.set_noise(*noise)
    out = model.forward(x)
    loss, dout = CrossEntropyLoss()(out, labels)
    model.backward(dout)
    return out, loss, [p.grad.copy() for p in model.parameters()], [b.copy() for b in model.buffers()]


def fused_step(model, x, labels, noise):
    loss, out = cpu_net_for(model, x.shape[1:]).train_step(x, labels, "cross_entropy", noise)
    return out, loss, [p.grad.copy() for p in model.parameters()], [b.copy() for b in model.buffers()]


@pytest.mark.parametrize("n", [2, 9, 64, 100])
def test_fused_engine_equals_the_layer_path_bit_for_bit(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 1, 10, 10)).astype(np.float32)
    labels = rng.integers(0, 5, n)
    a, b = small_cnn(), small_cnn()
    out_a, loss_a, grads_a, bufs_a = layer_step(a, x, labels, (3, 1, 40))
    out_b, loss_b, grads_b, bufs_b = fused_step(b, x, labels, (3, 1, 40))
    np.testing.assert_array_equal(out_a, out_b)
    for (name, _), ga, gb in zip(a.named_parameters(), grads_a, grads_b):
        np.testing.assert_array_equal(ga, gb, err_msg=name)
    for (name, _), ba, bb in zip(a.named_buffers(), bufs_a, bufs_b):
        np.testing.assert_array_equal(ba, bb, err_msg=name)
    assert loss_a == pytest.approx(loss_b, rel=1e-12)


@pytest.mark.parametrize("n", [16, 64])
def test_any_thread_count_gives_the_same_bits(n, restore_threads):
    x = randn(n, 1, 10, 10, seed=n)
    labels = np.random.default_rng(n).integers(0, 5, n)
    results = []
    for threads in (1, 2, 3):
        ops.set_num_threads(threads)
        results.append(fused_step(small_cnn(), x, labels, (1, 0, 0)))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0][0], other[0])
        for ga, gb in zip(results[0][2] + results[0][3], other[2] + other[3]):
            np.testing.assert_array_equal(ga, gb)


def test_the_fused_engines_batchnorm_step_matches_torch():
    rng = np.random.default_rng(5)
    model = Sequential(Conv2d(1, 3, 3, rng=rng), BatchNorm2d(3), ReLU(), Flatten(), Linear(3 * 6 * 6, 4, rng=rng))
    from pylenet.interop import to_torch
    module = to_torch(model).train()
    x = randn(20, 1, 8, 8, seed=6)
    labels = rng.integers(0, 4, 20)
    loss, out = cpu_net_for(model, (1, 8, 8)).train_step(x, labels)
    xt = t(x)
    ref = module(xt)
    ref_loss = torch.nn.functional.cross_entropy(ref, torch.from_numpy(labels))
    ref_loss.backward()
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
    for (name, p), (tname, tp) in zip(model.named_parameters(), module.named_parameters()):
        assert name == tname
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=2e-3, atol=1e-5, err_msg=name)
    state = module.state_dict()
    np.testing.assert_allclose(model.layers[1][1].running_var, state["1.running_var"].numpy(), rtol=1e-5)


def test_train_and_eval_modes_as_pytorch():
    model = small_cnn()
    x = randn(6, 1, 10, 10, seed=1)
    train_out = model.train().forward(x)
    eval_a = model.eval().forward(x)
    eval_b = model.forward(x)
    np.testing.assert_array_equal(eval_a, eval_b)  # evaluation: no dropout, running statistics
    assert not np.array_equal(train_out, eval_a)
    # evaluate/predict evaluate (the fused forward) and leave the model's mode as it was
    model.train()
    np.testing.assert_allclose(cpu_net_for(model, (1, 10, 10)).forward(x), eval_a, rtol=1e-5, atol=1e-6)
    pylenet.predict(model, x)
    assert model.training


def test_fit_trains_with_batch_statistics_and_dropout_then_evaluates(mnist_dir):
    train = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    rng = np.random.default_rng(0)
    model = Sequential(Conv2d(1, 6, 5, rng=rng), BatchNorm2d(6), ReLU(), MaxPool2d(2),
                       Conv2d(6, 16, 5, rng=rng), BatchNorm2d(16), ReLU(), MaxPool2d(2), Flatten(),
                       Linear(400, 120, rng=rng), BatchNorm1d(120), ReLU(), Dropout(0.2),
                       Linear(120, 10, rng=rng))
    data = (train[0][:3000], train[1][:3000])
    held = (train[0][3000:4000], train[1][3000:4000])
    history = pylenet.fit(model, data, epochs=2, validation=held, progress=False, seed=1)
    assert history["val_accuracy"][-1] > 0.9
    assert int(model.layers[1][1].num_batches_tracked) == 2 * 47  # every training batch counted
    again = Sequential(*[(n, layer) for n, layer in small_cnn().layers])  # a fresh model, same run
    del again


# ------------------------------------------------------------------ state, checkpoints, exports

def test_state_dict_keys_are_pytorchs_and_checkpoints_keep_the_buffers(tmp_path):
    model = small_cnn()
    model.forward(randn(8, 1, 10, 10))  # move the running statistics
    from pylenet.interop import to_torch
    assert list(model.state_dict()) == list(to_torch(model).state_dict())
    assert "1.running_mean" in model.state_dict() and "1.num_batches_tracked" in model.state_dict()
    path = pylenet.save_model(tmp_path / "m.ckpt", model)
    back = pylenet.load_model(path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b, err_msg=k)
    x = randn(3, 1, 10, 10, seed=4)
    np.testing.assert_array_equal(model.eval().forward(x), back.eval().forward(x))


def test_to_torch_and_from_torch_carry_batchnorm_and_dropout():
    model = small_cnn(p=0.25)
    model.forward(randn(8, 1, 10, 10))
    from pylenet.interop import from_torch, to_torch
    module = to_torch(model)
    assert isinstance(module[1], torch.nn.BatchNorm2d) and isinstance(module[6], torch.nn.Dropout)
    assert module[6].p == 0.25 and int(module[1].num_batches_tracked) == 1
    back = from_torch(module)
    x = randn(4, 1, 10, 10, seed=2)
    np.testing.assert_allclose(back.eval().forward(x), model.eval().forward(x), rtol=1e-6)
    np.testing.assert_array_equal(back.layers[10][1].running_var, model.layers[10][1].running_var)


def test_onnx_export_of_batchnorm_dropout_and_global_pooling(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = small_cnn()
    for seed in range(3):
        model.forward(randn(8, 1, 10, 10, seed=seed, shift=0.5))
    path = pylenet.export_onnx(model.eval(), tmp_path / "m.onnx", input_shape=(1, 10, 10))
    x = randn(5, 1, 10, 10, seed=7)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.forward(x), rtol=1e-4, atol=1e-5)
