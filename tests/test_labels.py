"""Labels from a CSV (kit.data.labels), the seeded recorded split, the layouts a folder is found in, and
`ImageClassifierData.from_csv` / `kit train --folder` on a folder in Kaggle's own layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers.images import easy_image
from helpers.tiny import tiny
from kit.cli import main
from kit.data import ImageClassifierData, tfms_from_model
from kit.data.labels import (
    get_cv_idxs,
    read_class_tree,
    read_labels_csv,
    recorded_val_idxs,
    sort_classes,
    val_split,
)
from kit.data.layouts import detect_layout
from kit.models import archs
from kit.run import RunFolder

SZ = 32


def kaggle_folder(
    root: Path,
    classes=("husky", "pug", "corgi"),
    n=8,
    n_test=4,
    suffix=".jpg",
    images="train",
    csv_name="labels.csv",
    header=("id", "breed"),
) -> Path:
    """A competition folder as Kaggle ships one: `<images>/<id><suffix>`, a labels CSV, test/ and a sample."""
    rng = np.random.default_rng(0)
    (root / images).mkdir(parents=True)
    rows = []
    for k in range(n * len(classes)):
        ci = k % len(classes)
        i = f"{k:04x}ab"
        easy_image(ci, rng, 40).save(root / images / f"{i}{suffix}", quality=90)
        rows.append(f"{i},{classes[ci]}")
    (root / csv_name).write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    test = root / ("test_images" if images == "train_images" else "test")
    test.mkdir()
    for k in range(n_test):
        easy_image(k % len(classes), rng, 40).save(test / f"t{k}{suffix}", quality=90)
    sample = ",".join(["id", *sorted(classes)]) + "\n"
    sample += "".join(f"t{k}," + ",".join(["0.333"] * len(classes)) + "\n" for k in range(n_test))
    (root / "sample_submission.csv").write_text(sample)
    return root


# -- the CSV's rules ---------------------------------------------------------------------------------


def test_read_labels_csv_reads_rows_in_place(tmp_path):
    root = kaggle_folder(tmp_path / "c")
    t = read_labels_csv(root / "labels.csv", root / "train", ".jpg")
    assert len(t) == 24 and t.classes == ["corgi", "husky", "pug"]
    assert t.files[0] == root / "train" / "0000ab.jpg" and t.labels[0] == "husky" and t.y[0] == 1
    assert read_labels_csv(root / "labels.csv", root / "train", None).files == t.files  # suffix inferred


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda rows: rows + ["0000ab,pug"], ["line 26", "'0000ab' appears twice", "lines 2 and 26"]),
        (lambda rows: rows + [",pug"], ["line 26", "id ('id') is empty"]),
        (lambda rows: rows + ["ffff,"], ["line 26", "'ffff' has an empty label"]),
        (lambda rows: rows + ["ffff,pug"], ["line 26", "'ffff' has no image", "ffff.jpg"]),
        (lambda rows: rows + ["ffff,pug,extra"], ["line 26 has 3 fields"]),
    ],
)
def test_bad_rows_are_named(tmp_path, edit, words):
    root = kaggle_folder(tmp_path / "c")
    lines = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([lines[0]] + edit(lines[1:])) + "\n")
    with pytest.raises(ValueError) as e:
        read_labels_csv(root / "labels.csv", root / "train", ".jpg")
    for w in words:
        assert w in str(e.value)
    assert str(root / "labels.csv") in str(e.value)


def test_unknown_and_extra_columns(tmp_path):
    root = kaggle_folder(tmp_path / "c")
    with pytest.raises(ValueError, match="no column 'label' for the labels; the header is 'id,breed'"):
        read_labels_csv(root / "labels.csv", root / "train", ".jpg", label_column="label")
    text = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([text[0] + ",fold"] + [r + ",1" for r in text[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"line 1 has 3 columns \['id', 'breed', 'fold'\]"):
        read_labels_csv(root / "labels.csv", root / "train", ".jpg")
    t = read_labels_csv(root / "labels.csv", root / "train", ".jpg", id_column="id", label_column="breed")
    assert t.classes == ["corgi", "husky", "pug"]


def test_multi_label_is_refused_but_a_class_with_a_space_is_not(tmp_path):
    root = kaggle_folder(tmp_path / "c", classes=("clear primary", "clear road", "haze primary", "haze road"))
    with pytest.raises(ValueError, match="multi-label.*not support yet"):
        read_labels_csv(root / "labels.csv", root / "train", ".jpg")
    root = kaggle_folder(tmp_path / "d", classes=("Sugar beet", "Common wheat", "Fat Hen"))
    assert read_labels_csv(root / "labels.csv", root / "train", ".jpg").classes == [
        "Common wheat",
        "Fat Hen",
        "Sugar beet",
    ]


def test_ids_that_name_no_file_say_so(tmp_path):
    root = kaggle_folder(tmp_path / "c", suffix=".png")
    with pytest.raises(ValueError, match=r"do not name images of .*train.*'.png'|has no image"):
        read_labels_csv(root / "labels.csv", root / "train", ".jpg")
    assert read_labels_csv(root / "labels.csv", root / "train", None).files[0].suffix == ".png"


def test_classes_sort_as_numbers_when_they_are_numbers():
    assert sort_classes(["10", "2", "0", "2"]) == ["0", "2", "10"]
    assert sort_classes(["b", "a"]) == ["a", "b"]


# -- the split -----------------------------------------------------------------------------------------


def test_get_cv_idxs_is_the_seeded_lesson_two_draw():
    a = get_cv_idxs(100)
    assert len(a) == 20 and np.array_equal(a, get_cv_idxs(100, 0.2, 42)) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, get_cv_idxs(100, seed=1))
    with pytest.raises(ValueError, match="val_pct"):
        get_cv_idxs(10, val_pct=1.5)


def test_val_split_is_stratified_when_every_class_has_two_rows():
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 40
    v = val_split(labels, 0.2, 42)
    assert sorted(labels[i] for i in v).count("b") == 2 and len(v) == 20
    # A class of one row trains; the others are split.
    labels = ["a"] * 9 + ["b"]
    for seed in range(10):
        v = val_split(labels, 0.2, seed)
        assert len(v) == 2 and "b" not in [labels[i] for i in v]
    with pytest.raises(ValueError, match="leaves no training image of class 'b'"):
        val_split(["a"] * 5 + ["b"] * 2, 0.9, 0)


def test_the_split_is_recorded_and_reused(tmp_path):
    root = kaggle_folder(tmp_path / "c")
    t = read_labels_csv(root / "labels.csv", root / "train", ".jpg")
    idxs, record = recorded_val_idxs(t, tmp_path / "work")
    assert record == tmp_path / "work" / "splits" / "labels-val20-seed42.json"
    saved = json.loads(record.read_text())
    assert saved["valid"] == [t.ids[i] for i in idxs] and saved["seed"] == 42
    # A row added later trains: the recorded valid rows stay the valid rows.
    saved["valid"] = saved["valid"][:-1]
    record.write_text(json.dumps(saved))
    again, _ = recorded_val_idxs(t, tmp_path / "work")
    assert [t.ids[i] for i in again] == saved["valid"]
    record.write_text("{ damaged")
    assert np.array_equal(recorded_val_idxs(t, tmp_path / "work")[0], idxs)  # made again from the seed


# -- layouts -----------------------------------------------------------------------------------------


def test_detect_layout_finds_each_kind(tmp_path):
    c = detect_layout(kaggle_folder(tmp_path / "csv"))
    assert (c.kind, c.labels.name, c.images.name, c.test.name) == ("csv", "labels.csv", "train", "test")
    assert c.sample_submission.name == "sample_submission.csv"
    aptos = detect_layout(kaggle_folder(tmp_path / "aptos", images="train_images", csv_name="train.csv"))
    assert (aptos.kind, aptos.images.name, aptos.test.name) == ("csv", "train_images", "test_images")
    tree = tmp_path / "tree"
    for cls in ("Maize", "Fat Hen"):
        (tree / "train" / cls).mkdir(parents=True)
        easy_image(0, np.random.default_rng(0)).save(tree / "train" / cls / "x.png")
    assert detect_layout(tree).kind == "tree"
    assert read_class_tree(tree / "train").ids == ["Fat Hen/x.png", "Maize/x.png"]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="none of the layouts.*notes.txt"):
        detect_layout(tmp_path / "junk")


def test_two_candidate_csvs_ask_for_labels(tmp_path):
    root = kaggle_folder(tmp_path / "c")
    (root / "extra.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="2 CSVs that could be the labels.*--labels"):
        detect_layout(root)
    assert detect_layout(root, labels="labels.csv").labels == root / "labels.csv"
    with pytest.raises(FileNotFoundError, match="--images nope"):
        detect_layout(root, labels="labels.csv", images="nope")


# -- from_csv and kit train --folder ----------------------------------------------------------------


def test_from_csv_reads_a_read_only_folder_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    root = kaggle_folder(tmp_path / "c")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        n = len(read_labels_csv(root / "labels.csv", root / "train", ".jpg"))
        data = ImageClassifierData.from_csv(
            root,
            "train",
            f"{root}/labels.csv",
            val_idxs=get_cv_idxs(n),
            suffix=".jpg",
            test_name="test",
            tfms=tfms_from_model("resnet50", SZ),
            bs=8,
            num_workers=1,
        )
        assert len(data.val_ds) == 4 and len(data.trn_ds) == 20 and len(data.test_ds) == 4
        assert data.classes == ["corgi", "husky", "pug"] and data.trn_ds.images.shape[1:] == (SZ, SZ, 3)
        assert all(str(f).startswith(str(root / "train")) for f in data.trn_files)  # no copy, no link
        d2 = ImageClassifierData.from_csv(root, "train", "labels.csv", suffix=".jpg", bs=8, num_workers=1)
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written into it
        assert (d2.work_dir / "splits" / "labels-val20-seed42.json").is_file()
    finally:
        for p in [root, *root.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


@pytest.mark.backends
def test_kit_train_and_submit_a_csv_folder(tmp_path, monkeypatch, capsys):
    """`kit train --folder` on Kaggle's layout, found by itself; the split recorded and reused on resume;
    `kit submit --folder` writes the sample's format."""
    monkeypatch.setitem(archs.ARCHS, "tiny", tiny)
    monkeypatch.chdir(tmp_path)
    root = kaggle_folder(tmp_path / "c")
    config = tmp_path / "train.json"
    config.write_text('{"tta": false, "lr": 0.01, "epochs": 1, "bs": 8, "metric": "f1_micro"}')
    args = ["train", "--folder", str(root), "--arch", "tiny", "--weights", "none", "--size", str(SZ)]
    assert main([*args, "--config", str(config), "--baseline"]) == 0
    out = capsys.readouterr().out
    assert "f1_micro" in out and "train: lr 0.01" in out and "baseline: LogisticRegression" in out
    run = RunFolder.latest(root)
    saved = run.read_config()
    assert saved["labels"] == str(root / "labels.csv") and saved["data"]["layout"] == "csv"
    assert saved["data"]["train"] == 20 and saved["data"]["valid"] == 4
    record = json.loads((root / "splits" / "labels-val20-seed42.json").read_text())
    preds = run.read_predictions()
    assert sorted(Path(f).stem for f in preds.val_files) == sorted(record["valid"])
    history = run.read_history()
    assert "f1_micro" in history["history"][-1] and history["final"]["metric"] == "f1_micro"
    assert (
        0 <= history["baseline"]["accuracy"] <= 1 and history["baseline"]["f1_micro"] == history["baseline"]["accuracy"]
    )

    assert main(["analyze", "--folder", str(root)]) == 0
    assert "f1_micro" in (run.path / "report.html").read_text()
    assert main(["predict", "--folder", str(root), str(root / "test")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4  # analyze's line, then one per test image

    assert main(["submit", "--folder", str(root), "--dry-run", "--out-dir", str(tmp_path / "subs")]) == 0
    line = capsys.readouterr().out
    path = Path(line.split("submit: ")[1].split(" (")[0])
    rows = path.read_text().splitlines()
    assert rows[0] == "id,corgi,husky,pug" and len(rows) == 5 and rows[1].startswith("t0,")
