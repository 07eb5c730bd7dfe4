"""Nothing lost when things go wrong on the data side (issue 11): full disks, hostile files, stale caches."""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, ImageDecodeError, load_image, tfms_from_model
from kit.data.cache import decode_cached, files_key
from kit.io import NotEnoughSpaceError
from kit.training.learner import ConvLearner

pytestmark = pytest.mark.backends
SZ = 32
ROOT = Path(__file__).resolve().parents[1]


def _data(path, **kw):
    return ImageClassifierData.from_paths(path, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False, **kw)


def _skip_warning(record) -> str:
    msgs = [str(w.message) for w in record if "could not be decoded" in str(w.message)]
    assert len(msgs) == 1, [str(w.message) for w in record]
    return msgs[0]


def _python(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


# ----------------------------------------------------------------------------- full disk
DISK_FULL = r"""
import json, resource, signal, sys
from pathlib import Path
import kit.data.cache as cache

files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
# A real limit: every write past it fails with EFBIG (SIGXFSZ ignored, so it is an error, not a kill).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
out = {}
for label, workers, prealloc in [("serial", 1, True), ("workers", 2, True), ("serial_writes", 1, False), ("worker_writes", 2, False)]:
    cache.PREALLOCATE = prealloc  # False: as on a file system without fallocate, the rows' writes fail
    folder = Path(sys.argv[2]) / label
    try:
        cache.decode_cached(files, 32, folder, num_workers=workers, progress=False)
        out[label] = "no error"
    except Exception as e:
        out[label] = [type(e).__name__, isinstance(e, OSError), str(e), sorted(p.name for p in folder.iterdir())]
print(json.dumps(out))
"""


def test_disk_full_while_decoding_is_one_oserror_and_leaves_nothing(tmp_path):
    make_folders(tmp_path / "data", n_train=32, n_valid=1)  # 64 files: enough for the worker pool
    r = _python(DISK_FULL, str(tmp_path / "data" / "train"), str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr[-3000:]  # no SIGBUS (135), no crash
    results = json.loads(r.stdout.strip().splitlines()[-1])
    need = 128 + 64 * SZ * SZ * 3 + 128 + 64  # header and rows, then the ok mask
    for label, (kind, is_oserror, msg, left) in results.items():
        assert kind == "NotEnoughSpaceError" and is_oserror, (label, kind, msg)
        assert str(tmp_path / "cache" / label) in msg and f"({need} bytes)" in msg and "(65536 bytes) free" in msg, msg
        assert left == [], (label, left)  # the temporary file is gone


def test_disk_full_on_a_small_tmpfs_is_checked_before_decoding(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        make_folders(tmp_path / "data", n_train=32, n_valid=1)
        files = sorted((tmp_path / "data" / "train").rglob("*.jpg"))
        with pytest.raises(NotEnoughSpaceError, match=f"{disk / 'tmp'} for the 'images' image cache.*196928 bytes"):
            decode_cached(files, SZ, disk / "tmp", num_workers=2, progress=False)
        assert list((disk / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ----------------------------------------------------------------------------- hostile files
def _png_header(w: int, h: int) -> bytes:
    """A PNG that claims w×h pixels: PIL refuses it from the header alone, so it is tiny on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_skipped_and_named(tmp_path):
    make_folders(tmp_path, n_train=3, n_valid=2)
    (tmp_path / "train" / "cats" / "bomb.png").write_bytes(_png_header(20000, 20000))
    with pytest.raises(ImageDecodeError, match="bomb.png: DecompressionBombError"):
        load_image(tmp_path / "train" / "cats" / "bomb.png", SZ)
    with pytest.warns(UserWarning) as record:
        data = _data(tmp_path)
    assert "bomb.png: DecompressionBombError" in _skip_warning(record)
    assert len(data.trn_ds) == 6 and not any(Path(f).name == "bomb.png" for f in data.trn_files)


def test_non_utf8_file_name_is_decoded(tmp_path):
    if sys.getfilesystemencoding().lower() not in ("utf-8", "utf8"):
        pytest.skip("needs a UTF-8 file system encoding (with surrogateescape)")
    make_folders(tmp_path, n_train=2, n_valid=2)
    name = os.fsencode(tmp_path / "train" / "cats") + b"/caf\xe9.jpg"  # Latin-1 é: not UTF-8
    with open(name, "wb") as f:
        Image.new("RGB", (40, 40), (255, 0, 0)).save(f, format="JPEG")
    files = sorted((tmp_path / "train").rglob("*.jpg"))
    assert len(files_key(files, SZ)) == 16
    data = _data(tmp_path)
    row = [os.fsencode(f) for f in data.trn_ds.files].index(name)
    assert len(data.trn_ds) == 5 and data.trn_ds.images[data.trn_ds.rows[row]][..., 0].mean() > 200


def test_symlink_loops_and_dangling_links_are_listed(tmp_path):
    make_folders(tmp_path, n_train=2, n_valid=2)
    cats = tmp_path / "train" / "cats"
    (cats / "loop.jpg").symlink_to("loop.jpg")
    (cats / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (cats / "dir_loop").symlink_to(".")  # a folder link back up: ignored, never walked
    with pytest.warns(UserWarning) as record:
        data = _data(tmp_path)
    msg = _skip_warning(record)
    assert "loop.jpg: symbolic link loop" in msg and "gone.jpg: dangling symbolic link" in msg, msg
    assert len(data.trn_ds) == 4


# ----------------------------------------------------------------------------- stale caches
def _bmp(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (40, 40), colour).save(path, format="BMP")  # uncompressed: every colour, the same size


@pytest.mark.parametrize("how", ["cp -p", "rename"])
def test_same_size_replacement_with_old_mtime_is_redecoded_and_old_cache_pruned(tmp_path, how):
    files = [tmp_path / f"{i}.bmp" for i in range(3)]
    for f in files:
        _bmp(f, (255, 0, 0))
    cache = tmp_path / "tmp"
    decode_cached(files, SZ, cache, progress=False)
    decode_cached(files, 40, cache, progress=False)  # another size: kept
    old = {p.name for p in cache.glob("images_32px_*.npy")}
    old_key = next(iter(old)).split("_")[2][:16]
    (cache / f"act_tiny_0123456789ab_train_{old_key}beef.npy").write_bytes(b"")  # activations read from it
    time.sleep(0.05)
    st = files[0].stat()
    new = tmp_path / "new.bmp"
    _bmp(new, (0, 0, 255))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    if how == "cp -p":
        shutil.copy2(new, files[0])  # same inode, same size, same mtime: only ctime tells
    else:
        os.replace(new, files[0])  # a new inode
    assert files[0].stat().st_size == st.st_size and files[0].stat().st_mtime_ns == st.st_mtime_ns
    images, ok = decode_cached(files, SZ, cache, progress=False)
    assert ok.all() and images[0][..., 2].mean() > 200 and images[1][..., 0].mean() > 200
    now = {p.name for p in cache.iterdir()}
    assert not now & old and len([n for n in now if n.startswith("images_32px_")]) == 2
    assert len([n for n in now if n.startswith("images_40px_")]) == 2
    assert not any(n.startswith("act_") for n in now)


# ----------------------------------------------------------------------------- precompute
def _learner(path):
    keras.utils.set_random_seed(0)
    return ConvLearner.pretrained(tiny, _data(path), precompute=False, weights=None)


def test_photo_deleted_after_from_paths_then_precompute(tmp_path):
    make_folders(tmp_path, n_train=4, n_valid=3)
    learn = _learner(tmp_path)
    plain = learn.predict()
    gone = tmp_path / "valid" / "dogs" / "dog.1.jpg"
    gone.unlink()
    with pytest.warns(UserWarning, match=r"1 images were deleted or moved after from_paths.*\n.*dog\.1\.jpg"):
        learn.precompute = True
    assert learn.precompute
    np.testing.assert_allclose(learn.predict(), plain, atol=1e-4)  # the pixels decoded at from_paths
    assert len(learn.interpret().probs) == 6


def test_precompute_switch_is_all_or_nothing(tmp_path):
    make_folders(tmp_path, n_train=4, n_valid=3)
    learn = _learner(tmp_path)
    real = learn._activations

    def fail_on_valid(split, digest):
        if split == "valid":
            raise OSError("simulated failure while computing the valid activations")
        return real(split, digest)

    learn._activations = fail_on_valid
    with pytest.raises(OSError, match="simulated"):
        learn.precompute = True
    assert learn.precompute is False and learn._act == {}
    assert len(learn.interpret().probs) == 6  # no KeyError: 'valid'
    del learn._activations
    learn.precompute = True
    assert set(learn._act) == {"train", "valid"}


# ----------------------------------------------------------------------------- decoding workers
START_METHODS = r"""
import json, sys, warnings
from pathlib import Path
import keras
import numpy as np
import kit.data.cache as cache

before = cache._pool_context().get_start_method()
keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)  # the backend's runtime is up now
after = cache._pool_context().get_start_method()
files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    parallel, _ = cache.decode_cached(files, 32, Path(sys.argv[2]) / "p", num_workers=2, progress=False)
serial, _ = cache.decode_cached(files, 32, Path(sys.argv[2]) / "s", num_workers=1, progress=False)
print(json.dumps([before, after, bool(np.array_equal(parallel, serial)), [str(w.message) for w in record]]))
"""


def test_workers_fork_until_a_runtime_is_up_then_use_a_forkserver(tmp_path):
    make_folders(tmp_path / "data", n_train=32, n_valid=1)
    r = _python(START_METHODS, str(tmp_path / "data" / "train"), str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr[-3000:]
    before, after, same, warned = json.loads(r.stdout.strip().splitlines()[-1])
    assert before == "fork"
    assert after == ("fork" if keras.backend.backend() == "torch" else "forkserver")
    assert same and not any("fork" in w for w in warned), warned  # JAX's os.fork warning never fires
