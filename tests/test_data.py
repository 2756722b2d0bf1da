"""jaxnet.download and jaxnet.data on files in the official format: download and safe
extraction, loading, preprocessing, .npz."""
import hashlib
import http.server
import io
import os
import pickle
import re
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest

from cifar_format import write_cifar10
from conftest import REPO
from jaxnet.data import get_CIFAR10_data, load_CIFAR10, load_npz
from jaxnet.download import DownloadError, download_cifar10

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
SCRIPT = REPO / "scripts" / "get_cifar10.py"


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def listing(root):
    return sorted(os.listdir(root))


def copy_fixture(cifar_fixture, tmp_path):
    """A writable copy of the fixture's batch folder."""
    return shutil.copytree(cifar_fixture / FOLDER, tmp_path / FOLDER)


def read_raw(path):
    """A batch decoded independently of jaxnet: (data uint8 (n, 3072), labels list)."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return batch[b"data"], batch[b"labels"]


# ----------------------------------------------------------------------------- loading

def test_load_fixture_shapes_dtypes_labels(cifar_fixture):
    X_train, y_train, X_test, y_test = load_CIFAR10(cifar_fixture)
    assert X_train.shape == (200, 32, 32, 3) and X_test.shape == (200, 32, 32, 3)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert y_train.shape == (200,) and y_test.shape == (200,)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    for y in (y_train, y_test):
        assert np.array_equal(np.bincount(y, minlength=10), np.full(10, 20))
    assert 0 <= X_train.min() and X_train.max() <= 255

    X64, y64, _, _ = load_CIFAR10(cifar_fixture / FOLDER, dtype=np.float64)
    assert X64.dtype == np.float64
    assert np.array_equal(X64, X_train) and np.array_equal(y64, y_train)


def test_load_matches_archive_pixel_by_pixel(cifar_fixture):
    X_train, y_train, X_test, y_test = load_CIFAR10(cifar_fixture)
    for X, y, names in ((X_train, y_train, TRAIN_FILES), (X_test, y_test, ["test_batch"])):
        raws = [read_raw(cifar_fixture / FOLDER / name) for name in names]
        data = np.concatenate([d for d, _ in raws])
        assert np.array_equal(y, np.concatenate([labels for _, labels in raws]))
        # The format stores each image as 1024 red, 1024 green, 1024 blue values, row-major.
        i, r, c, ch = np.indices(X.shape).reshape(4, -1)
        assert np.array_equal(X[i, r, c, ch], data[i, ch * 1024 + r * 32 + c])


def test_missing_folder_says_where_and_how_to_download(tmp_path):
    where = tmp_path / "nowhere"
    for load in (load_CIFAR10, get_CIFAR10_data):
        with pytest.raises(FileNotFoundError) as info:
            load(where)
        assert str(where) in str(info.value)
        assert f"python scripts/get_cifar10.py --root {where}" in str(info.value)


def test_missing_and_truncated_batches_name_the_file(cifar_fixture, tmp_path):
    folder = copy_fixture(cifar_fixture, tmp_path)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    with pytest.raises(ValueError, match="data_batch_3.*truncated"):
        load_CIFAR10(tmp_path)
    (folder / "test_batch").unlink()
    shutil.copy(cifar_fixture / FOLDER / "data_batch_3", batch)
    with pytest.raises(ValueError, match="test_batch is missing"):
        load_CIFAR10(tmp_path)


def test_labels_out_of_range_name_the_file(cifar_fixture, tmp_path):
    folder = copy_fixture(cifar_fixture, tmp_path)
    with open(folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")      # bytes keys, as Python 3 re-saves them
    batch[b"labels"][5] = 12
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump(batch, f, protocol=4)
    with pytest.raises(ValueError, match=r"data_batch_2.*\[0, 12\]"):
        load_CIFAR10(tmp_path)


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_pickle_calling_anything_else_is_refused(cifar_fixture, tmp_path):
    folder = copy_fixture(cifar_fixture, tmp_path)
    canary = tmp_path / "canary"       # such a payload does run under a plain pickle.loads
    pickle.loads(pickle.dumps(_RunsShell(f"touch {canary}"), protocol=2))
    assert canary.exists()

    evil = tmp_path / "evil_ran"
    payload = pickle.dumps({"data": _RunsShell(f"touch {evil}"), "labels": [0]}, protocol=2)
    (folder / "data_batch_1").write_bytes(payload)
    for load in (load_CIFAR10, get_CIFAR10_data):
        with pytest.raises(pickle.UnpicklingError, match=r"data_batch_1.*\bsystem\b") as info:
            load(tmp_path)
        assert isinstance(info.value, ValueError)     # scripts report it in one line
    assert not evil.exists()


# ----------------------------------------------------------------------------- preprocessing

def test_get_data_splits_rows_and_mean(cifar_fixture):
    X, y, X_test, y_test = load_CIFAR10(cifar_fixture)
    rows, test_rows = X.reshape(len(X), -1), X_test.reshape(len(X_test), -1)
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=30, num_test=50)
    assert {k: v.shape for k, v in d.items()} == {
        "X_train": (150, 3072), "y_train": (150,), "X_val": (30, 3072), "y_val": (30,),
        "X_test": (50, 3072), "y_test": (50,), "mean_image": (3072,)}
    assert all(d[k].dtype == np.float32 for k in ("X_train", "X_val", "X_test", "mean_image"))
    np.testing.assert_allclose(d["mean_image"], rows[:150].mean(0, dtype=np.float64), atol=1e-4)
    assert np.abs(d["X_train"].mean(0, dtype=np.float64)).max() < 1e-3
    # Row i is image i flattened (H, W, C) minus the mean; validation follows training.
    np.testing.assert_allclose(d["X_train"], rows[:150] - d["mean_image"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(d["X_val"], rows[150:180] - d["mean_image"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(d["X_test"], test_rows[:50] - d["mean_image"], rtol=0, atol=1e-4)
    assert np.array_equal(d["y_train"], y[:150]) and np.array_equal(d["y_val"], y[150:180])
    assert np.array_equal(d["y_test"], y_test[:50])


def test_get_data_without_mean_and_in_float64(cifar_fixture):
    X, _, _, _ = load_CIFAR10(cifar_fixture)
    d = get_CIFAR10_data(cifar_fixture, num_training=200, num_validation=0, num_test=200,
                         subtract_mean=False, dtype=np.float64)
    assert d["X_train"].dtype == np.float64 and d["X_val"].shape == (0, 3072)
    assert np.array_equal(d["X_train"], X.reshape(200, -1))
    assert np.array_equal(d["mean_image"], np.zeros(3072))


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_training=0), "num_training must be >= 1; got 0"),
    (dict(num_training=-5), "num_training must be >= 1; got -5"),
    (dict(num_validation=-1), "num_validation must be >= 0; got -1"),
    (dict(num_test=-1), "num_test must be >= 0; got -1"),
    (dict(num_training=2.5), "num_training must be an integer"),
    (dict(num_training=190, num_validation=20), "190 \\+ 20 = 210 exceeds the 200"),
    (dict(num_training=100, num_validation=10, num_test=201), "num_test = 201 exceeds the 200"),
    (dict(num_training=100, dtype=np.int32), "floating"),
])
def test_get_data_bad_arguments(cifar_fixture, kwargs, message):
    kwargs = {"num_validation": 10, "num_test": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        get_CIFAR10_data(cifar_fixture, **kwargs)


# ----------------------------------------------------------------------------- .npz

def npz_arrays(seed=0, D=4):
    rng = np.random.RandomState(seed)
    return {"X_train": rng.randn(6, D), "y_train": np.array([0, 1, 2, 0, 1, 2]),
            "X_val": rng.randn(3, D), "y_val": np.array([2, 1, 0], np.int32),
            "X_test": rng.randn(2, D), "y_test": np.array([3, 0])}


def test_load_npz_round_trip(tmp_path):
    arrays = npz_arrays()
    np.savez(tmp_path / "d.npz", **arrays)
    data = load_npz(tmp_path / "d.npz")
    assert set(data) == set(arrays)
    for key, value in arrays.items():
        assert data[key].dtype == (np.float32 if key[0] == "X" else np.int64)
        np.testing.assert_allclose(data[key], value, rtol=1e-6)
    np.savez(tmp_path / "no_test.npz", **{k: arrays[k] for k in list(arrays)[:4]})
    assert set(load_npz(tmp_path / "no_test.npz")) == {"X_train", "y_train", "X_val", "y_val"}


@pytest.mark.parametrize("change, message", [
    (dict(X_val=None, y_val=None), "lacks X_val, y_val"),
    (dict(y_test=None), "lacks y_test"),
    (dict(y_train=np.array([0, 1, 2, 0, 1.5, 2])), "y_train must be an integer array"),
    (dict(y_val=np.array([0, -1, 2])), "y_val has labels in \\[-1, 2\\]"),
    (dict(y_val=np.array([0, 1])), "y_val has 2 labels but there are 3 examples"),
    (dict(X_val=np.zeros((3, 5))), "X_val has 5 features per row but X_train has 4"),
    (dict(X_train=np.full((6, 4), np.nan)), "X_train contains 24 NaN"),
    (dict(X_test=np.array([["a"] * 4] * 2)), "X_test must hold numbers"),
    (dict(X_test=np.array([None, 1], dtype=object)), "not a readable .npz of plain arrays"),
])
def test_load_npz_rejects_bad_files(tmp_path, change, message):
    arrays = {k: v for k, v in {**npz_arrays(), **change}.items() if v is not None}
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(tmp_path / "d.npz")


def test_load_npz_rejects_other_files(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((3, 4)))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    for name, message in (("one.npy", "holds one array"), ("junk.npz", "not a readable .npz")):
        with pytest.raises(ValueError, match=message):
            load_npz(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------- download

class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves one archive on 127.0.0.1 in the ways a real server can fail."""

    def __init__(self, body: bytes):
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.body, self.requests = body, []

    def url(self, path):
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def handle_error(self, request, client_address):
        """A dropped connection is the point of some routes; keep the test output clean."""


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.body
        self.server.requests.append(self.path)
        if self.path == "/cifar.tar.gz":
            self.send_body(body, len(body))
        elif self.path == "/short.tar.gz":        # promises more than it sends, then closes
            self.send_body(body, len(body) + 1000)
        elif self.path == "/drop.tar.gz":         # resets the connection mid-body
            self.send_body(body[: len(body) // 2], len(body))
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.send_error(404)

    def send_body(self, body, length):
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, archive path, its md5, the folder it was built from)."""
    tmp = tmp_path_factory.mktemp("served")
    archive = tmp / ARCHIVE
    write_cifar10(tmp / "src", per_class=2, tar=archive)
    md5 = md5_of(archive)
    server = ArchiveServer(archive.read_bytes())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, archive, md5, tmp / "src" / FOLDER
    server.shutdown()
    server.server_close()


def test_download_extracts_verifies_and_is_idempotent(served, tmp_path):
    server, archive, md5, source = served
    root = tmp_path / "root"
    seen = []
    folder = download_cifar10(root, url=server.url("cifar.tar.gz"), md5=md5,
                              progress=lambda done, total: seen.append((done, total)))
    assert folder == root / FOLDER
    assert listing(root) == [FOLDER, ARCHIVE]
    assert listing(folder) == listing(source)
    for name in listing(source):
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert md5_of(root / ARCHIVE) == md5
    assert seen[-1] == (archive.stat().st_size, archive.stat().st_size)
    assert load_CIFAR10(root)[0].shape == (20, 32, 32, 3)

    before = len(server.requests)
    assert download_cifar10(root, url=server.url("cifar.tar.gz"), md5=md5) == folder
    assert download_cifar10(folder, url=server.url("cifar.tar.gz"), md5=md5) == folder
    shutil.rmtree(folder)            # the verified archive is extracted again, not fetched
    assert download_cifar10(root, url=server.url("cifar.tar.gz"), md5=md5) == folder
    assert len(server.requests) == before
    assert listing(root) == [FOLDER, ARCHIVE]


def test_download_replaces_an_incomplete_folder(served, tmp_path):
    server, _, md5, source = served
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / "data_batch_1").write_bytes(b"half a file")
    download_cifar10(tmp_path, url=server.url("cifar.tar.gz"), md5=md5)
    assert listing(tmp_path) == [FOLDER, ARCHIVE]
    assert listing(tmp_path / FOLDER) == listing(source)
    assert (tmp_path / FOLDER / "data_batch_1").read_bytes() == (
        source / "data_batch_1").read_bytes()


@pytest.mark.parametrize("path, md5, message", [
    ("cifar.tar.gz", "0" * 32, "checksum mismatch for {url}: expected md5 0000"),
    ("short.tar.gz", None, "download of {url} was cut short: got"),
    ("drop.tar.gz", None, "{url}"),
    ("missing.tar.gz", None, "download of {url} failed: HTTP 404"),
])
def test_download_failures_leave_nothing_behind(served, tmp_path, path, md5, message):
    server, _, good_md5, _ = served
    url = server.url(path)
    with pytest.raises(DownloadError) as info:
        download_cifar10(tmp_path / "root", url=url, md5=md5 or good_md5)
    assert message.format(url=url) in str(info.value)
    assert listing(tmp_path) == []  # the root folder this call created is gone too


def test_download_network_error_and_missing_md5(tmp_path, monkeypatch):
    with socket.socket() as s:          # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar.tar.gz"
    with pytest.raises(DownloadError, match=f"could not download {url}"):
        download_cifar10(tmp_path, url=url, md5="0" * 32)
    assert listing(tmp_path) == []
    with pytest.raises(ValueError, match="no md5 checksum given"):
        download_cifar10(tmp_path, url=url)
    monkeypatch.setenv("JAXNET_CIFAR10_URL", url)
    with pytest.raises(ValueError, match=f"no md5 checksum given for {url}"):
        download_cifar10(tmp_path)


def test_download_takes_mirror_from_environment(served, tmp_path, monkeypatch):
    server, _, md5, _ = served
    monkeypatch.setenv("JAXNET_CIFAR10_URL", server.url("cifar.tar.gz"))
    monkeypatch.setenv("JAXNET_CIFAR10_MD5", md5)
    monkeypatch.setenv("JAXNET_DATA_DIR", str(tmp_path))
    assert download_cifar10() == tmp_path / FOLDER
    assert get_CIFAR10_data(num_training=10, num_validation=5, num_test=5)["X_train"].shape == (
        10, 3072)


def run_script(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXNET_CIFAR10")}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_script_downloads_and_reports_errors_in_one_line(served, tmp_path):
    server, _, md5, _ = served
    url = server.url("cifar.tar.gz")
    done = run_script("--root", tmp_path, "--url", url, "--md5", md5)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / FOLDER) in done.stdout
    again = run_script("--root", tmp_path, "--url", url, "--md5", md5)
    assert again.returncode == 0 and "already present" in again.stdout

    failed = run_script("--root", tmp_path / "other", "--url", url, "--md5", "f" * 32)
    assert failed.returncode == 2
    assert len(failed.stderr.splitlines()) == 1
    assert failed.stderr.startswith("error: checksum mismatch")
    assert not (tmp_path / "other").exists()


# ----------------------------------------------------------------------------- hostile archives

REFUSAL = {"dotdot": "outside the target folder", "absolute": "outside the target folder",
           "symlink": "links are not allowed", "hardlink": "links are not allowed",
           "fifo": "only plain files and folders", "device": "only plain files and folders"}


def hostile_member(kind, outside):
    """A TarInfo (and its content) that must not be extracted."""
    member = tarfile.TarInfo(f"{FOLDER}/evil")
    if kind == "dotdot":
        member.name = f"{FOLDER}/../../../../evil"  # from root/<tmp>/extracted/ to a/
    elif kind == "absolute":
        member.name = str(outside / "evil")
    elif kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, str(outside)
    elif kind == "hardlink":
        member.type, member.linkname = tarfile.LNKTYPE, str(outside / "target")
    elif kind == "fifo":
        member.type = tarfile.FIFOTYPE
    elif kind == "device":
        member.type, member.devmajor, member.devminor = tarfile.CHRTYPE, 1, 3
    return member, b"pwned" if member.isfile() else b""


@pytest.mark.parametrize("kind", sorted(REFUSAL))
def test_hostile_archive_is_refused_before_writing(cifar_fixture, tmp_path, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("keep me")
    archive = tmp_path / "hostile.tar.gz"
    member, content = hostile_member(kind, outside)
    member.size = len(content)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_fixture / FOLDER, arcname=FOLDER)   # a complete, valid part first
        tar.addfile(member, io.BytesIO(content))
    root = tmp_path / "a" / "root"       # the dotdot member would land in a/, beside root
    root.parent.mkdir()
    before = set(tmp_path.rglob("*"))

    with pytest.raises(DownloadError, match=f"refusing .*member {re.escape(repr(member.name))}"
                       f".*{REFUSAL[kind]}"):
        download_cifar10(root, url=archive.as_uri(), md5=md5_of(archive))
    assert not root.exists()             # created by the call, removed with the failure
    assert set(tmp_path.rglob("*")) == before
    assert (outside / "target").read_text() == "keep me"


def test_archive_without_the_dataset_is_refused(tmp_path):
    archive = tmp_path / "other.tar.gz"
    (tmp_path / "readme.txt").write_text("not cifar")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "readme.txt", arcname=f"{FOLDER}/readme.txt")
    with pytest.raises(DownloadError, match="lacks data_batch_1, .*batches.meta"):
        download_cifar10(tmp_path / "root", url=archive.as_uri(), md5=md5_of(archive))
    assert not (tmp_path / "root").exists()


# ----------------------------------------------------------------------------- full dataset

def test_full_dataset_shapes_and_channel_means(cifar_full):
    X_train, y_train, X_test, y_test = load_CIFAR10(cifar_full)
    assert X_train.shape == (50000, 32, 32, 3) and X_test.shape == (10000, 32, 32, 3)
    assert np.array_equal(np.bincount(y_train), np.full(10, 5000))
    assert np.array_equal(np.bincount(y_test), np.full(10, 1000))
    np.testing.assert_allclose(X_train.mean(axis=(0, 1, 2), dtype=np.float64),
                               [125.3, 122.9, 113.9], atol=0.3)
