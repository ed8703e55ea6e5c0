"""Shared pytest fixtures: where the real MNIST files live, and the repository root."""
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_mnist_dir() -> Path:
    """The canonical MNIST folder: $PYLENET_TEST_MNIST, else ../shared/data/mnist from the repo root."""
    env = os.environ.get("PYLENET_TEST_MNIST")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    path = shared_mnist_dir()
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {path}")
    return path


@pytest.fixture
def restore_threads():
    """The core's thread count is process-wide: tests that change it get it put back afterwards."""
    from pylenet import ops

    before = ops.get_num_threads()
    yield
    ops.set_num_threads(before)


@pytest.fixture(scope="module")
def torch_single_thread():
    """Two OpenMP pools (torch's and the core's) spinning on two shared cores slow both down."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_report_header(config):
    """Names the SIMD level the kernels run at (PYLENET_SIMD forces one)."""
    from pylenet import ops

    info = ops.build_info()
    return f"pylenet SIMD level: {info['simd_used']} (runnable here: {', '.join(info['simd_supported'])})"


class FilesHandler(http.server.BaseHTTPRequestHandler):
    """Serves server.files {name: bytes} under any path; 404 for anything else."""

    def do_GET(self):
        """Serve one generated file."""
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        """Keep request logs out of the test output."""
        pass


@pytest.fixture
def files_server():
    """(server, url): a local HTTP server on 127.0.0.1 serving server.files, logging server.requests."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FilesHandler)
    server.daemon_threads, server.files, server.requests = True, {}, []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/fashion/"
    server.shutdown()
    server.server_close()
