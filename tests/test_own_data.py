"""Your own data, and the image sets that come as archives: CIFAR-10 (a real-format archive served
from 127.0.0.1), CSV tables and folders of images (written by the tests)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import threading
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_cfg
from test_download import RangeHandler

from dlx.config import ns


# --------------------------------------------------------------------------- CIFAR-10
def cifar_batch(n: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """A batch as the CIFAR-10 python archive pickles it (bytes keys, N x 3072 uint8 in R, G, B
    planes); each class has its own colour, so a model can learn it."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    colours = np.random.default_rng(99).integers(0, 256, (10, 3))
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    return {b"batch_label": b"batch", b"labels": labels.tolist(), b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(n)]}, images, labels


def write_cifar(path: Path, per_batch: int = 40, n_test: int = 60, evil: bool = False) -> dict:
    batches = {f"data_batch_{i}": cifar_batch(per_batch, i) for i in range(1, 6)} | {"test_batch": cifar_batch(n_test, 0)}
    with tarfile.open(path, "w:gz") as archive:
        members = {name: pickle.dumps(b[0], protocol=2) for name, b in batches.items()}
        members["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2)
        if evil:
            members["test_batch"] = pickle.dumps(Evil(), protocol=2)
        for name, raw in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return batches


class Evil:
    def __reduce__(self):
        return (print, ("owned",))


@pytest.fixture
def cifar_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    batches = write_cifar(root / "cifar-10-python.tar.gz")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, batches
    httpd.shutdown()


def test_cifar10_downloads_checks_md5_and_reads_the_pickled_batches(cifar_server, workdir, monkeypatch):
    from dlx.data import cifar, datasets
    from dlx.data.download import Remote

    url, root, batches = cifar_server
    md5 = hashlib.md5((root / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setitem(cifar.REMOTES, "cifar10", [Remote(cifar.ARCHIVE, (url,), md5, "md5")])  # the test archive's own md5
    cfg = tiny_cfg("dataset=cifar10", "dataset.val_size=20")
    data = datasets.load(ns(cfg["dataset"]))
    assert (workdir / "cache" / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert data.spec.input_shape == (32, 32, 3) and data.spec.class_names[3] == "cat"
    assert len(data.train) == 180 and len(data.val) == 20 and len(data.test) == 60
    _, images, labels = batches["test_batch"]
    np.testing.assert_allclose(data.test.x, images / 255.0, atol=1e-6)  # planes -> HWC, exactly
    np.testing.assert_array_equal(data.test.y, labels)
    from dlx.commands.train import train

    metrics, _ = train(tiny_cfg("dataset=cifar10", "dataset.val_size=20", "model=cnn", "trainer.epochs=8",
                                "optimizer.lr=3e-3"), workdir / "run")
    assert metrics["test_accuracy"] > 0.5  # colours per class: easy, but only if the pixels are read right


def test_cifar10_refuses_a_wrong_md5_and_pickled_code(cifar_server, dlx, workdir):
    url, root, _ = cifar_server
    proc = dlx("data", "download", "cifar10", "--mirror", url)  # the published md5 is not this archive's
    assert proc.returncode == 2 and "md5 mismatch" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not any((workdir / "cache").rglob("cifar-10-python.tar.gz"))
    write_cifar(workdir / "evil.tar.gz", evil=True)
    proc = dlx("train", "dataset=cifar10", "dataset.path=evil.tar.gz", "logger=none", "hydra.run.dir=run")
    assert proc.returncode == 2 and "refusing to load __builtin__.print" in proc.stderr and "owned" not in proc.stdout
    (workdir / "cut.tar.gz").write_bytes((root / "cifar-10-python.tar.gz").read_bytes()[:5000])
    proc = dlx("train", "dataset=cifar10", "dataset.path=cut.tar.gz", "logger=none", "hydra.run.dir=run")
    assert proc.returncode == 2 and "not a readable cifar-10-python.tar.gz" in proc.stderr
    assert not (workdir / "run").exists()


# --------------------------------------------------------------------------- CSV tables
def write_table(path: Path, n: int = 1500, seed: int = 0) -> None:
    """The label depends on a numeric and a categorical column together (XOR-like: no single column
    decides it); a noise column, a constant-type id, and some empty cells."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 100, n).round(1)
    colour = rng.choice(["red", "green", "blue"], n)
    label = np.where((age > 50) ^ (colour == "red"), "yes", "no")
    frame = pd.DataFrame({"id": np.arange(n), "age": age, "colour": colour, "noise": rng.normal(size=n).round(3),
                          "label": label})
    frame.loc[rng.choice(n, 20, replace=False), "noise"] = np.nan  # imputed with the training median
    frame.loc[rng.choice(n, 10, replace=False), "colour"] = np.nan  # its own category, "<missing>"
    frame.to_csv(path, index=False)


CSV_TRAIN = ["model=mlp", "dataset=csv", "dataset.path=table.csv", "dataset.target=label", "dataset.drop=[id]",
             "trainer.epochs=60", "trainer.batch_size=64", "optimizer.lr=3e-3", "logger=none", "hydra.run.dir=run"]


def test_csv_trains_evaluates_predicts_and_serves(dlx, workdir):
    write_table(workdir / "table.csv")
    dlx("train", *CSV_TRAIN, check=True)
    run = workdir / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, metrics
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(2, 1502))  # CSV lines, each once
    spec = json.loads((run / "data_spec.json").read_text())
    assert [c["name"] for c in spec["columns"]] == ["age", "colour", "noise"] and spec["class_names"] == ["no", "yes"]
    colour = next(c for c in spec["columns"] if c["name"] == "colour")
    assert colour["categories"] == ["<missing>", "blue", "green", "red"]
    assert f"{metrics['test_accuracy']:.4f}" in dlx("eval", "run=run", check=True).stdout

    # new rows: no target, columns in another order, a colour never seen in training
    (workdir / "new.csv").write_text("colour,noise,age\nred,0.1,80\nblue,,80\ngreen,0.3,10\npurple,0,10\n")
    proc = dlx("predict", "run=run", "inputs=new.csv", check=True)
    classes = [line.split()[1] for line in proc.stdout.strip().splitlines()]
    assert classes[:3] == ["no", "yes", "no"] and classes[3] in ("no", "yes"), proc.stdout

    (workdir / "typo.csv").write_text("colour,noise,age\nred,0.1,eighty\n")
    proc = dlx("predict", "run=run", "inputs=typo.csv")
    assert proc.returncode == 2 and "typo.csv: row 2, column age: 'eighty' is not a finite number" in proc.stderr
    (workdir / "short.csv").write_text("colour,age\nred,80\n")
    proc = dlx("predict", "run=run", "inputs=short.csv")
    assert proc.returncode == 2 and "missing column(s) noise" in proc.stderr

    from fastapi.testclient import TestClient
    from test_serve import SETTINGS, signed_call

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore

    state = workdir / "state"
    key = KeyStore(state).add("csv")
    call = signed_call(*key)
    call.key = key
    with TestClient(create_app(str(run), SETTINGS | {"state_dir": str(state)})) as client:
        r = call(client, "/v1/predict", {"inputs": [{"age": 80, "colour": "red", "noise": 0.1},
                                                     {"colour": "blue", "age": 80, "noise": None}]})
        assert r.status_code == 200, r.text
        assert [p["class"] for p in r.json()["predictions"]] == ["no", "yes"]
        r = call(client, "/v1/predict", {"inputs": [{"age": "old", "colour": "red", "noise": 0}]})
        assert r.status_code == 422 and "row 0, column age: 'old' is not a finite number" in r.json()["error"]
        body = b'{"inputs": [{"age": Infinity, "colour": "red", "noise": 0}]}'  # Python's json reads it
        from dlx.serve.auth import signed_headers

        r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"} | signed_headers(
            *call.key, "POST", "/v1/predict", "", body))
        assert r.status_code == 422 and "column age: inf is not a finite number" in r.json()["error"], r.text
        r = call(client, "/v1/predict", {"inputs": [[1, 2, 3]]})
        assert r.status_code == 422 and "expected an object" in r.json()["error"]
        r = call(client, "/v1/predict", {"inputs": [{"age": {"$gt": 1}, "colour": "red", "noise": 0}]})
        assert r.status_code == 422 and "expected a number or a string" in r.json()["error"]


@pytest.mark.parametrize("content, args, message", [
    ("a,b\n1,x\n2,y\n", ["dataset.target=c"], "dataset.target: no column 'c' in"),
    ("a,b\n1,x\n2,y\n", [], "dataset.target: name the column to predict"),
    ("a,b,label\n1,,x\n2,,y\n3,,x\n", ["dataset.target=label"], "column b is empty in every row; leave it out with dataset.drop=[b]"),
    ("a,label\n" + "".join(f"{i},{'xy'[i % 2]}\n" for i in range(40)) + "oops,x\n", ["dataset.target=label"],
     "row 42, column a: 'oops' is not a finite number (fix it, or list a in dataset.categorical)"),
    ("a,label\n1,x\n2,y\ninf,x\n", ["dataset.target=label"], "row 4, column a: "),
    ("a,label\n1,x\n2,\n", ["dataset.target=label"], "row 3 has no label (the target)"),
    ("", ["dataset.target=label"], "empty; expected a header row"),
])
def test_csv_mistakes_are_one_line_exit_2(dlx, workdir, content, args, message):
    (workdir / "t.csv").write_text(content)
    proc = dlx("train", "model=mlp", "dataset=csv", "dataset.path=t.csv", *args, "logger=none", "hydra.run.dir=run")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (workdir / "run").exists()
    proc = dlx("train", "model=mlp", "dataset=csv", "dataset.path=nope.csv", "dataset.target=x", "logger=none")
    assert proc.returncode == 2 and "dataset.path=nope.csv: no such file" in proc.stderr


def test_a_large_csv_read_in_chunks_keeps_each_value_as_written(tmp_path):
    """pandas parses a large file in chunks; a column that looks numeric in one chunk and has words
    in another must keep every value's spelling (leading zeros), and a typo late in a numeric
    column is still found with its line."""
    from conftest import compose

    from dlx.data import table
    from dlx.errors import DataError

    n = 300_000  # large enough for several chunks
    i = np.arange(n)
    code = np.char.add("0", (i % 3).astype(str)).astype(object)
    code[-1] = "AB-12"
    value = (i % 7).astype(str).astype(object)
    lines = ["code,value,label"] + [f"{c},{v},{'xy'[k % 2]}" for k, (c, v) in enumerate(zip(code, value))]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    cfg = compose(["dataset=csv", f"dataset.path={tmp_path / 'big.csv'}", "dataset.target=label",
                   "dataset.categorical=[code]"]).dataset
    data = table.load(cfg)
    codes = next(c for c in data.spec.columns if c["name"] == "code")
    assert codes["kind"] == "categorical" and set(codes["categories"]) - {"AB-12"} == {"00", "01", "02"}, codes["categories"]
    lines[-1] = "01,eighty,x"
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"row {n + 1}, column value: 'eighty' is not a finite number"):
        table.load(cfg)


@pytest.mark.parametrize("family", ["softmax", "logistic_regression", "gda", "naive_bayes", "svm"])
def test_csv_works_with_the_families_that_read_rows(dlx, workdir, family):
    write_table(workdir / "table.csv", n=600)
    extra = ["model.event=bernoulli"] if family == "naive_bayes" else []
    dlx("train", f"model={family}", "dataset=csv", "dataset.path=table.csv", "dataset.target=label", "dataset.drop=[id]",
        *extra, "logger=none", "hydra.run.dir=run", check=True)
    assert json.loads((workdir / "run" / "metrics.json").read_text())["test_accuracy"] > 0.4


def test_csv_regression(dlx, workdir):
    import pandas as pd

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 400)
    pd.DataFrame({"x": x, "kind": rng.choice(["a", "b"], 400), "y": 3 * x + 1}).to_csv(workdir / "r.csv", index=False)
    dlx("train", "model=linear_regression", "dataset=csv", "dataset.path=r.csv", "dataset.target=y",
        "dataset.task=regression", "logger=none", "hydra.run.dir=run", check=True)
    assert json.loads((workdir / "run" / "metrics.json").read_text())["test_r2"] > 0.95


# --------------------------------------------------------------------------- folders of images
def write_folder(root: Path, per_class: int = 40, seed: int = 0, classes=("circle", "square", "stripes")) -> Path:
    """One folder per class, a distinct shape each, on random colours; sizes 40..90 px a side, and
    PNG, JPEG, greyscale BMP and palette GIF in turn."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 80, 3)))
            fg = tuple(int(v) for v in rng.integers(150, 256, 3))
            draw = ImageDraw.Draw(im)
            if c == "circle":
                draw.ellipse([w * 0.2, h * 0.2, w * 0.8, h * 0.8], fill=fg)
            elif c == "square":
                draw.rectangle([w * 0.25, h * 0.25, w * 0.75, h * 0.75], fill=fg)
            else:
                for x in range(0, w, 8):
                    draw.rectangle([x, 0, x + 3, h], fill=fg)
            [lambda: im.save(root / c / f"{i}.png"), lambda: im.save(root / c / f"{i}.jpg", quality=90),
             lambda: im.convert("L").save(root / c / f"{i}.bmp"), lambda: im.convert("P").save(root / c / f"{i}.gif")][i % 4]()
    return root


FOLDER_TRAIN = ["dataset=image_folder", "dataset.path=photos", "trainer.epochs=25", "trainer.batch_size=16",
                "optimizer.lr=3e-3", "logger=none", "hydra.run.dir=run"]


def test_an_image_folder_trains_streams_predicts_and_serves(dlx, workdir):
    write_folder(workdir / "photos")
    (workdir / "photos" / "circle" / "notes.txt").write_text("not an image")  # skipped, counted
    proc = dlx("train", "model=cnn", *FOLDER_TRAIN, check=True)
    assert "1 of 121 files skipped" in (workdir / "run" / "train.log").read_text()
    run = workdir / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, metrics
    spec = json.loads((run / "data_spec.json").read_text())
    assert spec["class_names"] == ["circle", "square", "stripes"] and spec["layout"] == "photo"
    assert spec["input_shape"][2] == 3 and max(spec["input_shape"][:2]) <= 64
    split = json.loads((run / "split.json").read_text())
    files = split["train"] + split["val"] + split["test"]
    assert len(files) == len(set(files)) == 120 and len(split["test"]) == 12
    assert {Path(f).parts[0] for f in split["test"]} == {"circle", "square", "stripes"}  # stratified
    assert f"{metrics['test_accuracy']:.4f}" in dlx("eval", "run=run", check=True).stdout

    write_folder(workdir / "new", per_class=4, seed=7)
    proc = dlx("predict", "run=run", "inputs=new/*/*", check=True)
    lines = proc.stdout.strip().splitlines()
    correct = sum(Path(line.split()[0]).parent.name == line.split()[1] for line in lines)
    assert len(lines) == 12 and correct >= 10, proc.stdout

    from fastapi.testclient import TestClient
    from test_serve import SETTINGS

    from dlx.serve.app import create_app
    from dlx.serve.auth import KeyStore, signed_headers
    from dlx.serve.client import multipart

    state = workdir / "state"
    key_id, secret = KeyStore(state).add("photos")
    png = (workdir / "new" / "square" / "0.png").read_bytes()
    body, kind = multipart([("file", "0.png", png)], {})
    with TestClient(create_app(str(run), SETTINGS | {"state_dir": str(state)})) as client:
        r = client.post("/v1/predict", content=body,
                        headers={"Content-Type": kind} | signed_headers(key_id, secret, "POST", "/v1/predict", "", body))
        assert r.status_code == 200 and r.json()["predictions"][0]["class"] == "square", r.text


def test_streamed_batches_hold_what_the_files_hold(tmp_path):
    """The tf.data stream decodes the same pixels as `ImageFiles[...]`, each epoch a permutation
    fixed by (seed, epoch); augmentation changes training batches only."""
    from dlx.data import datasets
    from dlx.training.batches import EpochBatches, in_order

    write_folder(tmp_path / "photos", per_class=8)
    cfg = tiny_cfg("dataset=image_folder", f"dataset.path={tmp_path / 'photos'}", "dataset.image_size=[24,20]",
                   "dataset.color=grayscale")["dataset"]
    data = datasets.load(ns(cfg))
    files = data.train.x
    assert files.shape == (len(data.train), 24, 20, 1)
    ordered = np.concatenate([x for x, _ in in_order(files, data.train.y, 5)])
    np.testing.assert_allclose(ordered, files[np.arange(len(files))], atol=1e-6)
    assert 0 <= ordered.min() and ordered.max() <= 1

    batches = EpochBatches(files, data.train.y, 5, seed=3, shuffle=True)
    first = np.concatenate([y for _, y in batches.dataset])
    again = np.concatenate([y for _, y in batches.dataset])
    batches.on_epoch_begin(1)
    other = np.concatenate([y for _, y in batches.dataset])
    assert (first == again).all() and sorted(first) == sorted(data.train.y) and not (first == other).all()

    cached = EpochBatches(files, data.train.y, 5, seed=3, shuffle=True, cache=str(tmp_path / "decoded"))
    for _ in range(2):  # the first epoch writes the cache file, the second reads it
        assert sorted(np.concatenate([y for _, y in cached.dataset])) == sorted(data.train.y)
    assert (tmp_path / "decoded.index").is_file()

    # a writer killed mid-epoch leaves TensorFlow's lock file: the next run removes it and writes
    (tmp_path / "killed_0.lockfile").write_text("Created at: 1796423272")
    again = EpochBatches(files, data.train.y, 5, seed=3, shuffle=True, cache=str(tmp_path / "killed"))
    assert sorted(np.concatenate([y for _, y in again.dataset])) == sorted(data.train.y)
    assert (tmp_path / "killed.index").is_file() and not (tmp_path / "killed_0.lockfile").exists()
    # while another run writes a cache, this one decodes every epoch instead of failing on its lock
    import fcntl

    with open(tmp_path / "busy.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other = EpochBatches(files, data.train.y, 5, seed=3, shuffle=True, cache=str(tmp_path / "busy"))
        for _ in range(2):
            assert sorted(np.concatenate([y for _, y in other.dataset])) == sorted(data.train.y)
        assert not list(tmp_path.glob("busy.index")) and not list(tmp_path.glob("busy_*"))

    noisy = EpochBatches(files, data.train.y, 100, seed=3, shuffle=False, augment={"flip": True, "contrast": 0.5})
    changed = next(iter(noisy.dataset))[0].numpy()
    assert changed.shape == ordered.shape and not np.allclose(changed, ordered)


@pytest.mark.parametrize("make, args, message", [
    (lambda root: (root / "a").mkdir(parents=True) or (root / "b").mkdir(), [], "class folder a has no files"),
    (lambda root: write_folder(root, per_class=4, classes=("only",)), [], "one class folder (only); a classifier needs two"),
    (lambda root: root.mkdir(), [], "no class folders"),
    (lambda root: write_folder(root, per_class=8) and (root / "circle" / "x.jpg").write_bytes(b"\xff\xd8 cut"),
     ["dataset.on_bad_file=error"], "x.jpg: not a readable image"),
    (lambda root: None, [], "dataset.path=photos: no such directory"),
    (lambda root: write_folder(root, per_class=8), ["dataset.augment.rotation=2"], "dataset.augment.rotation: 2.0 is outside"),
    (lambda root: write_folder(root, per_class=8), ["dataset.cache=/nonexistent/dir/c"],
     "dataset.cache=/nonexistent/dir/c: /nonexistent/dir is not a folder this user can write in"),
])
def test_image_folder_mistakes_are_one_line_exit_2(dlx, workdir, make, args, message):
    make(workdir / "photos")
    proc = dlx("train", "model=mlp", "dataset=image_folder", "dataset.path=photos", *args, "logger=none", "hydra.run.dir=run")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (workdir / "run").exists()


def test_a_cache_file_is_never_read_for_other_images(dlx, workdir):
    """dataset.cache names its file after the training files, size and colour: a second run with
    another image_size writes its own cache instead of reading 16x16 images as 24x24 ones, and a
    run like the first reuses the first's file."""
    write_folder(workdir / "photos", per_class=8)
    common = ["model=mlp", "dataset=image_folder", "dataset.path=photos", "dataset.cache=decoded", "trainer.epochs=2",
              "logger=none"]
    for i, size in enumerate((16, 24, 16)):
        dlx("train", *common, f"dataset.image_size=[{size},{size}]", f"hydra.run.dir=run{i}", check=True)
        assert json.loads((workdir / f"run{i}" / "metrics.json").read_text())["test_accuracy"] >= 0
    assert len({p.name.split(".")[0] for p in workdir.glob("decoded-*")}) == 2


def test_image_folder_own_split_folders_and_in_memory_families(dlx, workdir):
    """train/ + test/ folders: the test is the user's; validation comes out of train. A family that
    needs every example at once (naive_bayes) gets them decoded into memory."""
    write_folder(workdir / "photos" / "train", per_class=20)
    write_folder(workdir / "photos" / "test", per_class=5, seed=5)
    dlx("train", "model=naive_bayes", "dataset=image_folder", "dataset.path=photos", "dataset.image_size=[16,16]",
        "dataset.color=grayscale", "logger=none", "hydra.run.dir=run", check=True)
    split = json.loads((workdir / "run" / "split.json").read_text())
    assert len(split["test"]) == 15 and all(f.startswith("test/") for f in split["test"])
    assert all(f.startswith("train/") for f in split["train"] + split["val"]) and len(split["val"]) == 6
