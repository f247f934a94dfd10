"""A throwaway PgBouncer in transaction-pooling mode in front of a PostgreSQL server,
for the tests and the benchmark (issue #13): Debian's ``pgbouncer``, as a
deployment runs it (docs/scaling.md has the settings that matter and why).

``PgBouncer.start()`` writes a configuration into a private directory, starts the
daemon on a free port of 127.0.0.1 and waits for it; ``url(dbname)`` is the
DATABASE_URL a client uses to go through it (with ``DATABASE_POOLER=pgbouncer``).
PgBouncer refuses to run as root: as root it runs as the owner of the server's
socket directory (the embedded server's system user) or as ``nobody``.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

PGBOUNCER = "pgbouncer"


def available() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    return shutil.which(PGBOUNCER) or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgBouncer:
    """One PgBouncer forwarding every database name to one server."""

    def __init__(
        self,
        *,
        host: str,
        port: int | str | None,
        user: str,
        password: str = "",
        pool_size: int = 20,
        max_client_conn: int = 500,
    ):
        self.host = host or "127.0.0.1"
        self.server_port = int(port or 5432)
        self.user = user
        self.password = password
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = None
        self.directory = None
        self.process = None

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        if self.host.startswith("/"):
            return pwd.getpwuid(os.stat(self.host).st_uid).pw_name
        return "nobody"

    def _config(self) -> str:
        server = f"host={self.host} port={self.server_port} user={self.user}"
        if self.password:
            server += f" password={self.password}"
        return "\n".join(
            [
                "[databases]",
                f"* = {server}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.directory}/userlist.txt",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                f"max_client_conn = {self.max_client_conn}",
                # Transaction pooling: nothing of a session survives its
                # transaction, so nothing is reset between clients.
                "server_reset_query =",
                f"logfile = {self.directory}/pgbouncer.log",
                f"pidfile = {self.directory}/pgbouncer.pid",
                "",
            ]
        )

    def start(self, timeout: float = 20) -> "PgBouncer":
        executable = available()
        if executable is None:
            raise RuntimeError("Debian's pgbouncer is not installed")
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="horizon-quota-pgbouncer-"))
        self.directory.chmod(0o777)
        (self.directory / "userlist.txt").write_text(f'"{self.user}" ""\n')
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(self._config())
        for path in (ini, self.directory / "userlist.txt"):
            path.chmod(0o644)
        user = self._run_as()
        command = [executable, *(["-u", user] if user else []), str(ini)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited: {self.process.stderr.read().decode()[-500:]}"
                    f" {self.log()[-500:]}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("pgbouncer did not start listening")

    def log(self) -> str:
        path = self.directory / "pgbouncer.log" if self.directory else None
        return path.read_text() if path and path.exists() else ""

    def url(self, dbname: str) -> str:
        """A DATABASE_URL through this PgBouncer."""
        return (
            f"postgres://{quote(self.user, safe='')}@127.0.0.1:{self.port}/"
            f"{quote(dbname, safe='')}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PgBouncer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
