"""`pylenet serve`: a Starlette app on uvicorn with a drawing page and a JSON API for LeNet-5.

GET / is the page (pylenet/static: plain HTML, JS and CSS, no CDN, no build step).
POST /api/predict takes a PNG/JPEG upload (multipart field "image", or the raw bytes as
image/png or image/jpeg) or JSON pixels ({"pixels": 28x28 numbers in 0..255}) and returns the
label, the ten probabilities and the time taken. POST /api/features takes the same input and
adds the feature maps of C1, S2, C3 and S4 and the saliency. POST /api/saliency adds to the
prediction the saliency alone: the gradient of one class's score with respect to the 28x28
input pixels (pylenet.explain.saliency), for the class named by the query ?target=K (default:
the predicted class). GET /api/model describes the model.

Images go through pylenet.images, the preprocessing of `pylenet predict`; JSON pixels are
taken as MNIST pixels (white digit on black) unless "preprocess" is true. Every refusal is a
4xx JSON {"error": message naming the problem}. The model is shared read-only by all
requests: predictions run in the core's fused net (its own mutex, GIL released) and feature
maps run on per-request shallow copies of the layers, so no layer cache is ever shared.
"""
from __future__ import annotations

import functools
import json
import math
import socket
import time
from pathlib import Path

import numpy as np

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    import python_multipart  # noqa: F401  (Starlette's form parser needs it)
except ImportError as e:  # one clear line for the CLI instead of "No module named ..."
    raise ImportError(f"pylenet serve needs the serve extra: pip install 'pylenet[serve]' "
                      f"(missing module {e.name})") from e

from pylenet.checkpoint import load_checkpoint
from pylenet.explain import FEATURE_STAGES, digit_scores, feature_maps, saliencies
from pylenet.images import decode_image, to_mnist
from pylenet.serialize import model_from_checkpoint
from pylenet.train import predict

MAX_UPLOAD_BYTES = 5 * 1024 * 1024     # any request body: an upload or JSON
# A refused body is still read (and dropped) up to this many bytes, so that the client gets
# its 413 rather than a connection reset; a larger one is cut off.
DRAIN_BYTES = 4 * MAX_UPLOAD_BYTES
MAX_IMAGE_PIXELS = 4096 * 4096         # a small file may declare a huge canvas
IMAGE_MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}
IMAGE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")
SIDE = 28                              # JSON pixels: MNIST's 28x28
STATIC_FILES = ("index.html", "app.js", "style.css")
MAP_DECIMALS = 4                       # feature maps are for looking at: 4 decimals suffice
# The page loads only its own files; a CDN reference would be blocked (and a test sees it).
PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'"
SALIENCY_DIGITS = 6                    # significant digits of the saliency (its values are ~1e-4)


class BadInput(ValueError):
    """A request the server refuses: status is the 4xx code, the message names the problem."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def static_dir() -> Path:
    """The folder of the page's files inside the installed package; RuntimeError if any is missing."""
    folder = Path(__file__).resolve().with_name("static")
    missing = [name for name in STATIC_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"pylenet was installed without its page files {missing} in {folder}; "
                           f"reinstall it with pip install '.[serve]'")
    return folder


# ------------------------------------------------------------------------------------ model

class Predictor:
    """A LeNet-5 shared read-only by every request: predictions, feature maps, saliency and a description."""

    def __init__(self, model, *, checkpoint=None, source: str = "model"):
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.source = source
        names = [name for name, _ in model.layers]
        if not set(FEATURE_STAGES) <= set(names):
            raise ValueError(f"{source}: the model has no {sorted(set(FEATURE_STAGES) - set(names))} "
                             f"layers to show")
        for name, param in model.named_parameters():
            if not np.all(np.isfinite(param.data)):
                raise ValueError(f"{source}: parameter {name} holds NaN or infinity (a diverged run?); "
                                 f"its answers would not be numbers")
        # Builds the fused net once, before any request thread could race to build it.
        predict(model, np.zeros((SIDE, SIDE), np.uint8))

    @classmethod
    def load(cls, path) -> "Predictor":
        """The model of a checkpoint file (FileNotFoundError, or CheckpointError naming the problem)."""
        ckpt = load_checkpoint(path)
        return cls(model_from_checkpoint(ckpt, path), checkpoint=ckpt, source=str(path))

    def predict(self, image: np.ndarray) -> dict:
        """{"label", "probabilities"} for one uint8 (28, 28) MNIST-style image."""
        labels, probs = predict(self.model, image)
        return {"label": int(labels[0]), "probabilities": probs[0].tolist()}

    def feature_maps(self, image: np.ndarray) -> list[dict]:
        """C1, S2, C3 and S4 for one uint8 (28, 28) image, each taken after the activation that follows it."""
        return [{"name": name, "layers": layers, "shape": list(maps.shape), "min": float(maps.min()),
                 "max": float(maps.max()), "maps": np.round(maps.astype(np.float64), MAP_DECIMALS).tolist()}
                for name, layers, maps in feature_maps(self.model, image, FEATURE_STAGES)]

    def saliency(self, image: np.ndarray, target: int | None = None) -> dict:
        """{"target", "max_abs", "values"}: the gradient of class target's score (None: the
        predicted class) with respect to the 28x28 pixels, in score per pixel value."""
        if target is None:
            target = int(np.argmax(digit_scores(self.model, image)))
        values = saliencies(self.model, image, [target])[0].astype(np.float64)
        rounded = [[float(f"{v:.{SALIENCY_DIGITS}g}") for v in row] for row in values]
        return {"target": target, "max_abs": float(np.abs(rounded).max()), "values": rounded}

    def describe(self) -> dict:
        """Layers, parameter count, the checkpoint's training metrics and the learned C1 filters."""
        shape, layers = (1, 32, 32), []
        for name, layer in self.model.layers:
            shape = layer.output_shape(shape)
            layers.append({"name": name, "type": repr(layer), "output_shape": list(shape),
                           "parameters": layer.num_parameters()})
        c1 = dict(self.model.layers)["C1"].weight.data
        ckpt = self.checkpoint
        history = _finite(ckpt.extra.get("history", [])) if ckpt is not None else []
        return {
            "name": type(self.model).__name__, "source": Path(self.source).name,
            "config": getattr(self.model, "config", {}), "input_shape": [1, 32, 32],
            "parameters": self.model.num_parameters(), "layers": layers,
            "training": {"epochs": ckpt.epoch if ckpt is not None else 0, "history": history,
                         "final": history[-1] if history else None},
            "c1_filters": {"shape": list(c1.shape), "min": float(c1.min()), "max": float(c1.max()),
                           "weights": np.round(c1[:, 0].astype(np.float64), MAP_DECIMALS).tolist()},
            "limits": {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_image_pixels": MAX_IMAGE_PIXELS},
        }


def _finite(value):
    """JSON-safe copy: NaN and infinities (a diverged epoch's loss) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------------ input

async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 past MAX_UPLOAD_BYTES (declared or actual)."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise BadInput(f"the Content-Length header {declared!r} is not a number")
    too_big = declared is not None and int(declared) > MAX_UPLOAD_BYTES
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        too_big = too_big or size > MAX_UPLOAD_BYTES
        if not too_big:
            chunks.append(chunk)
        elif size > DRAIN_BYTES:
            break
    if too_big:
        total = max(size, int(declared or 0))
        raise BadInput(f"the upload is too large: {total:,} bytes{'+' if size > DRAIN_BYTES else ''}, "
                       f"more than the {MAX_UPLOAD_BYTES:,}-byte (5 MB) limit", 413)
    return b"".join(chunks)


async def _multipart_image(request: Request, body: bytes) -> bytes:
    """The bytes of the "image" file of a multipart/form-data body that was already read."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except HTTPException as e:
        raise BadInput(f"malformed multipart/form-data body: {e.detail}") from e
    except Exception as e:  # python-multipart's parser errors
        raise BadInput(f"malformed multipart/form-data body: {type(e).__name__}: {e}") from e
    try:
        upload = form.get("image")
        if upload is None:
            raise BadInput(f"missing field 'image': the multipart form has fields "
                           f"{sorted(form.keys())}; send the picture as a file named 'image'")
        if isinstance(upload, str):
            raise BadInput("field 'image' must be a file upload, got a text field")
        return await upload.read()
    finally:
        await form.close()


def image_from_bytes(data: bytes) -> np.ndarray:
    """A PNG or JPEG upload as a uint8 (28, 28) digit, by `pylenet predict`'s preprocessing."""
    if not data:
        raise BadInput("the image is empty (0 bytes)")
    if not any(data.startswith(magic) for magic in IMAGE_MAGIC.values()):
        raise BadInput(f"the upload is not a PNG or JPEG image (it starts with {data[:8]!r})")
    try:
        return decode_image(data, name="the upload", formats=tuple(IMAGE_MAGIC),
                            max_pixels=MAX_IMAGE_PIXELS)
    except ValueError as e:
        raise BadInput(str(e)) from e


def image_from_json(body: bytes) -> np.ndarray:
    """{"pixels": 28x28 numbers in 0..255, "preprocess": false} (or the bare array) as uint8 (28, 28)."""
    try:
        doc = json.loads(body)
    except RecursionError as e:
        raise BadInput("the JSON body is nested too deeply") from e
    except ValueError as e:  # also bad UTF-8
        raise BadInput(f"the body is not valid JSON: {e}") from e
    preprocess = False
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"pixels", "preprocess"})
        if unknown:
            raise BadInput(f"unknown field(s) {unknown[:5]}: expected 'pixels' and optionally 'preprocess'")
        if "pixels" not in doc:
            raise BadInput("missing field 'pixels': send {\"pixels\": [[28 numbers in 0..255], ... 28 rows]}")
        preprocess = doc.get("preprocess", False)
        if not isinstance(preprocess, bool):
            raise BadInput(f"field 'preprocess' must be true or false, got {_json_kind(preprocess)}")
        doc = doc["pixels"]
    elif not isinstance(doc, list):
        raise BadInput(f"the JSON body must be an object with a 'pixels' field or a 28x28 array, "
                       f"got {_json_kind(doc)}")
    image = _pixel_array(doc)
    if not preprocess:
        return image
    try:
        return to_mnist(image)
    except ValueError as e:
        raise BadInput(f"pixels: {str(e).removeprefix('image: ')}") from e


def _pixel_array(value) -> np.ndarray:
    """Check a JSON 28x28 array of numbers in 0..255 and round it to uint8; BadInput names the first fault."""
    if not isinstance(value, list):
        raise BadInput(f"field 'pixels' must be a 28x28 array, got {_json_kind(value)}")
    if len(value) == SIDE * SIDE and not any(isinstance(v, list) for v in value):
        raise BadInput("field 'pixels' is a flat array of 784 values; send 28 rows of 28 numbers")
    if len(value) != SIDE:
        raise BadInput(f"field 'pixels' must be a 28x28 array, got {len(value)} rows")
    for i, row in enumerate(value):
        if not isinstance(row, list):
            raise BadInput(f"pixels[{i}] must be an array of 28 numbers, got {_json_kind(row)}")
        if len(row) != SIDE:
            raise BadInput(f"pixels[{i}] has {len(row)} values; the array must be 28x28")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BadInput(f"pixels[{i}][{j}] is {_json_kind(v)}; pixels must be numbers in 0..255")
            if not 0 <= v <= 255:
                if isinstance(v, float) and not math.isfinite(v):
                    raise BadInput(f"pixels[{i}][{j}] is {'NaN' if math.isnan(v) else 'infinite'}; "
                                   f"pixels must be numbers in 0..255")
                raise BadInput(f"pixels[{i}][{j}] = {v!r} is outside 0..255")
    return np.rint(np.asarray(value, dtype=np.float64)).astype(np.uint8)


def _json_kind(v) -> str:
    """How a JSON value reads in an error message, e.g. "a string ('abc')"."""
    kinds = {str: "a string", dict: "an object", list: "an array", bool: "a boolean",
             type(None): "null", int: "a number", float: "a number"}
    kind = kinds.get(type(v), type(v).__name__)
    return kind if v is None or isinstance(v, (dict, list)) else f"{kind} ({json.dumps(v)[:40]})"


def target_from_query(request: Request, classes: int) -> int | None:
    """The ?target=K of a request as a class index, or None (the predicted class) when it is
    absent, empty or "auto"; BadInput names anything else."""
    values = request.query_params.getlist("target")
    if len(values) > 1:
        raise BadInput(f"give ?target= at most once, got it {len(values)} times")
    text = values[0].strip() if values else ""
    if text in ("", "auto"):
        return None
    if not (text.isascii() and text.isdigit()) or int(text) >= classes:
        raise BadInput(f"target must be a class in 0..{classes - 1} or 'auto', got {text[:20]!r}")
    return int(text)


async def _input_image(request: Request) -> np.ndarray:
    """The request's digit as uint8 (28, 28), whichever of the accepted forms it came in."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    accepted = ("send multipart/form-data with an 'image' file, an image/png or image/jpeg body, "
                "or application/json with 'pixels'")
    if media not in ("application/json", "multipart/form-data") + IMAGE_TYPES:
        raise BadInput(f"unsupported Content-Type {content_type or '(none)'!r}: {accepted}", 415)
    body = await _read_body(request)
    if not body:
        raise BadInput(f"the request body is empty: {accepted}")
    if media == "application/json":
        return await run_in_threadpool(image_from_json, body)
    if media == "multipart/form-data":
        body = await _multipart_image(request, body)
    return await run_in_threadpool(image_from_bytes, body)


# -------------------------------------------------------------------------------------- app

def create_app(predictor: Predictor) -> Starlette:
    """The Starlette app: the page, its static files and the JSON API around `predictor`."""
    folder = static_dir()
    description = predictor.describe()

    async def page(request):
        return FileResponse(folder / "index.html", headers={"Content-Security-Policy": PAGE_CSP,
                                                            "Cache-Control": "no-cache"})

    async def api_model(request):
        return JSONResponse(description)

    async def api_predict(request):
        start = time.perf_counter()
        image = await _input_image(request)
        result = await run_in_threadpool(predictor.predict, image)
        result["time_ms"] = 1000 * (time.perf_counter() - start)
        return JSONResponse(result)

    classes = description["layers"][-1]["output_shape"][0]

    async def api_features(request):
        start = time.perf_counter()
        target = target_from_query(request, classes)   # refused before the body is read
        image = await _input_image(request)

        def work():
            result = predictor.predict(image)
            result["input"] = image.tolist()
            result["layers"] = predictor.feature_maps(image)
            result["saliency"] = predictor.saliency(image, target)
            return result

        result = await run_in_threadpool(work)
        result["time_ms"] = 1000 * (time.perf_counter() - start)
        return JSONResponse(result)

    async def api_saliency(request):
        start = time.perf_counter()
        target = target_from_query(request, classes)
        image = await _input_image(request)

        def work():
            result = predictor.predict(image)
            result["input"] = image.tolist()
            result["saliency"] = predictor.saliency(image, target)
            return result

        result = await run_in_threadpool(work)
        result["time_ms"] = 1000 * (time.perf_counter() - start)
        return JSONResponse(result)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/model", api_model, methods=["GET"]),
        Route("/api/predict", api_predict, methods=["POST"]),
        Route("/api/features", api_features, methods=["POST"]),
        Route("/api/saliency", api_saliency, methods=["POST"]),
        Mount("/static", StaticFiles(directory=folder), name="static"),
    ]
    handlers = {BadInput: _bad_input, HTTPException: _http_error, Exception: _server_error}
    return Starlette(routes=routes, exception_handlers=handlers)


async def _bad_input(request, exc: BadInput):
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(request, exc: HTTPException):
    message = {404: f"no such page or endpoint: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request, exc: Exception):
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


# ----------------------------------------------------------------------------------- server

def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one); OSError names the address."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"--port must be an int in 0..65535, got {port!r}")
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)[0]
        # proto must say TCP: asyncio turns Nagle's algorithm off only on such sockets, and
        # without TCP_NODELAY every small answer waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(512)
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def make_server(predictor: Predictor) -> uvicorn.Server:
    """A quiet uvicorn server for the app (run it with .run(sockets=[listen(...)]))."""
    config = uvicorn.Config(create_app(predictor), log_level="warning", access_log=False,
                            server_header=False, timeout_graceful_shutdown=5)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    """The http:// address a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(model_path, *, host: str = "127.0.0.1", port: int = 8000,
          announce=functools.partial(print, flush=True)) -> None:
    """Load the checkpoint, then serve the page and the API on host:port until Ctrl-C."""
    predictor = Predictor.load(model_path)   # a bad checkpoint stops here, before binding
    sock = listen(host, port)
    server = make_server(predictor)
    announce(f"pylenet serve: {url_of(sock)} (model {model_path}, {predictor.model.num_parameters():,} "
             f"parameters); Ctrl-C stops")
    server.run(sockets=[sock])
