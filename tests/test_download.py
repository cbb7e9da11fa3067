"""Downloads against a real HTTP server on 127.0.0.1 serving the shared MNIST files."""

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dlx.data.datasets import REMOTES
from dlx.data.download import Remote, fetch
from dlx.errors import DataError

TEST_FILES = [r for r in REMOTES["mnist"] if r.filename.startswith("t10k")]


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with `Range: bytes=N-` support; records every request it serves."""

    log: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        RangeHandler.log.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start >= len(data) and start:
            return self.send_error(416)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(shared_mnist, tmp_path):
    """Serves a copy of the shared MNIST test files (tests may corrupt the copy)."""
    root = tmp_path / "www"
    root.mkdir()
    for f in shared_mnist.iterdir():
        (root / f.name).write_bytes(f.read_bytes())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.log = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()


def test_download_verifies_and_caches(server, tmp_path):
    url, _ = server
    cache = tmp_path / "cache"
    for remote in TEST_FILES:
        path = fetch(remote, cache, mirror=url, progress=False)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == remote.digest
    assert sorted(p.name for p in cache.iterdir()) == sorted(r.filename for r in TEST_FILES)
    served = len(RangeHandler.log)
    for remote in TEST_FILES:  # second time: straight from the cache, no request
        fetch(remote, cache, mirror=url, progress=False)
    assert len(RangeHandler.log) == served == len(TEST_FILES)


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, root = server
    (root / TEST_FILES[1].filename).write_bytes(b"not the labels")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch(TEST_FILES[1], cache, mirror=url, progress=False)
    assert list(cache.iterdir()) == []  # neither the file nor a .part


def test_falls_back_to_next_mirror(server, tmp_path):
    url, _ = server
    remote = Remote(TEST_FILES[1].filename, (url + "missing/", url), TEST_FILES[1].digest)
    path = fetch(remote, tmp_path / "cache", progress=False)
    assert path.is_file()
    assert [p for p, _ in RangeHandler.log] == ["/missing/" + remote.filename, "/" + remote.filename]


def test_resumes_partial_download(server, tmp_path):
    url, root = server
    remote = TEST_FILES[0]
    data = (root / remote.filename).read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / (remote.filename + ".part")).write_bytes(data[:1000])  # a cut-off earlier attempt
    path = fetch(remote, cache, mirror=url, progress=False)
    assert path.read_bytes() == data
    assert RangeHandler.log == [("/" + remote.filename, "bytes=1000-")]
    assert not (cache / (remote.filename + ".part")).exists()


def test_corrupt_cached_file_is_replaced(server, tmp_path):
    url, _ = server
    cache = tmp_path / "cache"
    cache.mkdir()
    remote = TEST_FILES[1]
    (cache / remote.filename).write_bytes(b"garbage")
    path = fetch(remote, cache, mirror=url, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == remote.digest


def test_unreachable_mirror_is_a_data_error(tmp_path):
    remote = Remote("x.gz", ("http://127.0.0.1:9/",), "0" * 64)
    with pytest.raises(DataError, match="could not download x.gz"):
        fetch(remote, tmp_path, progress=False)


def test_cli_download_checksum_failure_exits_2(server, dlx, workdir):
    url, root = server
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b tampered")
    proc = dlx("data", "download", "mnist", "--mirror", url)
    assert proc.returncode == 2
    assert "could not download train-images-idx3-ubyte.gz" in proc.stderr
    assert "sha256 mismatch" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not any((workdir / "cache").rglob("train-*"))


def test_tinyshakespeare_downloads_with_its_published_sha256(tmp_path, dlx, workdir):
    """`dlx data download tinyshakespeare` from a local mirror of the shared corpus, checked against
    the sha256 dlx publishes for karpathy/char-rnn's input.txt."""
    corpus = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        pytest.skip(f"tiny-shakespeare not found at {corpus} (the ../shared checkout is absent)")
    root = tmp_path / "www"
    root.mkdir()
    (root / "input.txt").write_bytes(corpus.read_bytes())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        dlx("data", "download", "tinyshakespeare", "--mirror", f"http://127.0.0.1:{httpd.server_address[1]}/", check=True)
    finally:
        httpd.shutdown()
    cached = workdir / "cache" / "tinyshakespeare" / "input.txt"
    assert cached.stat().st_size == 1115394
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == REMOTES["tinyshakespeare"][0].digest
