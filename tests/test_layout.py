"""Safe extraction, the seeded stratified split, the lesson's layout and the Kaggle-notebook helpers."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

import kit.kaggle.layout as kl
from helpers.images import easy_image
from kit.env import default_data_dir, in_kaggle_notebook
from kit.kaggle.competition import Competition, label_by_prefix
from kit.kaggle.layout import (
    UnsafeZipError,
    check_zip,
    kaggle_input_dir,
    prepare_layout,
    read_layout,
    safe_extract,
    split_counts,
    stratified_split,
)

PETS = Competition(
    slug="tiny-pets",
    title="Tiny pets",
    classes=("cats", "dogs"),
    files=("train.zip", "test.zip", "sample_submission.csv"),
    train_zip="train.zip",
    test_zip="test.zip",
    label_from_name=label_by_prefix({"cat": "cats", "dog": "dogs"}),
    positive_class="dogs",
    valid_size=6,
)
N_CATS, N_DOGS, N_TEST = 10, 20, 8


def jpeg(cls: int, i: int) -> bytes:
    buf = io.BytesIO()
    easy_image(cls, np.random.default_rng(i), size=8).save(buf, format="JPEG")
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def pets_members() -> tuple[dict[str, bytes], dict[str, bytes]]:
    train = {f"train/cat.{i}.jpg": jpeg(0, i) for i in range(N_CATS)}
    train.update({f"train/dog.{i}.jpg": jpeg(1, 100 + i) for i in range(N_DOGS)})
    train["train/README.txt"] = b"not an image"
    test = {f"test/{i}.jpg": jpeg(i % 2, 200 + i) for i in range(1, N_TEST + 1)}
    return train, test


@pytest.fixture
def zips(tmp_path) -> Path:
    d = tmp_path / "zips"
    d.mkdir()
    train, test = pets_members()
    write_zip(d / "train.zip", train)
    write_zip(d / "test.zip", test)
    return d


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- the split ------------------------------------------------------------------------------


def test_split_counts_is_proportional_and_exact():
    assert split_counts([10, 30], 8) == [2, 6]
    assert split_counts([1, 1, 1], 2) == [1, 1, 0]
    assert split_counts([5, 5], 0) == [0, 0]
    assert sum(split_counts([7, 11, 13], 10)) == 10
    with pytest.raises(ValueError, match=r"n must be in \[0, 2\]"):
        split_counts([1, 1], 3)


def test_stratified_split_is_seeded_and_keeps_class_shares():
    labels = ["a"] * 10 + ["b"] * 30
    kept, chosen = stratified_split(labels, 8, seed=1)
    assert sorted(labels[i] for i in chosen) == ["a"] * 2 + ["b"] * 6
    assert sorted(np.concatenate([kept, chosen]).tolist()) == list(range(40))
    again = stratified_split(labels, 8, seed=1)[1]
    other = stratified_split(labels, 8, seed=2)[1]
    assert chosen.tolist() == again.tolist()
    assert chosen.tolist() != other.tolist()


# --- the layout -----------------------------------------------------------------------------


def test_layout_from_zips(zips, tmp_path):
    root = prepare_layout(PETS, zips, tmp_path / "data", valid=6, seed=3, sample_size=(4, 3), progress=False)
    assert root == tmp_path / "data" / "tiny-pets"
    assert names(root) == ["layout.json", "models", "sample", "test", "tmp", "train", "valid"]
    # Stratified: a third of the images are cats, so 2 of the 6 validation images are.
    assert (len(names(root / "valid/cats")), len(names(root / "valid/dogs"))) == (2, 4)
    assert (len(names(root / "train/cats")), len(names(root / "train/dogs"))) == (8, 16)
    assert set(names(root / "train/cats")).isdisjoint(names(root / "valid/cats"))
    assert all(n.startswith("cat.") for n in names(root / "train/cats") + names(root / "valid/cats"))
    assert names(root / "test") == sorted(f"{i}.jpg" for i in range(1, N_TEST + 1))
    s_train = names(root / "sample/train/cats") + names(root / "sample/train/dogs")
    s_valid = names(root / "sample/valid/cats") + names(root / "sample/valid/dogs")
    assert (len(s_train), len(s_valid)) == (4, 3)
    assert set(names(root / "sample/valid/dogs")) <= set(names(root / "valid/dogs"))
    # The sample is hard-linked to the split, not copied.
    f = root / "sample/valid/dogs" / names(root / "sample/valid/dogs")[0]
    assert f.stat().st_ino == (root / "valid/dogs" / f.name).stat().st_ino
    assert (root / "train/dogs/dog.0.jpg").read_bytes() == jpeg(1, 100)
    record = read_layout(root)
    assert (record["valid"], record["seed"], record["sample_size"]) == (6, 3, [4, 3])
    assert record["counts"]["valid"] == {"cats": 2, "dogs": 4} and record["counts"]["test"] == N_TEST
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_valid_defaults_to_the_competition_and_split_depends_on_the_seed(zips, tmp_path):
    a = prepare_layout(PETS, zips, tmp_path / "a", seed=1, progress=False)
    b = prepare_layout(PETS, zips, tmp_path / "b", seed=2, progress=False)
    assert read_layout(a)["valid"] == PETS.valid_size
    va = names(a / "valid/dogs") + names(a / "valid/cats")
    vb = names(b / "valid/dogs") + names(b / "valid/cats")
    assert len(va) == len(vb) == 6 and va != vb


def test_running_again_changes_nothing(zips, tmp_path, monkeypatch):
    root = prepare_layout(PETS, zips, tmp_path / "data", progress=False)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(kl, "_write_all", no_extraction)
    assert prepare_layout(PETS, zips, tmp_path / "data", progress=False) == root
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")} == before


def test_another_split_is_refused_without_force(zips, tmp_path):
    root = prepare_layout(PETS, zips, tmp_path / "data", seed=1, progress=False)
    (root / "models/keep.weights.h5").write_bytes(b"w")
    (root / "tmp/act.npy").write_bytes(b"a")
    before = tree(root)
    with pytest.raises(ValueError, match=r"seed=1 → 2.*force=True \(`--force`\)"):
        prepare_layout(PETS, zips, tmp_path / "data", seed=2, progress=False)
    with pytest.raises(ValueError, match=r"valid=6 → 4"):
        prepare_layout(PETS, zips, tmp_path / "data", seed=1, valid=4, progress=False)
    assert tree(root) == before
    prepare_layout(PETS, zips, tmp_path / "data", seed=1, valid=4, force=True, progress=False)
    assert read_layout(root)["valid"] == 4
    assert len(names(root / "valid/cats")) + len(names(root / "valid/dogs")) == 4
    # Weights survive a re-split; activations of the old split do not.
    assert (root / "models/keep.weights.h5").is_file()
    assert names(root / "tmp") == []


def test_leftover_folders_without_a_record_are_refused(zips, tmp_path):
    root = tmp_path / "data" / PETS.slug
    (root / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has train/ but no layout.json.*force=True"):
        prepare_layout(PETS, zips, tmp_path / "data", progress=False)
    prepare_layout(PETS, zips, tmp_path / "data", force=True, progress=False)
    assert read_layout(root) is not None


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(valid=30), r"valid=30 leaves no training images"),
        (dict(valid=29), r"valid=29 leaves no training images"),
        (dict(valid=-1), r"valid must be an integer >= 0. Received valid=-1"),
        (dict(valid=2.5), r"Received valid=2.5"),
        (dict(valid=True), r"Received valid=True"),
        (dict(seed="1"), r"seed must be an integer"),
        (dict(sample_size=(1,)), r"sample_size must be \(train images, valid images\)"),
    ],
)
def test_bad_parameters_are_refused(zips, tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        prepare_layout(PETS, zips, tmp_path / "data", progress=False, **kw)
    assert not (tmp_path / "data" / PETS.slug / "train").exists()


def test_sample_is_clamped_to_what_the_split_has(zips, tmp_path):
    root = prepare_layout(PETS, zips, tmp_path / "data", sample_size=(1000, 1000), progress=False)
    assert read_layout(root)["counts"]["sample"] == [24, 6]


def test_layout_from_extracted_folders_leaves_the_source_alone(tmp_path):
    src = tmp_path / "input"
    train, test = pets_members()
    for name, data in {**train, **test}.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    before = tree(src)
    root = prepare_layout(PETS, src, tmp_path / "data", progress=False)
    assert len(names(root / "test")) == N_TEST
    assert sum(len(names(root / s / c)) for s in ("train", "valid") for c in PETS.classes) == N_CATS + N_DOGS
    assert tree(src) == before


def test_layout_from_kaggles_one_zip_bundle(zips, tmp_path):
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    write_zip(
        bundle_dir / f"{PETS.slug}.zip",
        {n: (zips / n).read_bytes() for n in ("train.zip", "test.zip")} | {"sample_submission.csv": b"id,label\n"},
    )
    root = prepare_layout(PETS, bundle_dir, tmp_path / "data", progress=False)
    assert len(names(root / "test")) == N_TEST
    assert (bundle_dir / "train.zip").is_file()


def test_missing_source_says_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train.zip for 'tiny-pets' not found.*kit download -c tiny-pets"):
        prepare_layout(PETS, tmp_path, tmp_path / "data", progress=False)


def test_a_file_that_is_not_a_zip_is_refused(zips, tmp_path):
    (zips / "train.zip").write_bytes(b"<html>403 Forbidden</html>")
    with pytest.raises(ValueError, match=r"train.zip is not a zip file"):
        prepare_layout(PETS, zips, tmp_path / "data", progress=False)


def test_a_damaged_zip_leaves_no_half_layout(zips, tmp_path):
    train, _ = pets_members()
    with zipfile.ZipFile(zips / "train.zip", "w", zipfile.ZIP_STORED) as zf:
        for name, data in train.items():
            zf.writestr(name, data)
    raw = bytearray((zips / "train.zip").read_bytes())
    # Flip bytes inside the first image's data: its CRC no longer matches.
    raw[60:70] = bytes(10)
    (zips / "train.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is damaged: entry 'train/cat.0.jpg'"):
        prepare_layout(PETS, zips, tmp_path / "data", progress=False)
    root = tmp_path / "data" / PETS.slug
    assert not root.exists() or tree(root) == []


# --- safe extraction ------------------------------------------------------------------------


def symlink_zip(path: Path, name: str, target: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        zf.writestr("train/cat.1.jpg", jpeg(0, 1))
    return path


@pytest.mark.parametrize(
    "entry, message",
    [
        ("../evil.jpg", "contains '..'"),
        ("train/../../evil.jpg", "contains '..'"),
        ("..\\evil.jpg", "contains '..'"),
        ("/abs.jpg", "is an absolute path"),
        ("C:/abs.jpg", "is an absolute path"),
        ("link", "is a symbolic link"),
    ],
)
def test_escaping_entries_are_refused_and_nothing_is_written(tmp_path, entry, message):
    box = tmp_path / "box"
    zips = box / "zips"
    zips.mkdir(parents=True)
    if entry == "link":
        symlink_zip(zips / "train.zip", "train/link.jpg", "/etc/passwd")
    else:
        write_zip(zips / "train.zip", {"train/cat.1.jpg": jpeg(0, 1), entry: b"evil"})
    write_zip(zips / "test.zip", {"test/1.jpg": jpeg(0, 2)})
    before = tree(tmp_path)
    with pytest.raises(UnsafeZipError, match=rf"refusing to extract .*train.zip: entry .* {message}"):
        prepare_layout(PETS, zips, box / "data", progress=False)
    with pytest.raises(UnsafeZipError):
        safe_extract(zips / "train.zip", box / "out")
    # The entries are checked before anything is written: not a folder, not a file, anywhere.
    assert tree(tmp_path) == before
    assert not (box / "data").exists() and not (box / "out").exists()


def test_other_special_files_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        info = zipfile.ZipInfo("fifo")
        info.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(info, b"")
    with pytest.raises(UnsafeZipError, match="'fifo' is a link or special file"):
        check_zip(tmp_path / "x.zip")


def test_safe_extract_writes_only_inside(tmp_path):
    z = write_zip(tmp_path / "a.zip", {"d/x.txt": b"x", "y.txt": b"y", "d/": b""})
    out = safe_extract(z, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out) == ["d/x.txt", "y.txt"]
    assert tree(tmp_path / "out") == ["d", "d/x.txt", "y.txt"]
    assert safe_extract(z, tmp_path / "two", members=["y.txt"]) == [tmp_path / "two/y.txt"]
    with pytest.raises(ValueError, match="has no entry 'nope'"):
        safe_extract(z, tmp_path / "three", members=["nope"])


# --- Kaggle notebooks -----------------------------------------------------------------------


def test_kaggle_notebook_detection(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert not in_kaggle_notebook()
    assert default_data_dir() == Path("data")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("KIT_KAGGLE_WORKING", str(tmp_path / "working"))
    assert in_kaggle_notebook()
    assert default_data_dir() == tmp_path / "working" / "data"
    monkeypatch.delenv("KIT_KAGGLE_WORKING")
    assert default_data_dir() == Path("/kaggle/working/data")


def test_kaggle_input_dir_zipped_extracted_or_absent(monkeypatch, tmp_path, zips):
    root = tmp_path / "kaggle" / "input"
    redux = "dogs-vs-cats-redux-kernels-edition"
    assert kaggle_input_dir(redux, root=root) is None
    zipped = root / redux
    zipped.mkdir(parents=True)
    (zipped / "sample_submission.csv").write_text("id,label\n")
    assert kaggle_input_dir(redux, root=root) is None  # no training data yet
    (zipped / "train.zip").write_bytes((zips / "train.zip").read_bytes())
    assert kaggle_input_dir(redux, root=root) == zipped
    extracted = root / "dogs-vs-cats" / "train"
    extracted.mkdir(parents=True)
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(root))
    assert kaggle_input_dir("dogs-vs-cats") == root / "dogs-vs-cats"
    assert kaggle_input_dir(PETS) is None
    (root / "some-other-slug").mkdir()
    assert kaggle_input_dir("some-other-slug") is None
    (root / "some-other-slug" / "train.zip").write_bytes(b"")
    assert kaggle_input_dir("some-other-slug") == root / "some-other-slug"


def test_layout_from_a_fake_kaggle_input(monkeypatch, tmp_path, zips):
    root = tmp_path / "kaggle" / "input" / PETS.slug
    root.mkdir(parents=True)
    for n in ("train.zip", "test.zip"):
        (root / n).write_bytes((zips / n).read_bytes())
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(root.parent))
    src = kaggle_input_dir(PETS)
    assert src == root
    out = prepare_layout(PETS, src, tmp_path / "working" / "data", progress=False)
    assert json.loads((out / "layout.json").read_text())["source"] == str(root.resolve())
