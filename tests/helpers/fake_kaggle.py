"""A local fake Kaggle server that the real `kaggle` client talks to, unchanged.

It answers the client's JSON-over-POST calls (`/v1/<service>/<method>`) for what the kit uses:
listing and downloading competition files (a 302 redirect to a "blob" URL that honours HTTP Range
and If-Range, as Kaggle's storage does), the submission flow (start upload, PUT the file to the
upload URL, create the submission, list or get submissions) and token introspection. Tests point
the SDK's endpoint table (`kagglesdk.kaggle_env._env_to_endpoint`) at it; nothing of the client's
own code is replaced.

Example:

```python
def test_download(fake_kaggle, tmp_path):
    fake_kaggle.add_competition("tiny", {"train.zip": make_zip({"a.txt": b"a"})})
    kit.kaggle.client.download_competition("tiny", tmp_path, progress=False)
```
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

# A fixed date, so the client's "local copy is newer" check makes repeated downloads no-ops.
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)
CREATED = "2023-11-14T22:13:20.000Z"
# Bounds every socket wait in the server, so a confused client cannot hang a test for long.
SOCKET_TIMEOUT_S = 10.0
STALL_LIMIT_S = 30.0


def make_zip(entries: dict[str, bytes], compress: bool = False) -> bytes:
    """Bytes of a zip holding `entries` (stored, unless `compress`)."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass
class Competition:
    slug: str
    files: dict[str, bytes]
    rules_accepted: bool = True
    # Scores an uploaded file; None leaves submissions pending.
    scorer: Callable[[bytes], float] | None = None


@dataclass
class Submission:
    ref: int
    slug: str
    file_name: str
    description: str
    data: bytes
    date: str
    status: str = "PENDING"
    public_score: str | None = None
    error: str | None = None


@dataclass
class _Fault:
    kind: str  # "truncate", "stall" or "corrupt"
    at: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class FakeKaggle:
    """The fake server: competitions, received submissions and a log of requests.

    Args:
        username: str. The account name it accepts.
        key: str. The legacy API key it accepts (HTTP Basic auth).
        token: str. The access token it accepts (Bearer auth).
    """

    def __init__(self, username: str = "kit-tester", key: str | None = None, token: str | None = None):
        self.username = username
        self.key = key or "key-" + uuid.uuid4().hex
        self.token = token or "KGAT_" + uuid.uuid4().hex
        self.competitions: dict[str, Competition] = {}
        self.submissions: list[Submission] = []
        # (method, path, headers) of every request, for tests to inspect (e.g. Range headers).
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._uploads: dict[str, dict] = {}
        self._faults: dict[tuple[str, str], list[_Fault]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up -------------------------------------------------------------------------------------

    def add_competition(
        self,
        slug: str,
        files: dict[str, bytes],
        rules_accepted: bool = True,
        scorer: Callable[[bytes], float] | None = None,
    ) -> Competition:
        """Serves a competition with these files; `scorer(csv_bytes)` gives a submission's score."""
        self.competitions[slug] = Competition(slug, dict(files), rules_accepted, scorer)
        return self.competitions[slug]

    def truncate_next(self, slug: str, name: str, at: int) -> None:
        """The next download of the file sends `at` bytes of its body, then drops the connection."""
        self._add_fault(slug, name, _Fault("truncate", at))

    def stall_next(self, slug: str, name: str, at: int) -> _Fault:
        """The next download sends `at` bytes, sets `.reached`, then waits for `.release` and drops."""
        return self._add_fault(slug, name, _Fault("stall", at))

    def corrupt_next(self, slug: str, name: str) -> None:
        """The next download of the file serves it with one byte flipped (same size)."""
        self._add_fault(slug, name, _Fault("corrupt"))

    def blob_requests(self, slug: str, name: str) -> list[dict[str, str]]:
        """The headers of each GET of a file's blob URL, in order."""
        path = f"/blobs/{quote(slug)}/{quote(name, safe='')}"
        return [h for m, p, h in self.requests if m == "GET" and p == path]

    def _add_fault(self, slug: str, name: str, fault: _Fault) -> _Fault:
        with self._lock:
            self._faults.setdefault((slug, name), []).append(fault)
        return fault

    # -- life cycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKaggle.url is known once started: use `with FakeKaggle() as fake:`.")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeKaggle:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        # A short poll interval keeps stop() (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for faults in self._faults.values():
                for fault in faults:
                    fault.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=SOCKET_TIMEOUT_S)
            self._server = None

    def __enter__(self) -> FakeKaggle:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def install(self, monkeypatch: pytest.MonkeyPatch, home: Path, auth: str | None = "key") -> None:
        """Points the real client at this server and isolates the test's credentials.

        HOME becomes `home` (so no real ~/.kaggle is read), every KAGGLE_* variable and proxy is
        cleared, and `auth` picks the credentials: "key" (KAGGLE_USERNAME/KAGGLE_KEY), "token"
        (KAGGLE_API_TOKEN) or None (none at all; tests then write their own).
        """
        from kagglesdk import kaggle_env

        home.mkdir(parents=True, exist_ok=True)
        for name in list(os.environ):
            if name.startswith("KAGGLE_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
                monkeypatch.delenv(name)
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        # KaggleApi uses PROD (or LOCAL when KAGGLE_API_ENVIRONMENT=LOCALHOST at its import).
        monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.PROD, self.url)
        monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.LOCAL, self.url)
        if auth == "key":
            monkeypatch.setenv("KAGGLE_USERNAME", self.username)
            monkeypatch.setenv("KAGGLE_KEY", self.key)
        elif auth == "token":
            monkeypatch.setenv("KAGGLE_API_TOKEN", self.token)
        elif auth is not None:
            raise ValueError(f"FakeKaggle.install() takes auth='key', 'token' or None. Received {auth=!r}.")

    def child_env(self, folder: Path) -> dict[str, str]:
        """Environment for a child process (e.g. `make download`) that should reach this server.

        Call after `install()`. The endpoint table lives in the process, so this writes a
        `sitecustomize.py` into `folder` that points the child's table at this server, and puts
        `folder` first on PYTHONPATH; credentials and HOME come from the (installed) environment.
        """
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        env = dict(os.environ, KIT_FAKE_KAGGLE_URL=self.url)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)
        return env

    # -- request handling -------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            return value == self.token
        if scheme == "Basic":
            try:
                return base64.b64decode(value).decode() == f"{self.username}:{self.key}"
            except ValueError:
                return False
        return False

    def _rpc(self, method: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        """(status, JSON answer, extra headers) for one `/v1/<service>/<method>` call."""
        if method == "IntrospectToken":
            ok = body.get("token") == self.token
            return 200, ({"active": True, "username": self.username} if ok else {"active": False}), {}
        slug = body.get("competitionName")
        comp = self.competitions.get(slug)
        if method == "GetSubmission":
            found = [s for s in self.submissions if s.ref == body.get("ref")]
            return (200, _submission_json(found[0]), {}) if found else _error(404, "Submission not found")
        if comp is None:
            return _error(404, f"Competition {slug!r} not found")
        if method == "ListDataFiles":
            names = sorted(comp.files)
            start = int(body.get("pageToken") or 0)
            stop = start + int(body.get("pageSize") or 20)
            files = [
                {"ref": n, "name": n, "totalBytes": len(comp.files[n]), "creationDate": CREATED}
                for n in names[start:stop]
            ]
            return 200, {"files": files, "nextPageToken": str(stop) if stop < len(names) else ""}, {}
        if method == "ListSubmissions":
            mine = [_submission_json(s) for s in reversed(self.submissions) if s.slug == slug]
            return 200, {"submissions": mine, "nextPageToken": ""}, {}
        if not comp.rules_accepted:
            return _error(403, "You must accept this competition's rules before you'll be able to do this.")
        if method in ("DownloadDataFile", "DownloadDataFiles"):
            name = body.get("fileName") if method == "DownloadDataFile" else None
            if name is not None and name not in comp.files:
                return _error(404, f"File {name!r} not found")
            path = f"/blobs/{quote(slug)}/{quote(name, safe='')}" if name else f"/bundles/{quote(slug)}.zip"
            return 302, {}, {"Location": f"{self.url}{path}?X-Goog-Signature={uuid.uuid4().hex}"}
        if method == "StartSubmissionUpload":
            token = uuid.uuid4().hex
            self._uploads[token] = {
                "slug": slug,
                "file_name": body.get("fileName", ""),
                "length": body.get("contentLength"),
                "data": None,
            }
            return 200, {"token": token, "createUrl": f"{self.url}/upload/{token}"}, {}
        if method == "CreateSubmission":
            upload = self._uploads.get(body.get("blobFileTokens", ""))
            if upload is None or upload["data"] is None or upload["slug"] != slug:
                return _error(400, "The submission file was not uploaded")
            with self._lock:
                sub = Submission(
                    ref=1000 + len(self.submissions),
                    slug=slug,
                    file_name=upload["file_name"],
                    description=body.get("submissionDescription", ""),
                    data=upload["data"],
                    date=CREATED,
                )
                if comp.scorer is not None:
                    try:
                        sub.public_score, sub.status = f"{comp.scorer(sub.data):.5f}", "COMPLETE"
                    except Exception as err:  # a scorer's failure is the submission's error, as on Kaggle
                        sub.status, sub.error = "ERROR", str(err)
                self.submissions.append(sub)
            return 200, {"message": f"Successfully submitted to {slug}", "ref": sub.ref}, {}
        return _error(404, f"Unknown method {method!r}")

    def _blob(self, handler: _Handler, slug: str, name: str | None) -> None:
        comp = self.competitions.get(slug)
        if comp is None or (name is not None and name not in comp.files):
            return handler.reply(404, b"Not Found", "text/plain")
        data = comp.files[name] if name is not None else make_zip(comp.files)
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        with self._lock:
            queue = self._faults.get((slug, name or ""), [])
            fault = queue.pop(0) if queue else None
        if fault is not None and fault.kind == "corrupt":
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
        start, status = 0, 200
        wanted = handler.headers.get("Range", "")
        if_range = handler.headers.get("If-Range")
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": LAST_MODIFIED}
        if wanted.startswith("bytes=") and (if_range is None or if_range == etag):
            start = int(wanted[len("bytes=") :].split("-")[0] or 0)
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return handler.reply(416, b"", "text/plain", headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if fault is None or fault.kind == "corrupt":
            return handler.reply(status, body, "application/zip", headers)
        # Announce the whole body, send part of it, then drop the connection.
        handler.reply(status, body[: fault.at], "application/zip", headers, length=len(body))
        if fault.kind == "stall":
            fault.reached.set()
            fault.release.wait(STALL_LIMIT_S)
        handler.close_connection = True

    def _upload(self, handler: _Handler, token: str, data: bytes) -> None:
        upload = self._uploads.get(token)
        if upload is None:
            return handler.reply(404, b"Unknown upload", "text/plain")
        if upload["length"] not in (None, len(data)):
            return handler.reply(400, b"Content length differs from the announced one", "text/plain")
        upload["data"] = data
        handler.reply(200, b"", "text/plain")


_SITECUSTOMIZE = """\
# Written by tests/helpers/fake_kaggle.py: points the Kaggle SDK at a local fake server.
import os

if os.environ.get("KIT_FAKE_KAGGLE_URL"):
    from kagglesdk import kaggle_env

    for _env in (kaggle_env.KaggleEnv.PROD, kaggle_env.KaggleEnv.LOCAL):
        kaggle_env._env_to_endpoint[_env] = os.environ["KIT_FAKE_KAGGLE_URL"]
"""


def _error(code: int, message: str) -> tuple[int, dict, dict[str, str]]:
    return code, {"code": code, "message": message}, {}


def _submission_json(sub: Submission) -> dict:
    answer = {
        "ref": sub.ref,
        "date": sub.date,
        "description": sub.description,
        "fileName": sub.file_name,
        "status": sub.status,
        "totalBytes": len(sub.data),
        "submittedBy": "kit-tester",
    }
    if sub.public_score is not None:
        answer["publicScore"] = sub.public_score
    if sub.error is not None:
        answer["errorDescription"] = sub.error
    return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that went away (a killed process, a skipped download) is part of the tests;
        # anything else is a bug in the fake and is shown.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive as a real server does; every reply carries a Content-Length.
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    fake: FakeKaggle

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # keep pytest's output clean; `fake.requests` records what came in

    def reply(
        self, status: int, body: bytes, content_type: str, headers: dict | None = None, length: int | None = None
    ) -> None:
        """Sends a response; `length` announces a longer body than `body` (to simulate a drop)."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (e.g. it skipped a complete file)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        fake = self.fake
        path = urlsplit(self.path).path
        fake.requests.append((self.command, path, dict(self.headers.items())))
        body = self._read_body() if self.command in ("POST", "PUT") else b""
        if path.startswith("/api/v1/"):  # the LOCAL environment's prefix
            path = path[len("/api") :]
        if self.command == "POST" and path.startswith("/v1/"):
            if not fake._authorized(self.headers.get("Authorization")):
                status, answer, extra = _error(401, "Unauthenticated")
            else:
                method = path.rsplit("/", 1)[-1]
                status, answer, extra = fake._rpc(method, json.loads(body or b"{}"))
            payload = json.dumps(answer).encode() if answer else b""
            return self.reply(status, payload, "application/json", extra)
        parts = [unquote(p) for p in path.split("/")[1:]]
        if self.command == "GET" and parts[0] == "blobs" and len(parts) == 3:
            return fake._blob(self, parts[1], parts[2])
        if self.command == "GET" and parts[0] == "bundles" and len(parts) == 2:
            return fake._blob(self, parts[1][: -len(".zip")], None)
        if self.command == "PUT" and parts[0] == "upload" and len(parts) == 2:
            return fake._upload(self, parts[1], body)
        self.reply(404, b"Not Found", "text/plain")

    do_GET = do_POST = do_PUT = _dispatch


@pytest.fixture
def fake_kaggle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A started FakeKaggle installed for the real client, with KAGGLE_USERNAME/KAGGLE_KEY set.

    Every test module gets it through tests/conftest.py (`pytest_plugins`).
    """
    with FakeKaggle() as fake:
        fake.install(monkeypatch, tmp_path / "home")
        yield fake
