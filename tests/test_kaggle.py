"""kit.kaggle.client against a local fake Kaggle server that the real `kaggle` client talks to."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from helpers.fake_kaggle import FakeKaggle, make_zip
from kit.kaggle import client as kk

SLUG = "tiny-cats"
# Larger than the client's 1 MiB chunk, so an interrupted download leaves a partial file behind.
BIG = 3 * 2**20

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def competition(fake_kaggle):
    """A small competition: a stored zip of random bytes (3 MiB) and a CSV."""
    rng = __import__("random").Random(0)
    files = {
        "train.zip": make_zip({"train/cat.1.jpg": rng.randbytes(BIG), "train/dog.1.jpg": b"dog"}),
        "sample_submission.csv": b"id,label\n1,0.5\n2,0.5\n",
    }
    fake_kaggle.add_competition(SLUG, files)
    return files


def write_kaggle_json(fake: FakeKaggle, mode: int, key: str | None = None) -> Path:
    path = Path.home() / ".kaggle" / "kaggle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"username": fake.username, "key": key or fake.key}))
    path.chmod(mode)
    return path


def test_clean_download_then_rerun_changes_nothing(fake_kaggle, competition, tmp_path):
    dest = tmp_path / "raw"
    paths = kk.download_competition(SLUG, dest, progress=False)
    assert paths == [dest / "sample_submission.csv", dest / "train.zip"]
    for path in paths:
        assert path.read_bytes() == competition[path.name]
    assert sorted(p.name for p in dest.iterdir()) == ["sample_submission.csv", "train.zip"]

    stamps = {p: p.stat().st_mtime_ns for p in paths}
    assert kk.download_competition(SLUG, dest, progress=True) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps


def test_named_files_only_and_unknown_name(fake_kaggle, competition, tmp_path):
    paths = kk.download_competition(SLUG, tmp_path, files=["train.zip"], progress=False)
    assert paths == [tmp_path / "train.zip"]
    assert not (tmp_path / "sample_submission.csv").exists()
    listed = r"no file named 'test\.zip'.*sample_submission\.csv, train\.zip"
    with pytest.raises(kk.KaggleNotFoundError, match=listed):
        kk.download_competition(SLUG, tmp_path, files=["test.zip"], progress=False)


def test_dropped_connection_resumes_with_range(fake_kaggle, competition, tmp_path):
    fake_kaggle.truncate_next(SLUG, "train.zip", at=BIG // 2)
    [path] = kk.download_competition(SLUG, tmp_path, files=["train.zip"], progress=False)
    assert path.read_bytes() == competition["train.zip"]
    first, second = fake_kaggle.blob_requests(SLUG, "train.zip")
    assert "Range" not in first
    start = int(second["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(competition["train.zip"])
    assert second["If-Range"].startswith('"')
    assert not Path(f"{path}{kk.PARTIAL_SUFFIX}").exists()


# Run in a child process, so the test can kill it mid-download as Ctrl-C or a crash would.
# `import kit` is light (no Keras), so the child starts fast.
CHILD = """
import sys
from kit.kaggle.client import download_competition
download_competition(sys.argv[1], sys.argv[2], files=["train.zip"], progress=False)
"""


def test_killed_download_resumes_in_a_later_run(fake_kaggle, competition, tmp_path):
    stall = fake_kaggle.stall_next(SLUG, "train.zip", at=BIG // 2)
    partial = tmp_path / "train.zip"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, SLUG, str(tmp_path)],
        env=fake_kaggle.child_env(tmp_path / "site"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not (partial.is_file() and partial.stat().st_size > 0):
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never wrote a partial file"
            time.sleep(0.05)
        assert stall.reached.is_set()
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stderr.close()
        stall.release.set()
    assert Path(f"{partial}{kk.PARTIAL_SUFFIX}").is_file()
    done = partial.stat().st_size

    [path] = kk.download_competition(SLUG, tmp_path, files=["train.zip"], progress=False)
    assert path.read_bytes() == competition["train.zip"]
    assert fake_kaggle.blob_requests(SLUG, "train.zip")[-1]["Range"] == f"bytes={done}-"
    assert not Path(f"{path}{kk.PARTIAL_SUFFIX}").exists()


def test_bad_key_is_401_and_never_shown(fake_kaggle, competition, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key-123")
    with pytest.raises(kk.KaggleAuthError, match=r"HTTP 401.*kaggle\.com/settings") as caught:
        kk.download_competition(SLUG, tmp_path, progress=False)
    assert "wrong-key-123" not in str(caught.value)


def test_bad_token_is_401(fake_kaggle, competition, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_not-the-token")
    with pytest.raises(kk.KaggleAuthError, match="HTTP 401") as caught:
        kk.authenticate()
    assert "KGAT_not-the-token" not in str(caught.value)


def test_access_token_works(fake_kaggle, competition, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", fake_kaggle.token)
    paths = kk.download_competition(SLUG, tmp_path, files=["sample_submission.csv"], progress=False)
    assert paths[0].read_bytes() == competition["sample_submission.csv"]
    calls = [headers for method, path, headers in fake_kaggle.requests if method == "POST"]
    assert calls and all(h["Authorization"] == f"Bearer {fake_kaggle.token}" for h in calls)


def test_rules_not_accepted_is_403_with_rules_url(fake_kaggle, competition, tmp_path):
    fake_kaggle.competitions[SLUG].rules_accepted = False
    rules = f"https://www.kaggle.com/competitions/{SLUG}/rules"
    with pytest.raises(kk.KaggleRulesError, match="HTTP 403") as caught:
        kk.download_competition(SLUG, tmp_path, progress=False)
    assert rules in str(caught.value) and caught.value.rules_url == rules
    csv = tmp_path / "submission.csv"
    csv.write_text("id,label\n1,0.5\n")
    with pytest.raises(kk.KaggleRulesError, match=rules):
        kk.submit(SLUG, csv, "first try")


def test_unknown_competition_is_404(fake_kaggle, tmp_path):
    with pytest.raises(kk.KaggleNotFoundError, match=r"no competition 'no-such-thing' \(HTTP 404"):
        kk.download_competition("no-such-thing", tmp_path, progress=False)


def test_file_that_is_not_a_zip_is_refetched_then_refused(fake_kaggle, tmp_path):
    fake_kaggle.add_competition(SLUG, {"train.zip": b"<html>not a zip</html>"})
    dest = tmp_path / "raw"
    refused = r"train\.zip of competition 'tiny-cats' is not a valid zip.*twice"
    with pytest.raises(kk.KaggleCorruptFileError, match=refused) as caught:
        kk.download_competition(SLUG, dest, progress=False)
    assert caught.value.path == dest / "train.zip"
    assert list(dest.iterdir()) == []  # deleted, so the next run starts clean
    assert len(fake_kaggle.blob_requests(SLUG, "train.zip")) == 2


def test_corrupt_download_is_deleted_and_fetched_again(fake_kaggle, competition, tmp_path):
    fake_kaggle.corrupt_next(SLUG, "train.zip")
    [path] = kk.download_competition(SLUG, tmp_path, files=["train.zip"], progress=False)
    assert path.read_bytes() == competition["train.zip"]
    assert len(fake_kaggle.blob_requests(SLUG, "train.zip")) == 2


def test_missing_credentials_say_how_to_set_them(fake_kaggle, monkeypatch, tmp_path):
    fake_kaggle.install(monkeypatch, tmp_path / "empty-home", auth=None)
    how_to = r"No Kaggle credentials found.*kaggle\.com/settings/api.*KAGGLE_API_TOKEN.*KAGGLE_USERNAME"
    with pytest.raises(kk.KaggleCredentialsError, match=how_to):
        kk.download_competition(SLUG, tmp_path, progress=False)
    write_kaggle_json(fake_kaggle, 0o600).write_text('{"username": "kit-tester"}')
    with pytest.raises(kk.KaggleCredentialsError, match='lacks "username" or "key"'):
        kk.authenticate()


def test_kaggle_json_readable_by_others_warns(fake_kaggle, competition, monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    path = write_kaggle_json(fake_kaggle, 0o644)
    with pytest.warns(kk.KaggleCredentialsWarning, match=r"readable by other users.*chmod 600") as caught:
        kk.download_competition(SLUG, tmp_path, files=["sample_submission.csv"], progress=False)
    assert fake_kaggle.key not in str(caught[0].message)
    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kk.KaggleCredentialsWarning)
        kk.authenticate()


def test_submission_received_byte_for_byte_and_scored(fake_kaggle, competition, tmp_path):
    fake_kaggle.competitions[SLUG].scorer = lambda data: data.count(b"\n") / 10
    assert kk.submission_status(SLUG) is None
    csv = tmp_path / "submission.csv"
    csv.write_bytes(b"id,label\r\n1,0.995\r\n2,0.005\r\n")
    info = kk.submit(SLUG, csv, "resnet34, TTA")
    assert (info.status, info.description, info.file_name) == ("pending", "resnet34, TTA", "submission.csv")
    [received] = fake_kaggle.submissions
    assert received.data == csv.read_bytes()
    assert received.description == "resnet34, TTA"

    latest = kk.submission_status(SLUG)
    assert (latest.ref, latest.status, latest.public_score) == (info.ref, "complete", 0.3)
    assert kk.submission_status(SLUG, info.ref) == latest


def test_pending_submission_has_no_score(fake_kaggle, competition, tmp_path):
    csv = tmp_path / "submission.csv"
    csv.write_text("id,label\n1,0.5\n")
    ref = kk.submit(SLUG, csv, "").ref
    status = kk.submission_status(SLUG, ref)
    assert (status.status, status.public_score) == ("pending", None)


def test_not_enough_space_names_the_folder(fake_kaggle, competition, tmp_path, monkeypatch):
    monkeypatch.setattr(kk, "free_bytes", lambda path: 100)
    with pytest.raises(kk.KaggleDiskFullError, match=f"Not enough free space in {tmp_path} for the download") as caught:
        kk.download_competition(SLUG, tmp_path, progress=False)
    assert caught.value.folder == tmp_path


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_no_room_from_the_client_becomes_disk_full(tmp_path, code):
    full = OSError(code, os.strerror(code))
    error = kk._translate(full, "downloading 'train.zip'", folder=tmp_path)
    assert isinstance(error, kk.KaggleDiskFullError) and error.folder == tmp_path
    assert str(error).startswith(f"No space left in {tmp_path} while downloading 'train.zip'. Free some space")


@pytest.mark.parametrize("slug", ["", "a/b", "has space", None])
def test_bad_slug_is_refused(slug, tmp_path):
    with pytest.raises(ValueError, match=r"download_competition\(\) needs the competition's slug.*slug="):
        kk.download_competition(slug, tmp_path)


def test_submit_needs_an_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="csv_path=.*missing.csv"):
        kk.submit(SLUG, tmp_path / "missing.csv", "m")


def test_module_import_needs_no_kaggle_client():
    code = (
        "import sys, kit, kit.kaggle.client\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('kaggle', 'kagglesdk', 'requests')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
