"""Folders → labelled files → decoded uint8 batches, and every kind of bad input."""

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers.images import make_folders
from kit.data import ImageClassifierData, ImageDecodeError, load_image, tfms_from_model, transforms_side_on
from kit.data.cache import decode_cached
from kit.data.images import resize_center_crop

pytestmark = pytest.mark.backends
SZ = 32


def _data(path, **kw):
    return ImageClassifierData.from_paths(path, tfms=tfms_from_model("resnet50", SZ), bs=8, progress=False, **kw)


def test_from_paths_lesson_attributes(tmp_path):
    make_folders(tmp_path, n_train=5, n_valid=3, n_test=4)
    data = _data(tmp_path, test_name="test")
    assert data.classes == ["cats", "dogs"] and data.c == 2
    assert data.val_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.trn_y.tolist() == [0] * 5 + [1] * 5
    assert [p.rsplit("/", 2)[-2] for p in data.val_files] == ["cats"] * 3 + ["dogs"] * 3
    assert len(data.test_files) == 4
    xb, yb = data.batches("valid")[0]
    assert xb.dtype == np.uint8 and xb.shape == (6, SZ, SZ, 3)
    assert yb.tolist() == data.val_y.tolist()
    (xt,) = data.batches("test")[0]
    assert xt.shape == (4, SZ, SZ, 3)


def test_multiclass_and_shuffled_batches_cover_every_row(tmp_path):
    make_folders(tmp_path, classes=("a", "b", "c"), n_train=7, n_valid=2)
    data = _data(tmp_path)
    assert data.c == 3
    b = data.batches("train", shuffle=True, seed=1)
    seen = np.concatenate([b[i][1] for i in range(len(b))])
    assert sorted(seen.tolist()) == sorted(data.trn_y.tolist())
    b.on_epoch_end()
    assert len(b) == 3
    # Rows and labels stay paired after shuffling: the colour of each image gives its class.
    for i in range(len(b)):
        xb, yb = b[i]
        dominant = xb.reshape(len(xb), -1, 3).mean(axis=1).argmax(axis=1)  # 0 red, 2 blue, 1 green
        assert np.array_equal(dominant, np.array([0, 2, 1])[yb])


def test_decode_cache_is_reused_and_invalidated(tmp_path):
    make_folders(tmp_path, n_train=3, n_valid=2)
    files = sorted((tmp_path / "train").rglob("*.jpg"))
    a, ok = decode_cached(files, SZ, tmp_path / "tmp", progress=False)
    assert ok.all() and a.shape == (6, SZ, SZ, 3)
    assert len(list((tmp_path / "tmp").glob("images_*.npy"))) == 2  # images + ok mask
    decode_cached(files, SZ, tmp_path / "tmp", progress=False)
    assert len(list((tmp_path / "tmp").glob("images_*.npy"))) == 2  # reused, not rebuilt
    before = sorted((tmp_path / "tmp").glob("images_*.npy"))
    Image.new("RGB", (50, 40), "red").save(files[0])
    b, _ = decode_cached(files, SZ, tmp_path / "tmp", progress=False)
    after = sorted((tmp_path / "tmp").glob("images_*.npy"))
    assert len(after) == 2 and not set(before) & set(after)  # a changed file: new cache, the stale one pruned
    assert b[0, ..., 0].mean() > 200


def test_parallel_decode_matches_serial(tmp_path):
    make_folders(tmp_path, n_train=40, n_valid=1)
    files = sorted((tmp_path / "train").rglob("*.jpg"))
    serial, _ = decode_cached(files, SZ, tmp_path / "s", num_workers=1, progress=False)
    parallel, _ = decode_cached(files, SZ, tmp_path / "p", num_workers=2, progress=False)
    assert np.array_equal(serial, parallel)


def test_odd_images_decode(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 256).save(tmp_path / "deep.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).save(tmp_path / "png_named.jpg", format="PNG")
    Image.fromarray(np.dstack([rgb, np.full((30, 50), 128, np.uint8)])).save(tmp_path / "alpha.png")
    Image.fromarray(rgb[:5, :7]).save(tmp_path / "tiny.jpg")
    for f in sorted(tmp_path.iterdir()):
        out = load_image(f, SZ)
        assert out.shape == (SZ, SZ, 3) and out.dtype == np.uint8, f
    deep = load_image(tmp_path / "deep.png", SZ)
    assert deep.max() > 200 and deep.min() < 50  # 16-bit rescaled, not clipped to white


def test_exif_orientation_turns_the_photo_as_pillow_does(tmp_path):
    rgb = np.zeros((30, 50, 3), dtype=np.uint8)
    rgb[:, :25] = (250, 0, 0)  # left half red: a quarter turn moves it to the top or the bottom
    for orientation in (1, 3, 6):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(rgb).save(tmp_path / f"o{orientation}.jpg", exif=exif, quality=95)
    for orientation in (1, 3, 6):
        f = tmp_path / f"o{orientation}.jpg"
        with Image.open(f) as img:
            want = resize_center_crop(ImageOps.exif_transpose(img).convert("RGB"), SZ)
        assert np.array_equal(load_image(f, SZ), want), orientation
    upright, turned = load_image(tmp_path / "o1.jpg", SZ), load_image(tmp_path / "o6.jpg", SZ)
    assert upright[:, :8, 0].mean() > 200 and turned[:8, :, 0].mean() > 200 and turned[-8:, :, 0].mean() < 50


def test_corrupt_images_are_skipped_with_one_warning(tmp_path):
    make_folders(tmp_path, n_train=4, n_valid=3)
    (tmp_path / "train" / "cats" / "zero.jpg").write_bytes(b"")
    good = (tmp_path / "train" / "dogs" / "dog.0.jpg").read_bytes()
    (tmp_path / "train" / "dogs" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "valid" / "dogs" / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    with pytest.warns(UserWarning) as record:
        data = _data(tmp_path)
    msgs = [str(w.message) for w in record if "could not be decoded" in str(w.message)]
    assert len(msgs) == 2  # one per split, each listing its files
    assert "zero.jpg" in msgs[0] and "truncated.jpg" in msgs[0] and "garbage.jpg" in msgs[1]
    assert len(data.trn_ds) == 8 and len(data.val_ds) == 6
    assert all("zero" not in f and "truncated" not in f for f in data.trn_files)
    b = data.batches("train", shuffle=True)
    assert sum(len(b[i][1]) for i in range(len(b))) == 8


def test_load_image_error_names_the_file(tmp_path):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.jpg.*empty file"):
        load_image(f, SZ)


def test_non_image_files_warn(tmp_path):
    make_folders(tmp_path, n_train=2, n_valid=2)
    (tmp_path / "train" / "cats" / "notes.txt").write_text("hi")
    with pytest.warns(UserWarning, match="non-image files.*notes.txt"):
        data = _data(tmp_path)
    assert len(data.trn_ds) == 4


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda p: shutil.rmtree(p), FileNotFoundError, "Data folder not found"),
        (lambda p: shutil.rmtree(p / "train"), FileNotFoundError, "No 'train' folder.*found valid"),
        (lambda p: shutil.rmtree(p / "valid"), FileNotFoundError, "No 'valid' folder"),
        (
            lambda p: [shutil.rmtree(p / s / "dogs") for s in ("train", "valid")],
            ValueError,
            "at least two classes; received 1",
        ),
        (lambda p: [f.unlink() for f in (p / "train" / "dogs").iterdir()], ValueError, "dogs has no images"),
        (
            lambda p: (p / "valid" / "dogs").rename(p / "valid" / "dog"),
            ValueError,
            "differ.*only in valid: \\['dog'\\]",
        ),
    ],
)
def test_bad_layouts(tmp_path, mutate, error, match):
    make_folders(tmp_path, n_train=2, n_valid=2)
    mutate(tmp_path)
    with pytest.raises(error, match=match):
        _data(tmp_path)


def test_bad_arguments(tmp_path):
    make_folders(tmp_path, n_train=2, n_valid=2)
    with pytest.raises(ValueError, match="bs must be an integer >= 1. Received bs=0"):
        ImageClassifierData.from_paths(tmp_path, bs=0, progress=False)
    with pytest.raises(ValueError, match="sz must be an integer >= 8. Received sz=4"):
        tfms_from_model("resnet50", 4)
    with pytest.raises(ValueError, match="max_zoom must be >= 1"):
        tfms_from_model("resnet50", 32, max_zoom=0.5)
    trn, val = tfms_from_model("resnet50", 32, aug_tfms=transforms_side_on, max_zoom=1.1)
    assert len(trn.aug_tfms) == 4 and val.aug_tfms == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trn.augmentation() is not None and val.augmentation() is None
