"""Kaggle downloads and submissions over the official `kaggle` client, raising instead of printing.

The official client prints its errors and progress messages; these few functions call it with its
standard output captured and turn every failure into an exception a person can act on: missing or
rejected credentials, competition rules not accepted, an unknown competition, a damaged zip, a full
disk. Downloads resume where an interrupted one stopped: the client keeps a `<file>.kaggle-partial`
marker (the file's ETag and size) beside a partial file and continues it with an HTTP Range request.

The `kaggle` package is imported inside the functions only, because importing it authenticates (and
may reach the network), which `import kit` must never do.

Example:

```python
paths = download_competition("dogs-vs-cats-redux-kernels-edition", "data/redux/raw")
info = submit("dogs-vs-cats-redux-kernels-edition", "submissions/redux.csv", "resnet34, TTA")
print(submission_status("dogs-vs-cats-redux-kernels-edition", info.ref))
```
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kit.io import free_bytes, is_no_room, no_room_message
from kit.kaggle.competition import KAGGLE_URL, is_slug

SETTINGS_URL = "https://www.kaggle.com/settings/api"
COMPETITION_URL = KAGGLE_URL
RULES_URL = KAGGLE_URL + "/rules"
# The official client's resume marker beside a partial download (kaggle 2.x).
PARTIAL_SUFFIX = ".kaggle-partial"
DISK_FULL_ADVICE = "Free some space or choose another data folder."
# How many pages of the file listing to follow before assuming the server loops.
_MAX_PAGES = 10_000

_HOW_TO_SET = (
    "Create an API token at {url} ('Generate New Token') and either export KAGGLE_API_TOKEN=<token> "
    "or save it to ~/.kaggle/access_token; a legacy key also works as KAGGLE_USERNAME and KAGGLE_KEY, "
    'or as {{"username": ..., "key": ...}} in {json} (then run: chmod 600 {json}).'
)


class KaggleError(Exception):
    """A Kaggle request failed; the message says what to do about it."""


class KaggleCredentialsError(KaggleError):
    """No usable Kaggle credentials were found."""


class KaggleAuthError(KaggleError):
    """Kaggle rejected the credentials (HTTP 401)."""


class KaggleRulesError(KaggleError):
    """Kaggle refused access to a competition (HTTP 403): its rules are not accepted yet."""

    def __init__(self, message: str, rules_url: str):
        super().__init__(message)
        self.rules_url = rules_url


class KaggleNotFoundError(KaggleError):
    """Kaggle has no such competition or file (HTTP 404)."""


class KaggleCorruptFileError(KaggleError):
    """A downloaded zip failed its integrity check twice."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


class KaggleDiskFullError(KaggleError):
    """The download folder has no space left (`kit.io`'s rule and sentence: `is_no_room`, `no_room_message`)."""

    def __init__(self, message: str, folder: Path):
        super().__init__(message)
        self.folder = folder


class KaggleSubmitError(KaggleError):
    """Kaggle did not accept a submission upload."""


class KaggleCredentialsWarning(UserWarning):
    """Credentials work but are stored unsafely."""


@dataclass(frozen=True)
class SubmissionInfo:
    """One submission as Kaggle reports it.

    Args:
        ref: int. Kaggle's id for the submission.
        status: str. "pending", "complete" or "error".
        message: str. Kaggle's answer to the upload (empty when read back from the list).
        description: str. The message given with the submission.
        file_name: str. The uploaded file's name.
        date: datetime | None. When Kaggle received it.
        public_score: float | None. Public leaderboard score, once scored.
        private_score: float | None. Private leaderboard score, when Kaggle shows it.
        error: str. Why scoring failed, when status is "error".
    """

    ref: int
    status: str
    message: str = ""
    description: str = ""
    file_name: str = ""
    date: datetime | None = None
    public_score: float | None = None
    private_score: float | None = None
    error: str = ""


def authenticate() -> Any:
    """Returns an authenticated `kaggle` API object, or raises saying how to set credentials.

    Credentials are looked for as the official client does: an access token (`KAGGLE_API_TOKEN`,
    the value or a file holding it, or `~/.kaggle/access_token`), then a legacy key
    (`KAGGLE_USERNAME` and `KAGGLE_KEY`, over `kaggle.json` in `$KAGGLE_CONFIG_DIR` or
    `~/.kaggle`), then `kaggle auth login`'s OAuth credentials. Warns with
    `KaggleCredentialsWarning` when `kaggle.json` is readable by group or others. No message
    ever contains a key.

    Example:

    ```python
    api = authenticate()
    paths = download_competition("dogs-vs-cats", "data/dogs-vs-cats/raw", api=api)
    ```

    Returns:
        A `kaggle.api.kaggle_api_extended.KaggleApi`, ready for the other functions' `api=`.
    """
    from kagglesdk.kaggle_env import get_access_token_from_env

    json_path = _config_dir() / "kaggle.json"
    how_to = _HOW_TO_SET.format(url=SETTINGS_URL, json=json_path)
    legacy, json_problem = _legacy_key(json_path)
    token, token_source = get_access_token_from_env()
    oauth_file = Path("~/.kaggle/credentials.json").expanduser()
    if token:
        source = f"the access token in {token_source}"
    elif legacy:
        source = legacy
    elif oauth_file.is_file():
        source = f"the OAuth login in {oauth_file}"
    else:
        detail = f" {json_problem}" if json_problem else ""
        raise KaggleCredentialsError(f"No Kaggle credentials found.{detail} {how_to}")
    with _captured_stdout():
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        # KaggleApi fixes its config folder when first imported; follow the environment as it is now.
        api.config = str(json_path)
        try:
            with _translating(f"checking {source}"):
                api.authenticate()
        except SystemExit:
            # The client prints its help and calls exit(1) when no credential works.
            raise KaggleCredentialsError(f"Kaggle did not accept {source}. {how_to}") from None
    return api


def download_competition(
    slug: str,
    dest_dir: str | os.PathLike,
    files: Sequence[str] | None = None,
    *,
    progress: bool = True,
    api: Any | None = None,
) -> list[Path]:
    """Downloads a competition's files into a folder, resuming and checking them.

    Each file is fetched separately, so an interrupted run resumes file by file where it stopped,
    and a file already complete is not fetched again. Every `.zip` is checked with
    `zipfile.testzip`; a damaged one is deleted and fetched once more, and if it is damaged again
    it is deleted and `KaggleCorruptFileError` is raised. Files are kept as Kaggle serves them:
    a large file may arrive zipped as `<name>.zip`.

    Example:

    ```python
    paths = download_competition("dogs-vs-cats-redux-kernels-edition", "data/redux/raw")
    # [PosixPath('data/redux/raw/sample_submission.csv'), PosixPath('data/redux/raw/test.zip'), ...]
    ```

    Args:
        slug: str. The competition's name in its URL, e.g. "dogs-vs-cats-redux-kernels-edition".
        dest_dir: str | PathLike. Folder to download into; created when missing.
        files: Sequence[str] | None. Names of the files to fetch; None fetches all of them.
        progress: bool. Show the client's progress bar (on stderr) while downloading.
        api: Any | None. An object from `authenticate()`; None authenticates now.

    Returns:
        The local paths of the requested files, in the order requested (or listed by Kaggle).
    """
    _check_slug(slug, "download_competition")
    if isinstance(files, str):
        files = [files]
    dest = Path(dest_dir)
    api = api or authenticate()
    with _translating(f"creating {dest}", folder=dest):
        dest.mkdir(parents=True, exist_ok=True)
    listing = _list_files(api, slug)
    names = list(listing) if files is None else list(files)
    missing = [name for name in names if name not in listing]
    if missing:
        raise KaggleNotFoundError(
            f"Competition {slug!r} has no file named {', '.join(map(repr, missing))}. "
            f"Its files are: {', '.join(sorted(listing)) or '(none)'}."
        )
    _check_space(dest, {name: listing[name] for name in names})
    paths = []
    for name in names:
        path = _fetch(api, slug, name, dest, progress, force=False)
        problem = _zip_problem(path)
        if problem:
            # A bad file on disk would be kept by the client's "already up to date" check: remove it first.
            _remove(path)
            path = _fetch(api, slug, name, dest, progress, force=True)
            problem = _zip_problem(path)
            if problem:
                _remove(path)
                raise KaggleCorruptFileError(
                    f"{path.name} of competition {slug!r} is {problem}, twice in a row; it was deleted. "
                    "Run the download again; if it keeps failing, the file on Kaggle may be damaged.",
                    path,
                )
        paths.append(path)
    return paths


def download_bundle(slug: str, dest_dir: str | os.PathLike, *, progress: bool = True, api: Any | None = None) -> Path:
    """Downloads a whole competition as Kaggle's one zip, `<dest_dir>/<slug>.zip`, checked as
    `download_competition` checks each file (resumed; a damaged zip fetched once more, then refused).

    For competitions of loose files (histopathology's 220,025 `train/<id>.tif`), where fetching file by
    file would take one request per tile.
    """
    _check_slug(slug, "download_bundle")
    dest = Path(dest_dir)
    api = api or authenticate()
    with _translating(f"creating {dest}", folder=dest):
        dest.mkdir(parents=True, exist_ok=True)
    _check_space(dest, {f"{slug}.zip": sum(_list_files(api, slug).values())})
    path = dest / f"{slug}.zip"
    for attempt in range(2):
        with _translating(f"downloading competition {slug!r}", slug, folder=dest), _captured_stdout():
            api.competition_download_files(slug, path=str(dest), force=attempt > 0, quiet=not progress)
        if not path.is_file():
            raise KaggleError(f"The client reported {slug!r} downloaded, but {path} is missing.")
        problem = _zip_problem(path)
        if not problem:
            return path
        _remove(path)
    raise KaggleCorruptFileError(
        f"{path.name} of competition {slug!r} is {problem}, twice in a row; it was deleted. Run the download again.",
        path,
    )


def submit(slug: str, csv_path: str | os.PathLike, message: str, *, api: Any | None = None) -> SubmissionInfo:
    """Uploads a submission file to a competition.

    Example:

    ```python
    info = submit("dogs-vs-cats-redux-kernels-edition", "submissions/redux.csv", "resnet34 + TTA")
    info.ref, info.status  # (123456, 'pending')
    ```

    Args:
        slug: str. The competition's name in its URL.
        csv_path: str | PathLike. The submission file (Kaggle also takes .zip, .gz and .7z).
        message: str. The description shown beside the submission on Kaggle.
        api: Any | None. An object from `authenticate()`; None authenticates now.

    Returns:
        A `SubmissionInfo` with Kaggle's reference and answer; its status is "pending" until scored
        (see `submission_status`).
    """
    _check_slug(slug, "submit")
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"submit() needs an existing file as csv_path. Received csv_path={str(path)!r}, which is not a file."
        )
    if not isinstance(message, str):
        raise TypeError(f"submit() needs a str message. Received message={message!r}.")
    api = api or authenticate()
    with _translating(f"submitting {path.name} to competition {slug!r}", slug), _captured_stdout() as said:
        response = api.competition_submit(str(path), message, slug, quiet=True)
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        # The client prints the upload's error instead of raising it; hand it on.
        reason = _redact(said.getvalue().strip()) or "no reason given"
        raise KaggleSubmitError(
            f"Kaggle did not receive the upload of {path} for competition {slug!r}: {reason}. "
            "Nothing was submitted; try again."
        )
    return SubmissionInfo(
        ref=int(response.ref or 0),
        status="pending",
        message=response.message or "",
        description=message,
        file_name=path.name,
    )


def submission_status(slug: str, ref: int | None = None, *, api: Any | None = None) -> SubmissionInfo | None:
    """Reads back a submission's status and scores.

    Example:

    ```python
    info = submission_status("dogs-vs-cats-redux-kernels-edition")
    info.status, info.public_score  # ('complete', 0.0612)
    ```

    Args:
        slug: str. The competition's name in its URL.
        ref: int | None. The submission's reference (`SubmissionInfo.ref`); None reads the latest.
        api: Any | None. An object from `authenticate()`; None authenticates now.

    Returns:
        The submission, or None when the competition has no submission of yours yet.
    """
    _check_slug(slug, "submission_status")
    api = api or authenticate()
    with _translating(f"reading the submissions of competition {slug!r}", slug), _captured_stdout():
        if ref is not None:
            found = [api.get_submission(int(ref))]
        else:
            found = [s for s in api.competition_submissions(slug) or [] if s is not None]
    if not found:
        return None
    latest = max(found, key=lambda s: s.date or datetime.min)
    return SubmissionInfo(
        ref=int(latest.ref),
        status=latest.status.name.lower(),
        description=latest.description or "",
        file_name=latest.file_name or "",
        date=latest.date,
        public_score=_score(latest.public_score),
        private_score=_score(latest.private_score),
        error=latest.error_description or "",
    )


# -- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _captured_stdout() -> Iterator[io.StringIO]:
    """Keeps the client's prints off stdout (the kit never prints); its progress bars use stderr."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


@contextlib.contextmanager
def _translating(doing: str, slug: str | None = None, folder: Path | None = None) -> Iterator[None]:
    """Re-raises the client's errors as the kit's exceptions; `doing` says what was under way."""
    try:
        yield
    except KaggleError:
        raise
    except Exception as err:
        mapped = _translate(err, doing, slug, folder)
        if mapped is err:
            raise
        raise mapped from err


def _check_slug(slug: Any, caller: str) -> None:
    if not is_slug(slug):
        raise ValueError(
            f"{caller}() needs the competition's slug as in its URL (letters, digits, '-', '_'), "
            f"e.g. 'dogs-vs-cats-redux-kernels-edition'. Received slug={slug!r}."
        )


def _config_dir() -> Path:
    """The folder of kaggle.json, chosen as KaggleApi chooses it."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path("~/.kaggle").expanduser()
    if home.exists() or not sys.platform.startswith("linux"):
        return home
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(xdg) / "kaggle"


def _legacy_key(json_path: Path) -> tuple[str | None, str | None]:
    """Where a username and key come from (never the key itself), and what is wrong with kaggle.json."""
    values: dict = {}
    problem = None
    if json_path.is_file():
        mode = json_path.stat().st_mode
        if os.name != "nt" and mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.warn(
                f"{json_path} is readable by other users of this machine (mode {stat.S_IMODE(mode):#o}), "
                f"so they can read your Kaggle key. Run: chmod 600 {json_path}",
                KaggleCredentialsWarning,
                stacklevel=3,
            )
        try:
            values = json.loads(json_path.read_text() or "{}")
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            values = {}
            problem = f"{json_path} could not be read as JSON ({type(err).__name__})."
        if problem is None and not {"username", "key"} <= values.keys():
            problem = f'{json_path} lacks "username" or "key".'
    # As in the client, KAGGLE_USERNAME and KAGGLE_KEY override the file's values one by one.
    from_env = {k: os.environ.get(f"KAGGLE_{k.upper()}") for k in ("username", "key")}
    from_env = {k: v for k, v in from_env.items() if v}
    if not {"username", "key"} <= (values.keys() | from_env.keys()):
        return None, problem
    if len(from_env) == 2:
        return "the key in KAGGLE_USERNAME and KAGGLE_KEY", None
    return f"the key in {json_path}" + (" and the environment" if from_env else ""), None


def _list_files(api: Any, slug: str) -> dict[str, int]:
    """All of a competition's files and their sizes in bytes, following the listing's pages."""
    files: dict[str, int] = {}
    token = None
    with _translating(f"listing the files of competition {slug!r}", slug), _captured_stdout():
        for _ in range(_MAX_PAGES):
            page = api.competition_list_files(slug, page_token=token)
            files.update({f.name: int(f.total_bytes or 0) for f in page.files or []})
            token = page.next_page_token
            if not token:
                break
    return files


def _local_path(dest: Path, name: str) -> Path:
    # Kaggle serves a large file zipped as "<name>.zip" (the client names files after the URL).
    wrapped = dest / f"{name}.zip"
    if not name.lower().endswith(".zip") and wrapped.is_file():
        return wrapped
    return dest / name


def _check_space(dest: Path, sizes: dict[str, int]) -> None:
    needed = 0
    for name, size in sizes.items():
        local = _local_path(dest, name)
        needed += max(size - (local.stat().st_size if local.is_file() else 0), 0)
    free = free_bytes(dest)
    if needed > free:
        raise KaggleDiskFullError(no_room_message(dest, "the download", needed, free, advice=DISK_FULL_ADVICE), dest)


def _fetch(api: Any, slug: str, name: str, dest: Path, progress: bool, force: bool) -> Path:
    doing = f"downloading {name!r} of competition {slug!r}"
    with _translating(doing, slug, folder=dest), _captured_stdout():
        api.competition_download_file(slug, name, path=str(dest), force=force, quiet=not progress)
    path = _local_path(dest, name)
    if not path.is_file():
        raise KaggleError(f"The client reported {name!r} of {slug!r} downloaded, but {path} is missing.")
    return path


def _zip_problem(path: Path) -> str | None:
    """What is wrong with a downloaded zip, or None when it is sound (or not a zip by name)."""
    if path.suffix.lower() != ".zip":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as err:
        return f"not a valid zip ({err})"
    return f"damaged (entry {bad!r} fails its CRC check)" if bad else None


def _remove(path: Path) -> None:
    for stale in (path, Path(f"{path}{PARTIAL_SUFFIX}")):
        stale.unlink(missing_ok=True)


def _score(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _redact(text: str) -> str:
    """Drops URL query strings, which carry signatures on Kaggle's storage links."""
    return re.sub(r"(https?://[^\s?]+)\?\S*", r"\1?...", text)


def _translate(err: Exception, doing: str, slug: str | None = None, folder: Path | None = None) -> Exception:
    """The kit's exception for an error raised by the client (or the error itself when unknown)."""
    import requests

    if isinstance(err, requests.HTTPError):
        code = err.response.status_code if err.response is not None else None
        detail = _redact(str(err))
        if code == 401:
            return KaggleAuthError(
                f"Kaggle rejected the credentials (HTTP 401) while {doing}: the API key or token is "
                f"wrong, expired or revoked. Create a new token at {SETTINGS_URL} and set it again."
            )
        if code == 403 and slug:
            url = RULES_URL.format(slug=slug)
            return KaggleRulesError(
                f"Kaggle refused access (HTTP 403) while {doing}: you have not accepted the rules of "
                f"competition {slug!r}. Open {url}, sign in with the account of your API key, "
                "accept the rules, then run again.",
                url,
            )
        if code == 404 and slug:
            return KaggleNotFoundError(
                f"Kaggle has no competition {slug!r} (HTTP 404 while {doing}). Check the slug: it is "
                f"the last part of the competition's URL, {COMPETITION_URL.format(slug='<slug>')}."
            )
        return KaggleError(f"Kaggle answered HTTP {code} while {doing}: {detail}")
    if isinstance(err, (requests.ConnectionError, requests.Timeout)):
        return KaggleError(
            f"Could not reach Kaggle while {doing}: {_redact(str(err))}. Check the network connection "
            "and any proxy settings, then run again (a partial download resumes)."
        )
    if is_no_room(err):
        where = folder if folder is not None else Path(err.filename or ".")
        advice = DISK_FULL_ADVICE[:-1] + ", then run again (a partial download resumes)."
        return KaggleDiskFullError(no_room_message(where, doing=doing, advice=advice), where)
    if isinstance(err, ValueError):
        # The client raises ValueError for a size mismatch or a file name leading outside the folder.
        return KaggleError(f"Kaggle's download failed while {doing}: {_redact(str(err))}")
    return err
