"""A Kaggle twin for tests: a local HTTP server that answers the calls the installed ``kaggle`` client makes to
submit to a competition and to list its submissions, records what it received, and can answer with each failure
a user meets (wrong key, rules not accepted, unknown competition, daily limit, server error).

How the real client reaches it, unmodified:
* ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` makes kaggle 2.x build its client for ``KaggleEnv.LOCAL``
  (``kaggle/api/kaggle_api_extended.py``: ``args.append("--local")``), whose endpoint is ``http://localhost``
  (``kagglesdk/kaggle_env.py``), with API calls at ``http://localhost/api/v1/<Service>/<Method>``.
* ``http_proxy=http://127.0.0.1:<port>`` (requests honours it) sends those requests, and the upload's PUT to the
  URL the twin hands out, to the twin, which listens on 127.0.0.1 on a free port only. Port 80 is never bound.

The three calls of ``kaggle competitions submit`` (kaggle 2.2.5):
``POST .../competitions.CompetitionApiService/StartSubmissionUpload`` -> ``{"token", "createUrl"}``,
``PUT <createUrl>`` with the file's bytes, ``POST .../CreateSubmission`` ``{"competitionName", "blobFileTokens",
"submissionDescription"}`` -> ``{"message", "ref"}``; listing: ``POST .../ListSubmissions`` -> ``{"submissions"}``.
Errors are JSON ``{"code": <status>, "message": ...}``, as Kaggle's API answers them.

Usage::

    with KaggleTwin(competitions={"ml2023spring-hw13"}) as twin:
        env = twin.env(tmp_path)      # the environment a subprocess needs (temp HOME, the key, the proxy)
        twin.fail = "rules"           # the next calls answer 403 "accept the rules"
        twin.uploads, twin.submissions, twin.calls  # what arrived
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

# the client this twin was written against: tests check the installed one is the same (see
# test_kaggle_upload.py::test_the_installed_kaggle_client_is_the_one_the_twin_speaks_to)
KAGGLE_VERSION = "2.2.5"
KAGGLESDK_VERSION = "0.1.38"

SERVICE = "/api/v1/competitions.CompetitionApiService/"
USERNAME, KEY = "twin-user", "twin-key-5f0c2e9a7b1d4c3e8a6f"

# failure -> (call it answers, HTTP status, message); the messages follow what Kaggle answers (issues of
# Kaggle/kaggle-cli: "403 - You cannot submit until you accept the competition rules", 404 "NotFound")
FAILURES: dict[str, tuple[str, int, str]] = {
    "bad_key": ("*", 401, "Unauthenticated"),
    "rules": ("StartSubmissionUpload", 403, "You cannot submit until you accept the competition rules"),
    "unknown": ("StartSubmissionUpload", 404, "NotFound"),
    "limit": ("CreateSubmission", 400, "Submission not allowed:  Your team has used its daily Submission allowance (5) "
                                       "today, please try again tomorrow UTC (9 hours from now)."),
    "server": ("CreateSubmission", 500, "Internal Server Error"),
    "upload": ("PUT", 403, "upload refused"),
}


class KaggleTwin:
    """The server; ``competitions``: the slugs that exist (others answer 404). ``score(csv_bytes)`` gives a
    submission's public score (a str) or None (the submission stays PENDING)."""

    def __init__(self, competitions: set[str] = frozenset({"ml2023spring-hw13"}), username: str = USERNAME,
                 key: str = KEY, score: Optional[Callable[[bytes], Optional[str]]] = None):
        self.competitions, self.username, self.key, self.score = set(competitions), username, key, score
        self.fail: Optional[str] = None
        self.calls: list[tuple[str, str, Any]] = []  # (method, path, JSON body or byte count)
        self.uploads: dict[str, bytes] = {}  # token -> bytes PUT
        self.submissions: dict[str, list[dict[str, Any]]] = {}  # competition -> ApiSubmission JSON, newest last
        self._names: dict[str, str] = {}  # token -> the file name StartSubmissionUpload announced
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> "KaggleTwin":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, home: Path, base: Optional[dict[str, str]] = None, key: Optional[str] = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) pointed at the twin: a temp ``HOME`` and ``KAGGLE_CONFIG_DIR`` (no
        real credentials are read), ``KAGGLE_USERNAME``/``KAGGLE_KEY`` (``key`` instead of the twin's to be wrong),
        ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` and the proxy."""
        env = dict(os.environ if base is None else base)
        for var in ("KAGGLE_API_TOKEN", "NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                    "VERBOSE", "VERBOSE_OUTPUT"):
            env.pop(var, None)
        home.mkdir(parents=True, exist_ok=True)
        (home / ".kaggle").mkdir(exist_ok=True)
        env.update({"HOME": str(home), "KAGGLE_CONFIG_DIR": str(home / ".kaggle"), "KAGGLE_USERNAME": self.username,
                    "KAGGLE_KEY": self.key if key is None else key, "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
                    "http_proxy": self.url, "HTTP_PROXY": self.url})
        return env

    def add_submission(self, competition: str, description: str, score: Optional[str], when: dt.datetime,
                       status: str = "COMPLETE") -> None:
        """A submission made earlier (for listing)."""
        with self._lock:
            subs = self.submissions.setdefault(competition, [])
            subs.append({"ref": 1000 + sum(map(len, self.submissions.values())), "date": _iso(when),
                         "description": description, "fileName": "submission.csv", "publicScore": score,
                         "status": status, "totalBytes": 0})

    # --- HTTP ------------------------------------------------------------------------------------------
    def _failure(self, call: str) -> Optional[tuple[int, str]]:
        if self.fail is None:
            return None
        where, status, message = FAILURES[self.fail]
        return (status, message) if where in ("*", call) else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        twin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"code": status, "message": message})

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization", "")
                want = "Basic " + base64.b64encode(f"{twin.username}:{twin.key}".encode()).decode()
                return auth == want

            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                path = urlsplit(self.path).path
                data = self._body()
                with twin._lock:
                    twin.calls.append(("PUT", path, len(data)))
                if (f := twin._failure("PUT")) is not None:
                    return self._error(*f)
                token = path.rsplit("/", 1)[-1]
                if not path.startswith("/upload/") or token not in twin.uploads:
                    return self._error(404, "no such upload")
                with twin._lock:
                    twin.uploads[token] = data
                self._send(200, {})

            def do_POST(self) -> None:  # noqa: N802
                path = urlsplit(self.path).path
                raw = self._body()
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._error(400, "request body is not JSON")
                with twin._lock:
                    twin.calls.append(("POST", path, body))
                if not path.startswith(SERVICE):
                    return self._error(404, f"the twin does not speak {path}")
                call = path[len(SERVICE):]
                if (f := twin._failure(call)) is not None:
                    return self._error(*f)
                if not self._authorised():
                    return self._error(401, "Unauthenticated")
                slug = body.get("competitionName", "")
                if slug not in twin.competitions:
                    return self._error(404, "NotFound")
                handler = {"StartSubmissionUpload": self._start, "CreateSubmission": self._create,
                           "ListSubmissions": self._list}.get(call)
                if handler is None:
                    return self._error(404, f"the twin does not speak {call}")
                handler(slug, body)

            def _start(self, slug: str, body: dict[str, Any]) -> None:
                with twin._lock:
                    token = f"blob-{len(twin.uploads) + 1}"
                    twin.uploads[token] = b""
                    twin._names[token] = body.get("fileName", "")
                # the upload goes to "localhost" too, through the proxy: nothing but the twin is contacted
                self._send(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

            def _create(self, slug: str, body: dict[str, Any]) -> None:
                token = body.get("blobFileTokens", "")
                if token not in twin.uploads:
                    return self._error(400, f"unknown blob token {token!r}")
                data = twin.uploads[token]
                score = twin.score(data) if twin.score else None
                with twin._lock:
                    subs = twin.submissions.setdefault(slug, [])
                    ref = 1000 + sum(map(len, twin.submissions.values()))
                    subs.append({"ref": ref, "date": _iso(dt.datetime.now(dt.timezone.utc)),
                                 "description": body.get("submissionDescription", ""),
                                 "fileName": twin._names.get(token, ""), "totalBytes": len(data),
                                 "publicScore": score, "status": "COMPLETE" if score is not None else "PENDING"})
                self._send(200, {"message": "Successfully submitted to HW13 (twin)", "ref": ref})

            def _list(self, slug: str, body: dict[str, Any]) -> None:
                subs = sorted(twin.submissions.get(slug, []), key=lambda s: s["date"], reverse=True)
                size = int(body.get("pageSize") or 20)
                self._send(200, {"submissions": [{k: v for k, v in s.items() if v is not None} for s in subs[:size]]})

        return Handler


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def accuracy_score(answers: dict[str, str]) -> Callable[[bytes], Optional[str]]:
    """A public score: the share of rows of the uploaded ``Id,Category`` CSV whose category is the answer."""
    def score(data: bytes) -> Optional[str]:
        rows = [line.split(",") for line in data.decode().splitlines()[1:] if line]
        right = sum(1 for r in rows if len(r) == 2 and answers.get(r[0]) == r[1])
        return f"{right / max(1, len(answers)):.5f}"
    return score


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m tests.kaggle_twin [--fail KIND]``: serve until Ctrl-C and print the environment that points the
    kaggle client (and so ``distil submit --upload``) at the twin, for trying the upload path by hand."""
    import argparse
    import time

    p = argparse.ArgumentParser(prog="python -m tests.kaggle_twin", description=main.__doc__)
    p.add_argument("--competition", default="ml2023spring-hw13")
    p.add_argument("--fail", choices=sorted(FAILURES), default=None, help="answer every upload with this failure")
    p.add_argument("--answers", default=None, help="Id,Category CSV of the public split's labels: uploads are scored")
    args = p.parse_args(argv)
    score = None
    if args.answers:
        rows = [line.split(",") for line in Path(args.answers).read_text().splitlines()[1:] if line]
        score = accuracy_score({r[0]: r[1] for r in rows})
    with KaggleTwin(competitions={args.competition}, score=score) as twin:
        twin.fail = args.fail
        print(f"Kaggle twin on {twin.url} (competition {args.competition}); in another shell:", flush=True)
        print(f"export KAGGLE_API_ENVIRONMENT=LOCALHOST http_proxy={twin.url} KAGGLE_USERNAME={twin.username} "
              f"KAGGLE_KEY={twin.key} KAGGLE_CONFIG_DIR=$(mktemp -d)", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            print(f"received {len(twin.uploads)} upload(s)")


if __name__ == "__main__":
    main()
