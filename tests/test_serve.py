"""`pylenet serve`: the JSON API against a real server on 127.0.0.1, bad input, a bounded load test, the CLI."""
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import pylenet  # noqa: E402
from conftest import REPO_ROOT  # noqa: E402
from pylenet.cli import main  # noqa: E402
from pylenet.explain import saliency  # noqa: E402
from pylenet.images import decode_image, load_image, to_mnist  # noqa: E402
from pylenet.serve import MAX_UPLOAD_BYTES, PAGE_CSP, STATIC_FILES, Predictor, static_dir  # noqa: E402
from serve_util import Client, ServerThread, digits, make_checkpoint, multipart, png_bytes  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(path, trained on real MNIST?) of the model every test here serves."""
    return make_checkpoint(tmp_path_factory.mktemp("serve_model"))


@pytest.fixture(scope="module")
def reference(checkpoint):
    """A second, private copy of the served model: the in-process answers to compare with."""
    return pylenet.LeNet5.load(checkpoint[0])


@pytest.fixture(scope="module")
def server(checkpoint):
    with ServerThread(Predictor.load(checkpoint[0])) as running:
        yield running


@pytest.fixture
def api(server):
    client = Client(server.url)
    yield client
    client.close()


def expect(reference, image):
    labels, probs = pylenet.predict(reference, image)
    return int(labels[0]), probs[0].astype(np.float32)


def assert_same_answer(data, reference, image):
    """The server's label and probabilities are exactly those computed in this process."""
    label, probs = expect(reference, image)
    assert data["label"] == label
    assert np.array_equal(np.asarray(data["probabilities"], np.float32), probs)


# ---------------------------------------------------------------------------------- answers

def test_model_describes_layers_parameters_training_and_filters(api, reference, checkpoint):
    status, headers, data = api.call("GET", "/api/model")
    assert status == 200 and headers["content-type"] == "application/json"
    assert data["parameters"] == reference.num_parameters() == 61_706
    assert [l["name"] for l in data["layers"]] == [name for name, _ in reference.layers]
    shapes = {l["name"]: l["output_shape"] for l in data["layers"]}
    assert shapes["C1"] == [6, 28, 28] and shapes["S4"] == [16, 5, 5] and shapes["output"] == [10]
    assert sum(l["parameters"] for l in data["layers"]) == data["parameters"]
    ckpt = pylenet.checkpoint.load_checkpoint(checkpoint[0])
    assert data["config"] == ckpt.arch and data["source"] == "model.ckpt"
    assert data["training"]["epochs"] == ckpt.epoch
    assert data["training"]["history"] == ckpt.extra.get("history", [])
    if checkpoint[1]:
        assert data["training"]["final"]["val_accuracy"] > 0.8
    filters = np.asarray(data["c1_filters"]["weights"])
    assert filters.shape == (6, 5, 5)
    np.testing.assert_allclose(filters, dict(reference.layers)["C1"].weight.data[:, 0], atol=6e-5)


def test_json_pixels_get_the_in_process_answer(api, reference):
    images, labels = digits(20)
    for image in images:
        status, _, data = api.call("POST", "/api/predict", {"pixels": image.tolist()})
        assert status == 200, data
        assert_same_answer(data, reference, image)
        assert 0 < data["time_ms"] < 10_000
    # A bare array works too, and floats are rounded to the nearest pixel value.
    nudged = np.where(images[0] > 0, images[0] - 0.3, images[0] + 0.3)
    status, _, bare = api.call("POST", "/api/predict", nudged.tolist())
    assert status == 200
    assert_same_answer(bare, reference, images[0])
    if labels is not None:
        hits = sum(api.call("POST", "/api/predict", {"pixels": img.tolist()})[2]["label"] == lab
                   for img, lab in zip(images, labels))
        assert hits >= 16, f"{hits}/20 real test digits right"


def test_preprocess_true_applies_the_predict_pipeline_to_pixels(api, reference):
    image = np.zeros((28, 28), np.uint8)
    image[2:9, 3:6] = 255      # a small off-centre bar: preprocessing scales and centres it
    status, _, data = api.call("POST", "/api/predict", {"pixels": image.tolist(), "preprocess": True})
    assert status == 200, data
    assert_same_answer(data, reference, to_mnist(image))
    assert not np.array_equal(to_mnist(image), image)
    status, _, data = api.call("POST", "/api/features", {"pixels": image.tolist(), "preprocess": True})
    assert np.array_equal(np.asarray(data["input"]), to_mnist(image))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_uploads_get_the_answer_of_pylenet_predicts_preprocessing(api, reference, tmp_path, fmt):
    images, _ = digits(3)
    for i, image in enumerate(images):
        data = png_bytes(image, fmt=fmt)
        path = tmp_path / f"digit{i}.{fmt.lower()}"
        path.write_bytes(data)
        prepared = load_image(path)                   # what `pylenet predict` reads
        body, kind = multipart({"image": data})
        for request in ((body, kind), (data, f"image/{fmt.lower()}"), (data, "application/octet-stream")):
            status, _, answer = api.call("POST", "/api/predict", *request)
            assert status == 200, answer
            assert_same_answer(answer, reference, prepared)


def test_features_are_the_layer_by_layer_maps_and_the_predict_answer(api, reference):
    image = digits(1)[0][0]
    status, _, data = api.call("POST", "/api/features", {"pixels": image.tolist()})
    assert status == 200, data
    assert_same_answer(data, reference, image)
    assert np.array_equal(np.asarray(data["input"], np.uint8), image)
    layers = {l["name"]: l for l in data["layers"]}
    assert list(layers) == ["C1", "S2", "C3", "S4"]
    assert layers["C1"]["layers"] == ["C1", "A1"] and layers["S2"]["layers"] == ["S2"]
    # The same stages run here through the Python layers, in eval mode.
    model = reference.eval()
    x = pylenet.data.pad_and_normalize(image)
    seen = {}
    for name, layer in model.layers[:6]:
        x = layer.forward(x)
        seen[name] = x[0]
    for stage, after in (("C1", "A1"), ("S2", "S2"), ("C3", "A3"), ("S4", "S4")):
        maps = np.asarray(layers[stage]["maps"])
        assert list(maps.shape) == layers[stage]["shape"] == list(seen[after].shape)
        np.testing.assert_allclose(maps, seen[after], atol=6e-5)
        assert layers[stage]["min"] == pytest.approx(float(seen[after].min()), abs=1e-6)
        assert layers[stage]["max"] == pytest.approx(float(seen[after].max()), abs=1e-6)
    assert layers["C1"]["max"] > layers["C1"]["min"] >= 0  # ReLU maps with something in them


def test_saliency_is_the_in_process_gradient_for_the_predicted_or_asked_class(api, reference):
    images, _ = digits(3)
    for image in images:
        label, _ = expect(reference, image)
        for query, target in (("", label), ("?target=auto", label), ("?target=3", 3), ("?target=0", 0)):
            status, _, data = api.call("POST", "/api/saliency" + query, {"pixels": image.tolist()})
            assert status == 200, data
            assert_same_answer(data, reference, image)
            assert np.array_equal(np.asarray(data["input"], np.uint8), image)
            sal = data["saliency"]
            assert sal["target"] == target
            want = saliency(reference, image, target)
            got = np.asarray(sal["values"])
            assert got.shape == (28, 28)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
            assert sal["max_abs"] == float(np.abs(got).max()) > 0
    # /api/features carries the same map, for the page's one request per drawing.
    status, _, data = api.call("POST", "/api/features?target=5", {"pixels": images[0].tolist()})
    assert status == 200 and data["saliency"]["target"] == 5
    _, _, alone = api.call("POST", "/api/saliency?target=5", {"pixels": images[0].tolist()})
    assert data["saliency"] == alone["saliency"]
    # An upload works as on /api/predict.
    png = png_bytes(images[1])
    status, _, data = api.call("POST", "/api/saliency?target=7", png, "image/png")
    assert status == 200 and data["saliency"]["target"] == 7
    np.testing.assert_allclose(np.asarray(data["saliency"]["values"]),
                               saliency(reference, decode_image(png), 7), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("endpoint", ["/api/saliency", "/api/features"])
@pytest.mark.parametrize("query,words", [("?target=10", ["0..9", "'10'"]), ("?target=-1", ["0..9", "'-1'"]),
                                         ("?target=seven", ["'seven'"]), ("?target=1.5", ["'1.5'"]),
                                         ("?target=1&target=2", ["at most once"])])
def test_a_bad_target_is_a_400_naming_it(api, endpoint, query, words):
    status, headers, data = api.call("POST", endpoint + query, {"pixels": [[0] * 28] * 28})
    assert status == 400 and headers["content-type"] == "application/json", data
    for word in words:
        assert word in data["error"], data["error"]


def test_feature_requests_leave_the_shared_layers_untouched(checkpoint):
    predictor = Predictor.load(checkpoint[0])
    before = {name: dict(vars(layer)) for name, layer in predictor.model.layers}
    predictor.feature_maps(digits(1)[0][0])
    for name, layer in predictor.model.layers:
        assert vars(layer).keys() == before[name].keys(), name
        assert all(vars(layer)[k] is v for k, v in before[name].items()), name


def test_the_page_and_its_files_are_served_with_no_outside_reference(api):
    status, headers, html = api.call("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == PAGE_CSP
    assert 'src="static/app.js"' in html and 'href="static/style.css"' in html
    assert '<canvas id="pad" width="280" height="280"' in html
    for name, kind in zip(STATIC_FILES, ("text/html", "text/javascript", "text/css")):
        status, headers, text = api.call("GET", f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind), name
        assert text == (static_dir() / name).read_text()
        assert not re.search(r"https?://|//cdn|@import", text), f"{name} loads something from outside"


def test_unknown_routes_and_methods_are_json_errors(api):
    status, _, data = api.call("GET", "/api/nothing")
    assert status == 404 and "/api/nothing" in data["error"]
    status, _, data = api.call("GET", "/api/predict")
    assert status == 405 and "GET is not allowed on /api/predict" == data["error"]
    status, _, data = api.call("GET", "/static/missing.js")
    assert status == 404 and "error" in data


# ---------------------------------------------------------------------------------- bad input

def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _bad_requests():
    """(id, (body, content type, extra client options), status, words the error must contain)."""
    good = [[0] * 28 for _ in range(28)]
    digit = png_bytes(digits(1)[0][0])
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)
    gif = io.BytesIO()
    Image.new("L", (40, 40), 255).save(gif, format="GIF")
    deep = b"[" * 100_000 + b"]" * 100_000

    def js(doc):
        return (json.dumps(doc).encode(), "application/json", {})

    def row(r, value):
        pixels = [list(x) for x in good]
        pixels[r][5] = value
        return pixels

    return [
        ("oversized-upload", (big, "image/png", {}), 413, ["too large", "5 MB"]),
        ("oversized-chunked", (big, "image/png", {"chunked": True}), 413, ["too large"]),
        ("oversized-multipart", (*multipart({"image": big}), {}), 413, ["too large"]),
        ("oversized-json", (b"[" + b"0," * (MAX_UPLOAD_BYTES // 2) + b"0]", "application/json", {}),
         413, ["too large"]),
        ("not-an-image", (b"hello, this is text", "image/png", {}), 400, ["not a PNG or JPEG"]),
        ("gif", (gif.getvalue(), "image/png", {}), 400, ["not a PNG or JPEG", "GIF"]),
        ("truncated-png", (digit[:len(digit) // 2], "image/png", {}), 400, ["cannot read image"]),
        ("corrupt-png", (digit[:40] + bytes(200) + digit[240:], "image/png", {}), 400, ["cannot read image"]),
        ("huge-canvas", (_png(Image.new("1", (5000, 5000), 1)), "image/png", {}), 400,
         ["5000x5000", "limit"]),
        ("blank-image", (_png(Image.new("L", (60, 60), 255)), "image/png", {}), 400, ["no digit found"]),
        ("empty-image-file", (*multipart({"image": b""}), {}), 400, ["empty"]),
        ("multipart-no-image", (*multipart({"picture": digit}), {}), 400, ["missing field 'image'", "picture"]),
        ("multipart-text-image", (*multipart({"image": "not a file"}), {}), 400, ["must be a file"]),
        ("multipart-bad-boundary", (b"--x\r\ngarbage", "multipart/form-data; boundary=y", {}), 400,
         ["multipart"]),
        ("rows-27", js({"pixels": good[:27]}), 400, ["28x28", "27 rows"]),
        ("row-of-29", js({"pixels": good[:3] + [[0] * 29] + good[4:]}), 400, ["pixels[3] has 29 values"]),
        ("flat-784", js({"pixels": [0] * 784}), 400, ["flat array of 784"]),
        ("3-d", js({"pixels": [[[0]] * 28] * 28}), 400, ["pixels[0][0] is an array"]),
        ("strings", js({"pixels": row(2, "7")}), 400, ["pixels[2][5] is a string", "0..255"]),
        ("booleans", js({"pixels": row(1, True)}), 400, ["pixels[1][5] is a boolean"]),
        ("null", js({"pixels": row(4, None)}), 400, ["pixels[4][5] is null"]),
        ("object", js({"pixels": {"a": 1}}), 400, ["must be a 28x28 array", "an object"]),
        ("nan", (json.dumps({"pixels": row(6, float("nan"))}).encode(), "application/json", {}), 400,
         ["pixels[6][5] is NaN"]),
        ("infinity", (json.dumps({"pixels": row(7, float("inf"))}).encode(), "application/json", {}),
         400, ["pixels[7][5] is infinite"]),
        ("negative", js({"pixels": row(8, -1)}), 400, ["pixels[8][5] = -1 is outside 0..255"]),
        ("too-bright", js({"pixels": row(9, 256.5)}), 400, ["outside 0..255"]),
        ("missing-field", js({}), 400, ["missing field 'pixels'"]),
        ("unknown-field", js({"pixels": good, "colour": 1}), 400, ["unknown field", "colour"]),
        ("preprocess-not-bool", js({"pixels": good, "preprocess": "yes"}), 400,
         ["'preprocess' must be true or false"]),
        ("preprocess-blank", js({"pixels": good, "preprocess": True}), 400, ["no digit found"]),
        ("not-json", (b"{pixels: 1", "application/json", {}), 400, ["not valid JSON"]),
        ("bad-utf8", (b"\xff\xfe{}", "application/json", {}), 400, ["not valid JSON"]),
        ("deep-json", (deep, "application/json", {}), 400, ["nested too deeply"]),
        ("json-string", js("hello"), 400, ["must be an object", "a string"]),
        ("empty-body", (b"", "application/json", {}), 400, ["body is empty"]),
        ("no-content-type", (b"x", None, {}), 415, ["unsupported Content-Type", "multipart/form-data"]),
        ("text-plain", (b"x", "text/plain", {}), 415, ["'text/plain'"]),
    ]


BAD = _bad_requests()


@pytest.mark.parametrize("endpoint", ["/api/predict", "/api/features", "/api/saliency"])
@pytest.mark.parametrize("request_, status, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_json_error_naming_the_problem(server, endpoint, request_, status, words):
    body, content_type, options = request_
    client = Client(server.url)
    try:
        got, headers, data = client.call("POST", endpoint, body, content_type, **options)
        assert got == status, data
        assert headers["content-type"] == "application/json"
        for word in words:
            assert word in data["error"], data["error"]
        # The server keeps serving, on the same connection when it was kept open.
        got, _, data = client.call("POST", endpoint, {"pixels": [[0] * 28] * 28})
        assert got == 200 and data["label"] in range(10)
    finally:
        client.close()


# ----------------------------------------------------------------------------- concurrency

LOAD_CLIENTS = 4
LOAD_REQUESTS = 2_000
LOAD_DEADLINE_S = 120      # the test stops by itself; on this 2-core machine it takes seconds


def test_load_4_clients_2000_requests_every_answer_correct(server, reference, capsys):
    images, _ = digits(64)
    pngs = [png_bytes(image) for image in images[:8]]
    # Every 8th request is a PNG upload (decoded and prepared on the server); the rest JSON.
    requests, expected = [], []
    for i in range(LOAD_REQUESTS):
        if i % 8 == 7:
            data = pngs[(i // 8) % len(pngs)]
            requests.append((data, "image/png"))
            expected.append(expect(reference, decode_image(data)))
        else:
            image = images[i % len(images)]
            requests.append((json.dumps({"pixels": image.tolist()}).encode(), "application/json"))
            expected.append(expect(reference, image))
    latencies = np.zeros(LOAD_REQUESTS)
    wrong, errors = [], []
    deadline = time.monotonic() + LOAD_DEADLINE_S

    def worker(k):
        client = Client(server.url, timeout=30)
        try:
            for i in range(k, LOAD_REQUESTS, LOAD_CLIENTS):
                if time.monotonic() > deadline:
                    errors.append(f"client {k} stopped at the {LOAD_DEADLINE_S} s deadline")
                    return
                start = time.perf_counter()
                status, _, data = client.call("POST", "/api/predict", *requests[i])
                latencies[i] = time.perf_counter() - start
                label, probs = expected[i]
                if status != 200 or data["label"] != label or not np.array_equal(
                        np.asarray(data["probabilities"], np.float32), probs):
                    wrong.append((i, status, data))
        except Exception as e:  # reported below; a thread must not die silently
            errors.append(f"client {k}: {type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(LOAD_CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_DEADLINE_S + 30)
    wall = time.perf_counter() - start
    assert not errors, errors[:3]
    assert not wrong, f"{len(wrong)} wrong answers, e.g. {wrong[:2]}"
    assert np.all(latencies > 0)
    p50, p99 = np.percentile(latencies * 1000, [50, 99])
    with capsys.disabled():
        print(f"\nserve load test: {LOAD_REQUESTS} requests from {LOAD_CLIENTS} clients in {wall:.2f} s "
              f"({LOAD_REQUESTS / wall:,.0f} req/s), latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")


def test_concurrent_feature_requests_each_get_their_own_maps(server, reference):
    images, _ = digits(8)
    want = {}
    model = reference.eval()
    for i, image in enumerate(images):
        x = pylenet.data.pad_and_normalize(image)
        for _, layer in model.layers[:2]:
            x = layer.forward(x)
        want[i] = x[0]
    failures = []

    def worker(k):
        client = Client(server.url)
        try:
            for rep in range(6):
                i = (k + rep) % len(images)
                status, _, data = client.call("POST", "/api/features", {"pixels": images[i].tolist()})
                c1 = np.asarray(data["layers"][0]["maps"])
                if status != 200 or not np.allclose(c1, want[i], atol=6e-5):
                    failures.append((k, rep, status))
        except Exception as e:
            failures.append(f"{type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]


# -------------------------------------------------------------------------------------- CLI

def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pylenet: error: "), err
    return lines[0]


def test_serve_with_a_missing_checkpoint_stops_with_one_line(tmp_path, capsys):
    line = one_line_error(capsys, "serve", "--model", tmp_path / "nope.ckpt", "--port", 0)
    assert "nope.ckpt" in line


def test_serve_with_a_corrupt_checkpoint_stops_with_one_line(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint" * 20)
    assert "corrupt" in one_line_error(capsys, "serve", "--model", bad, "--port", 0)
    data = bytearray(checkpoint[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert str(bad) in one_line_error(capsys, "serve", "--model", bad, "--port", 0)


def test_serve_with_nan_weights_stops_with_one_line(tmp_path, capsys):
    model = pylenet.LeNet5(seed=0)
    dict(model.named_parameters())["F5.weight"].data[3, 7] = np.nan
    model.save(tmp_path / "nan.ckpt")
    line = one_line_error(capsys, "serve", "--model", tmp_path / "nan.ckpt", "--port", 0)
    assert f"{tmp_path / 'nan.ckpt'}: parameter F5.weight holds NaN or infinity" in line


def test_serve_on_a_busy_port_or_a_bad_port_stops_with_one_line(checkpoint, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        line = one_line_error(capsys, "serve", "--model", checkpoint[0], "--port", port)
        assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "--port must be an int in 0..65535, got 70000" in one_line_error(
        capsys, "serve", "--model", checkpoint[0], "--port", 70000)


def test_serve_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--model CKPT" in out and "127.0.0.1" in out


def test_pylenet_serve_runs_answers_and_stops_on_ctrl_c(checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pylenet", "serve", "--model", str(checkpoint[0]),
                             "--port", "0"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert lines and lines[0], "pylenet serve printed no address"
        m = re.match(r"pylenet serve: (http://127\.0\.0\.1:(\d+)/) \(model .*model\.ckpt, 61,706 parameters\)",
                     lines[0])
        assert m, lines[0]
        client = Client(m.group(1))
        status, _, data = client.call("GET", "/api/model")
        assert status == 200 and data["parameters"] == 61_706
        image = digits(1)[0][0]
        status, _, data = client.call("POST", "/api/predict", {"pixels": image.tolist()})
        assert status == 200 and data["label"] in range(10)
        client.close()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        err = proc.stderr.read()
        assert code == 130, err
        assert "Traceback" not in err and err.strip() == "interrupted", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_probabilities_are_finite_json(api):
    status, _, data = api.call("POST", "/api/predict", {"pixels": [[255] * 28] * 28})
    assert status == 200
    assert all(math.isfinite(p) for p in data["probabilities"])
    assert sum(data["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_the_listening_socket_is_tcp_so_asyncio_turns_nagle_off():
    from pylenet.serve import listen

    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio sets TCP_NODELAY only then
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0


def test_serve_without_the_extras_says_how_to_install_them(checkpoint, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "pylenet.serve")
    monkeypatch.setitem(sys.modules, "uvicorn", None)   # as if it were not installed
    line = one_line_error(capsys, "serve", "--model", checkpoint[0], "--port", 0)
    assert line == ("pylenet: error: pylenet serve needs the serve extra: pip install "
                    "'pylenet[serve]' (missing module uvicorn)")
