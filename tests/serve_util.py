"""Helpers for the `pylenet serve` tests: a test model, a real server on 127.0.0.1 in a thread, an HTTP client."""
from __future__ import annotations

import http.client
import io
import json
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

import pylenet
from conftest import shared_mnist_dir
from pylenet.optim import SGD

TRAIN_IMAGES = 10_000   # one epoch on these: about 93% on MNIST's test set, in about a second


def make_checkpoint(folder: Path) -> tuple[Path, bool]:
    """A LeNet-5 checkpoint: trained for one short epoch on real MNIST when it is here, else untrained."""
    path = folder / "model.ckpt"
    model = pylenet.LeNet5(seed=0)
    mnist = shared_mnist_dir()
    if not (mnist / "train-images-idx3-ubyte.gz").exists():
        model.save(path)
        return path, False
    train = pylenet.load_mnist("train", root=mnist, download=False, progress=False)
    test = pylenet.load_mnist("test", root=mnist, download=False, progress=False)
    pylenet.fit(model, (train[0][:TRAIN_IMAGES], train[1][:TRAIN_IMAGES]), epochs=1,
                optimizer=SGD(model.parameters(), lr=0.02, momentum=0.9), progress=False,
                validation=(test[0][:1000], test[1][:1000]), checkpoint=path)
    return path, True


def digits(count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """count uint8 (28, 28) test digits and their labels: real MNIST when it is here, else random strokes."""
    mnist = shared_mnist_dir()
    if (mnist / "t10k-images-idx3-ubyte.gz").exists():
        images, labels = pylenet.load_mnist("test", root=mnist, download=False, progress=False)
        return images[:count], labels[:count]
    rng = np.random.default_rng(0)
    images = np.zeros((count, 28, 28), np.uint8)
    for img in images:
        r, c = rng.integers(6, 22, size=2)
        img[r - 4:r + 4, c - 2:c + 2] = rng.integers(128, 256, size=(8, 4))
    return images, None


def png_bytes(image: np.ndarray, *, fmt: str = "PNG", size: int = 112) -> bytes:
    """An MNIST digit as a camera would see it: dark ink on white, scaled to size x size."""
    from PIL import Image

    big = Image.fromarray(255 - image).resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def multipart(fields: dict) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data form; bytes values are sent as files."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n").encode()
            parts.append(b"--" + boundary.encode() + b"\r\n" + head + value + b"\r\n")
        else:
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            parts.append(b"--" + boundary.encode() + b"\r\n" + head + str(value).encode() + b"\r\n")
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """A keep-alive HTTP/1.1 connection to one server; call() returns (status, headers, parsed JSON or text)."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def call(self, method: str, path: str, body=None, content_type: str | None = None,
             headers: dict | None = None, chunked: bool = False):
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body).encode(), content_type or "application/json"
        hdrs = dict(headers or {})
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        if chunked:  # no Content-Length: the server learns the size only by reading
            data, step = body, 1 << 20
            body = (data[i:i + step] for i in range(0, len(data), step))
        self.conn.request(method, path, body=body, headers=hdrs, encode_chunked=chunked)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()  # http.client reconnects on the next request
        kind = resp.getheader("content-type", "")
        data = json.loads(raw) if kind.startswith("application/json") else raw.decode("utf-8", "replace")
        return resp.status, resp.headers, data

    def close(self):
        self.conn.close()


class ServerThread:
    """The app on a uvicorn server bound to 127.0.0.1 on a free port, run in a daemon thread."""

    def __init__(self, predictor):
        from pylenet.serve import listen, make_server, url_of

        self.sock = listen("127.0.0.1", 0)
        self.url = url_of(self.sock)
        self.server = make_server(predictor)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to shut down and wait for it (at most 15 s)."""
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    def __exit__(self, *exc):
        self.stop()
