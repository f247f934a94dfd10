"""The service under gunicorn against the test database, directly or through
PgBouncer in transaction pooling (horizon_quota/pgbouncer.py), and a small JSON
HTTP client for many threads at once."""

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.db import connection

from horizon_quota import pgbouncer
from tests.helpers import database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def bouncer():
    """PgBouncer in front of the test database's server."""
    db = connection.settings_dict
    server = pgbouncer.PgBouncer(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"] or "",
        pool_size=8,
    )
    with server:
        yield server


@contextlib.contextmanager
def gunicorn(*, through: str = "direct", wsgi: str = "horizon_quota.wsgi", workers=4):
    """Serve the app on a free port (yields the port). ``through`` is ``direct`` or
    ``pgbouncer``."""
    with contextlib.ExitStack() as stack:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "horizon_quota.settings",
            "API_KEY_CACHE_SECONDS": "60",
            "LOG_LEVEL": "WARNING",
        }
        if through == "pgbouncer":
            name = unquote(urlsplit(database_url()).path.lstrip("/"))
            env["DATABASE_URL"] = stack.enter_context(bouncer()).url(name)
            env["DATABASE_POOLER"] = "pgbouncer"
        port = _free_port()
        # A file, not a pipe: a pipe nobody reads fills up with the errors of a
        # broken server, its workers block writing to it and gunicorn kills them.
        log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                wsgi,
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "sync",
                "--log-level",
                "warning",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        stack.callback(_stop, process)
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(port, "GET", "/health")[0] in (200, 503):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"gunicorn did not start: {log.read()}")
            time.sleep(0.1)
        yield port


def _stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def request(port: int, method: str, path: str, body=None, key: str | None = None):
    """(status, JSON answer or None) of one request on a new connection."""
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Api-Key {key}"
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, (json.loads(raw) if raw else None)
