"""From a competition's zips to the lesson's folders: safe extraction, a seeded stratified split, sample/.

`prepare_layout` builds, under `data_dir/<slug>/`:

    train/<class>/   the labelled images left for training
    valid/<class>/   a seeded, stratified split of `valid` images
    sample/train/<class>/, sample/valid/<class>/   a small copy with the same layout (hard links)
    test/            the unlabelled test images, flat
    models/, tmp/    saved weights and precomputed activations
    layout.json      the parameters that made it (running again with them changes nothing)

Every zip entry is checked before anything is written (no `..`, no absolute path, no link), and the
layout is built in a hidden staging folder and moved into place, so a crash never leaves half of it.
The Kaggle-notebook helpers find a competition mounted under /kaggle/input.

Example:

```python
root = prepare_layout(get_competition("dogs-vs-cats"), "data/dogs-vs-cats", "data")
sorted(p.name for p in root.iterdir())   # ['layout.json', 'models', 'sample', 'test', 'tmp', ...]
```
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kit.checks import check_int
from kit.data.images import is_image_name
from kit.env import kaggle_input_root
from kit.io import atomic_write_json, is_no_room, no_room_error
from kit.kaggle.competition import Competition, get_competition

LAYOUT_FILE = "layout.json"
# Bumped when the layout's meaning changes, so an old layout is not silently reused.
LAYOUT_VERSION = 1
# Enough images for a quick experiment that still shows whether training works (the lesson's sample/).
DEFAULT_SAMPLE = (200, 100)
DEFAULT_SEED = 42
SPLIT_DIRS = ("train", "valid", "sample", "test")
WORK_DIRS = ("models", "tmp")


class UnsafeZipError(ValueError):
    """A zip entry would land outside the destination folder or is a link; nothing was extracted."""


# ---------------------------------------------------------------------------------------------
# Splitting (pure functions).


def split_counts(class_counts: Sequence[int], n: int) -> list[int]:
    """How many of `n` chosen items each class gets, proportional to its size (largest remainder).

    Example:

    ```python
    split_counts([10, 30], 8)   # [2, 6]
    ```

    Args:
        class_counts: Sequence of integers. The number of items in each class.
        n: Integer. The total to choose, at most sum(class_counts).
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    total = int(counts.sum())
    if n < 0 or n > total:
        raise ValueError(f"n must be in [0, {total}] (the number of items). Received n={n}")
    if total == 0:
        return [0] * len(counts)
    quota = counts * n / total
    out = np.floor(quota).astype(np.int64)
    # The remaining items go to the largest fractional parts; ties go to the earlier class.
    order = sorted(range(len(counts)), key=lambda i: (-(quota[i] - out[i]), i))
    for i in order[: n - int(out.sum())]:
        out[i] += 1
    return [int(v) for v in out]


def stratified_split(labels: Sequence[str], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits items into (kept, chosen) index arrays, choosing `n` with each class's share preserved.

    The result depends only on `labels` (in their given order), `n` and `seed`.

    Example:

    ```python
    kept, chosen = stratified_split(["a"] * 10 + ["b"] * 30, 8, seed=42)   # 2 a's and 6 b's chosen
    ```

    Args:
        labels: Sequence of strings. The class of each item.
        n: Integer. How many items to choose.
        seed: Integer. The random seed.

    Returns:
        Two sorted integer arrays of indices into labels: the kept ones and the chosen ones.
    """
    labels = list(labels)
    classes = sorted(set(labels))
    by_class = [np.array([i for i, l in enumerate(labels) if l == c], dtype=np.int64) for c in classes]
    counts = split_counts([len(ix) for ix in by_class], n)
    rng = np.random.default_rng(seed)
    chosen = [ix[rng.permutation(len(ix))[:k]] for ix, k in zip(by_class, counts)]
    chosen_all = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), chosen_all)
    return kept, chosen_all


# ---------------------------------------------------------------------------------------------
# Safe extraction.


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name:
        return "has a NUL byte in its name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "contains '..' and would land outside the folder"
    # Unix zips keep the file's mode in the high 16 bits of external_attr; a link there would
    # make a later entry (or a reader) write through it to anywhere on the disk.
    ftype = stat.S_IFMT(info.external_attr >> 16)
    if ftype == stat.S_IFLNK:
        return "is a symbolic link"
    if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a link or special file, not a regular file"
    return None


def check_zip(zip_path: str | os.PathLike) -> list[zipfile.ZipInfo]:
    """Checks that a file is a zip whose every entry is safe to extract, and returns its file entries.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a zip (e.g. an interrupted download or an HTML error page).
        UnsafeZipError: an entry has an absolute path, a `..` part, or is a link.
    """
    path = Path(zip_path)
    if not path.is_file():
        raise FileNotFoundError(f"zip file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a zip file (an interrupted download?); delete it and download it again")
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    for info in infos:
        problem = _entry_problem(info)
        if problem:
            raise UnsafeZipError(
                f"refusing to extract {path}: entry {info.filename!r} {problem}; nothing was extracted"
            )
    return [i for i in infos if not i.is_dir()]


def _entry_parts(name: str) -> list[str]:
    return [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]


def _read_error(zip_path: Path, name: str, e: Exception) -> ValueError:
    return ValueError(f"{zip_path} is damaged: entry {name!r} cannot be read ({e}); delete it and download it again")


def safe_extract(
    zip_path: str | os.PathLike,
    dest_dir: str | os.PathLike,
    members: Iterable[str] | None = None,
    progress: bool = False,
) -> list[Path]:
    """Extracts a zip into a folder, refusing any entry that would land outside it.

    Every entry is checked first (see `check_zip`), then the files are written into a temporary
    folder inside `dest_dir` and moved into place, so a failure leaves no partial file behind.

    Example:

    ```python
    safe_extract("data/dogs-vs-cats.zip", "data/dogs-vs-cats", members=["train.zip"])
    ```

    Args:
        zip_path: Path. The zip file.
        dest_dir: Path. The folder to extract into (created if missing).
        members: Iterable of strings or None. Only these entry names; None extracts every file.
        progress: Boolean. Show a progress bar.

    Returns:
        The paths of the extracted files.
    """
    zip_path, dest = Path(zip_path), Path(dest_dir)
    infos = check_zip(zip_path)
    if members is not None:
        wanted = set(members)
        missing = wanted - {i.filename for i in infos}
        if missing:
            raise ValueError(f"{zip_path} has no entry {sorted(missing)[0]!r}")
        infos = [i for i in infos if i.filename in wanted]
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    out: list[Path] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in tqdm(infos, desc=f"extracting {zip_path.name}", unit="file", disable=not progress):
                parts = _entry_parts(info.filename)
                target = stage.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_entry(zf, info, target, zip_path)
        for info in infos:
            parts = _entry_parts(info.filename)
            final = dest.joinpath(*parts)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage.joinpath(*parts), final)
            out.append(final)
    except OSError as e:
        if is_no_room(e):
            raise no_room_error(e, dest, doing=f"extracting {zip_path}") from e
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _copy_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, zip_path: Path) -> None:
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as e:
        raise _read_error(zip_path, info.filename, e) from e


def _link_or_copy(src: Path, dst: Path) -> None:
    # A hard link costs no space and no time; another file system (e.g. a read-only
    # /kaggle/input) needs a copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


# ---------------------------------------------------------------------------------------------
# Finding the source: a zip, an already-extracted folder, or Kaggle's one-zip bundle.


class _Source:
    """The files of one of the competition's archives, from a zip or an extracted folder."""

    def __init__(self, path: Path, is_zip: bool):
        self.path = path
        self.is_zip = is_zip
        if is_zip:
            self.entries = [
                (_entry_parts(i.filename)[-1], i) for i in check_zip(path) if "__MACOSX" not in _entry_parts(i.filename)
            ]
        else:
            self.entries = [(p.name, p) for p in sorted(path.rglob("*")) if p.is_file()]

    def write(self, entry, target: Path, zf: zipfile.ZipFile | None) -> None:
        if self.is_zip:
            _copy_entry(zf, entry, target, self.path)
        else:
            _link_or_copy(entry, target)


def _find_source(comp: Competition, src_dir: Path, name: str) -> _Source:
    path = src_dir / name
    if path.is_file():
        return _Source(path, is_zip=True)
    folder = src_dir / (name[:-4] if name.lower().endswith(".zip") else name)
    if folder.is_dir():
        return _Source(folder, is_zip=False)
    # `kaggle competitions download` fetches one <slug>.zip that holds the competition's files.
    bundle = src_dir / f"{comp.slug}.zip"
    if bundle.is_file() and name in {i.filename for i in check_zip(bundle)}:
        safe_extract(bundle, src_dir, members=[name])
        return _Source(path, is_zip=True)
    raise FileNotFoundError(
        f"{name} for {comp.slug!r} not found in {src_dir} (neither {path.name} nor an extracted "
        f"folder {folder.name}/); run `kit download -c {comp.slug}` first"
    )


# ---------------------------------------------------------------------------------------------
# The layout.


def _check_params(valid: int, seed: int, sample_size: Sequence[int]) -> tuple[int, int]:
    check_int("valid", valid, min=0)
    check_int("seed", seed)
    if not (isinstance(sample_size, (tuple, list)) and len(sample_size) == 2):
        raise ValueError(
            f"sample_size must be (train images, valid images), two integers >= 0. Received sample_size={sample_size!r}"
        )
    return check_int("sample_size[0]", sample_size[0], min=0), check_int("sample_size[1]", sample_size[1], min=0)


def read_layout(root: str | os.PathLike) -> dict | None:
    """The record `prepare_layout` left in `root/layout.json`, or None when there is none."""
    path = Path(root) / LAYOUT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path} cannot be read ({e}); run again with force=True (`--force`) to rebuild the layout"
        ) from e


def _labelled(comp: Competition, source: _Source) -> tuple[list[str], list, list[str]]:
    names, entries, labels = [], [], []
    seen: dict[str, object] = {}
    for name, entry in source.entries:
        if not is_image_name(name):
            continue
        label = comp.label_from_name(name)
        if label is None:
            continue
        if label not in comp.classes:
            raise ValueError(
                f"{comp.slug!r}: label_from_name({name!r}) gave {label!r}, which is not one of the classes "
                f"{list(comp.classes)}"
            )
        if name in seen:
            raise ValueError(f"{source.path} holds two training images named {name!r}")
        seen[name] = entry
        names.append(name)
        entries.append(entry)
        labels.append(label)
    order = sorted(range(len(names)), key=lambda i: names[i])
    return [names[i] for i in order], [entries[i] for i in order], [labels[i] for i in order]


def _test_files(comp: Competition, source: _Source) -> list[tuple[str, object]]:
    out, ids = [], {}
    for name, entry in source.entries:
        if not is_image_name(name):
            continue
        tid = comp.test_id(name)
        if not tid or tid in ids:
            raise ValueError(
                f"{source.path}: test images must have distinct, non-empty ids; {name!r} gives id {tid!r}"
                + (f" like {ids[tid]!r}" if tid in ids else "")
            )
        ids[tid] = name
        out.append((name, entry))
    return sorted(out, key=lambda t: t[0])


def prepare_layout(
    competition: Competition | str,
    zips_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    valid: int | None = None,
    seed: int = DEFAULT_SEED,
    sample_size: Sequence[int] = DEFAULT_SAMPLE,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Builds the lesson's class-folder layout under `data_dir/<slug>/` from the competition's files.

    The source may be the zips (`train.zip`, …), Kaggle's one-zip bundle `<slug>.zip`, or folders
    already extracted (`train/`, …, e.g. a Kaggle notebook's /kaggle/input/<slug>/). The validation
    set is a seeded, stratified split of the labelled images; sample/ holds a smaller split with the
    same layout. Files are hard-linked where possible, never moved out of the source.

    Running again with the same parameters changes nothing. A different `valid`, `seed` or
    `sample_size` over an existing layout raises ValueError unless `force=True`, which rebuilds
    train/, valid/, sample/ and test/ and empties tmp/ (its activations belong to the old split);
    models/ is kept.

    Example:

    ```python
    root = prepare_layout("dogs-vs-cats-redux-kernels-edition", "data/dogs-vs-cats-redux-kernels-edition", "data")
    ```

    Args:
        competition: Competition or slug.
        zips_dir: Path. The folder holding the competition's files.
        data_dir: Path. The layout goes in `data_dir/<slug>/` (it may be the same folder as zips_dir).
        valid: Integer or None. The number of validation images; None means `competition.valid_size`.
        seed: Integer. The seed of the split.
        sample_size: Two integers. Training and validation images in sample/ (fewer if there are fewer).
        force: Boolean. Rebuild over an existing layout made with other parameters.
        progress: Boolean. Show a progress bar while extracting.

    Returns:
        The layout's root folder, `data_dir/<slug>`.
    """
    comp = get_competition(competition)
    valid = comp.valid_size if valid is None else valid
    n_sample_train, n_sample_valid = _check_params(valid, seed, sample_size)
    zips_dir, root = Path(zips_dir), Path(data_dir) / comp.slug
    params = {
        "slug": comp.slug,
        "classes": list(comp.classes),
        "valid": int(valid),
        "seed": int(seed),
        "sample_size": [n_sample_train, n_sample_valid],
        "layout_version": LAYOUT_VERSION,
    }
    record = read_layout(root) if root.is_dir() else None
    if record is not None:
        old = {k: record.get(k) for k in params}
        if old == params and not force:
            for d in WORK_DIRS:
                (root / d).mkdir(exist_ok=True)
            return root
        if not force:
            changed = ", ".join(f"{k}={old[k]!r} → {params[k]!r}" for k in params if old[k] != params[k])
            raise ValueError(
                f"{root} already holds a layout made with other parameters ({changed}); "
                "use force=True (`--force`) to rebuild it"
            )
    elif not force:
        leftovers = [d for d in SPLIT_DIRS if (root / d).exists()]
        if leftovers:
            raise ValueError(
                f"{root} has {', '.join(d + '/' for d in leftovers)} but no {LAYOUT_FILE} (an interrupted run, "
                "or folders not made by kit); use force=True (`--force`) to replace them"
            )

    train_src = _find_source(comp, zips_dir, comp.train_zip)
    test_src = _find_source(comp, zips_dir, comp.test_zip)
    for src in (train_src, test_src):
        # A rebuild deletes root/train etc.; it must never delete its own source.
        if not src.is_zip and any(_inside(src.path, root / d) for d in SPLIT_DIRS):
            raise ValueError(f"the extracted source {src.path} must not lie inside the layout folder {root}")

    names, entries, labels = _labelled(comp, train_src)
    if not names:
        raise ValueError(
            f"{train_src.path} holds no labelled training images for {comp.slug!r} (classes {list(comp.classes)})"
        )
    counts = {c: labels.count(c) for c in comp.classes}
    empty = [c for c, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"{train_src.path} holds no training images of class {empty[0]!r} (counts {counts})")
    per_class = dict(zip(sorted(counts), split_counts([counts[c] for c in sorted(counts)], min(valid, len(names)))))
    if valid >= len(names) or any(counts[c] - per_class[c] < 1 for c in counts):
        raise ValueError(
            f"valid={valid} leaves no training images for some class of {comp.slug!r} "
            f"({len(names)} labelled images: {counts}); pass a smaller valid"
        )
    tests = _test_files(comp, test_src)
    if not tests:
        raise ValueError(f"{test_src.path} holds no test images")

    kept, chosen = stratified_split(labels, valid, seed)
    # The sample is drawn from each split with its own seeds, so it never mixes train and valid.
    _, s_train = stratified_split([labels[i] for i in kept], min(n_sample_train, len(kept)), seed + 1)
    _, s_valid = stratified_split([labels[i] for i in chosen], min(n_sample_valid, len(chosen)), seed + 2)

    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".layout-", dir=root))
    try:
        for split in ("train", "valid", "sample/train", "sample/valid"):
            for c in comp.classes:
                (stage / split / c).mkdir(parents=True, exist_ok=True)
        (stage / "test").mkdir()
        jobs = [(f"train/{labels[i]}/{names[i]}", train_src, entries[i]) for i in kept]
        jobs += [(f"valid/{labels[i]}/{names[i]}", train_src, entries[i]) for i in chosen]
        jobs += [(f"test/{name}", test_src, entry) for name, entry in tests]
        _write_all(jobs, stage, progress, f"extracting {comp.slug}")
        for split, picks, base in (("train", s_train, kept), ("valid", s_valid, chosen)):
            for j in picks:
                i = base[j]
                rel = f"{labels[i]}/{names[i]}"
                _link_or_copy(stage / split / rel, stage / "sample" / split / rel)

        # Only now, with the new layout complete, does the old one go.
        (root / LAYOUT_FILE).unlink(missing_ok=True)
        for d in SPLIT_DIRS:
            if (root / d).exists():
                shutil.rmtree(root / d)
        if force and (root / "tmp").is_dir():
            shutil.rmtree(root / "tmp")
        for d in SPLIT_DIRS:
            os.replace(stage / d, root / d)
        for d in WORK_DIRS:
            (root / d).mkdir(exist_ok=True)
        record = dict(params)
        record["counts"] = {
            "train": {c: sum(labels[i] == c for i in kept) for c in comp.classes},
            "valid": {c: sum(labels[i] == c for i in chosen) for c in comp.classes},
            "sample": [int(len(s_train)), int(len(s_valid))],
            "test": len(tests),
        }
        record["source"] = str(zips_dir.resolve())
        atomic_write_json(root / LAYOUT_FILE, record, sort_keys=True)
    except OSError as e:
        if is_no_room(e):
            raise no_room_error(e, root, doing="building the layout") from e
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root


# ---------------------------------------------------------------------------------------------
# Competitions whose labels are in a CSV or in class folders: the images are read where they lie.


def _descend(folder: Path, name: str) -> Path:
    """The folder that holds the images (or their class folders): `folder` itself, or the `name/` (or
    only) folder a zip wrapped them in."""
    for _ in range(3):
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
        if any(is_image_name(e.name) for e in os.scandir(folder)) or (len(subs) >= 2 and not (folder / name).is_dir()):
            return folder
        if (folder / name).is_dir():
            folder = folder / name
        elif len(subs) == 1:
            folder = subs[0]
        else:
            return folder
    return folder


def _extracted_file(zips_dir: Path, name: str, root: Path) -> Path:
    """A CSV of the competition, as served (`labels.csv`) or zipped by Kaggle (`labels.csv.zip`)."""
    for where in (zips_dir, root):
        if (where / name).is_file():
            return where / name
    zipped = zips_dir / f"{name}.zip"
    if zipped.is_file():
        safe_extract(zipped, root)
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{name} not found in {zips_dir} (nor zipped as {zipped.name}); run `kit download` first.")


def _extracted_folder(zips_dir: Path, zip_name: str, root: Path, folder: str, progress: bool) -> Path:
    """The image folder of one of the competition's archives: already extracted beside it (a Kaggle
    notebook's input) or by an earlier run, else extracted now into `root/<folder>` (staged, then renamed)."""
    plain = zip_name[:-4] if zip_name.lower().endswith(".zip") else zip_name
    for candidate in (zips_dir / plain, zips_dir / folder, root / folder):
        if candidate.is_dir():
            return _descend(candidate, folder)
    zip_path = zips_dir / zip_name
    if not zip_path.is_file():
        raise FileNotFoundError(
            f"{zip_name} not found in {zips_dir} (neither the zip nor an extracted folder {plain}/); "
            "run `kit download` first"
        )
    return _extract_whole(zip_path, root / folder, inner=folder, progress=progress)


def _extract_whole(zip_path: Path, target: Path, inner: str | None = None, progress: bool = True) -> Path:
    """Extracts a zip into a staging folder beside `target`, then renames it (or its `inner` image
    folder, `_descend`) to `target`: a folder there is always complete, so a later run may trust it."""
    stage = target.parent / f".extract-{target.name}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        safe_extract(zip_path, stage, progress=progress)
        os.replace(_descend(stage, inner) if inner else stage, target)
    except OSError as e:
        if is_no_room(e):
            raise no_room_error(e, target.parent, doing=f"extracting {zip_path.name}") from e
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def prepare_labelled_layout(
    competition: Competition | str,
    zips_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """For a competition whose labels are in a CSV (or in `train/<class>/`): its files extracted once
    (never copied or linked one by one: histopathology has 220,025 tiles; a mounted /kaggle/input is
    read in place), every row of its labels checked, and `data_dir/<slug>/layout.json` saying where each
    part is (`kit.data.layouts.Layout`). The validation split is made, and recorded, by the first run.

    Returns:
        The competition's folder, `data_dir/<slug>`, which holds layout.json, models/ and tmp/.
    """
    from kit.data.labels import read_class_tree, read_labels_csv
    from kit.data.layouts import Layout

    comp = get_competition(competition)
    zips_dir, root = Path(zips_dir), Path(data_dir) / comp.slug
    root.mkdir(parents=True, exist_ok=True)
    if force:
        for d in (comp.train_folder, comp.test_folder, "tmp", "splits"):
            if (root / d).is_dir() and not _inside(zips_dir, root / d):
                shutil.rmtree(root / d)
    bundle = zips_dir / f"{comp.slug}.zip"
    if bundle.is_file() and not (zips_dir / comp.train_zip).exists():
        # Kaggle's one zip of the whole competition: extracted once, beside it.
        files = zips_dir / comp.slug
        zips_dir = files if files.is_dir() else _extract_whole(bundle, files, progress=progress)
    images = _extracted_folder(zips_dir, comp.train_zip, root, comp.train_folder, progress)
    test = _extracted_folder(zips_dir, comp.test_zip, root, comp.test_folder, progress)
    sample = _extracted_file(zips_dir, comp.sample_submission, root) if comp.sample_submission else None
    if comp.labels_csv:
        labels = _extracted_file(zips_dir, comp.labels_csv, root)
        table = read_labels_csv(labels, images, comp.suffix, comp.id_column, comp.label_column)
        layout = Layout(
            "csv",
            root.absolute(),
            images.absolute(),
            labels=labels.absolute(),
            test=test.absolute(),
            sample_submission=sample.absolute() if sample else None,
            suffix=comp.suffix,
            id_column=comp.id_column,
            label_column=comp.label_column,
        )
    else:
        table = read_class_tree(images)
        layout = Layout(
            "tree",
            root.absolute(),
            images.absolute(),
            test=test.absolute(),
            sample_submission=sample and sample.absolute(),
        )
    unknown = sorted(set(table.labels) - set(comp.classes)) if comp.classes else []
    if unknown:
        raise ValueError(f"{table.source}: labels {unknown[:5]} are not classes of {comp.slug!r} {list(comp.classes)}.")
    counts = {c: table.labels.count(c) for c in table.classes}
    for d in WORK_DIRS:
        (root / d).mkdir(exist_ok=True)
    record = {
        "slug": comp.slug,
        "classes": table.classes,
        "layout_version": LAYOUT_VERSION,
        "layout": layout.to_dict(),
        "counts": {"train": counts, "test": sum(1 for e in os.scandir(test) if is_image_name(e.name))},
        "source": str(zips_dir.resolve()),
    }
    atomic_write_json(root / LAYOUT_FILE, record, sort_keys=True)
    return root


def _write_all(jobs: list, stage: Path, progress: bool, desc: str) -> None:
    zips: dict[Path, zipfile.ZipFile] = {}
    try:
        for rel, src, entry in tqdm(jobs, desc=desc, unit="file", disable=not progress):
            zf = None
            if src.is_zip:
                zf = zips.get(src.path) or zips.setdefault(src.path, zipfile.ZipFile(src.path))
            src.write(entry, stage / rel, zf)
    finally:
        for zf in zips.values():
            zf.close()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Kaggle notebooks: a competition's mounted input.


def kaggle_input_dir(slug: Competition | str, root: str | os.PathLike | None = None) -> Path | None:
    """The competition's mounted input folder, `<root>/<slug>/`, zipped or extracted; None if absent.

    With a Competition (or a known slug) the folder counts only when it holds the training data
    (the zip, an extracted folder, or the `<slug>.zip` bundle).

    Example:

    ```python
    if in_kaggle_notebook() and (src := kaggle_input_dir("dogs-vs-cats")):
        prepare_layout("dogs-vs-cats", src, default_data_dir())
    ```

    Args:
        slug: Competition or slug.
        root: Path or None. The input root; None means `kaggle_input_root()`.
    """
    name = slug.slug if isinstance(slug, Competition) else slug
    folder = (Path(root) if root is not None else kaggle_input_root()) / name
    if not folder.is_dir():
        return None
    try:
        comp = get_competition(slug)
    except ValueError:
        return folder if any(folder.iterdir()) else None
    train = comp.train_zip
    candidates = (
        folder / train,
        folder / (train[:-4] if train.lower().endswith(".zip") else train),
        folder / f"{comp.slug}.zip",
    )
    return folder if any(p.exists() for p in candidates) else None
