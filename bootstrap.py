#!/usr/bin/env python3
"""One entry point for a fresh machine that has only Python 3.11+.

    python3 bootstrap.py serve        # set up, migrate, load demo data, serve on :8000
    python3 bootstrap.py test [ARGS]  # set up, lint, run every test (pytest ARGS)
    python3 bootstrap.py bench [ARGS] # set up and run the load benchmark

Each command creates ``.venv`` when it is missing and installs the pinned
requirements whenever they changed (a hash of the requirement files is kept in the
virtualenv). Everything after that runs inside the virtualenv. Only the standard
library is used here.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


def say(message: str) -> None:
    print(f"[bootstrap] {message}", flush=True)


def ensure_venv(requirements: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (run by any python3)
        sys.exit("horizon-quota needs Python 3.11 or newer")
    if not PYTHON.exists():
        say(f"creating virtualenv in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    files = [ROOT / "requirements.txt", ROOT / requirements]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    say(f"installing {requirements}")
    subprocess.run(
        [
            str(PYTHON),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / requirements),
        ],
        check=True,
    )
    stamp.write_text(digest)


def ensure_debian_package(command: str, package: str, *, required: bool) -> None:
    """Install a Debian package when its command is missing (as root, or sudo -n).

    When it cannot be installed: a required package stops here; an optional one
    only warns (the tests that need it skip themselves).
    """
    if shutil.which(command):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    installed = False
    if shutil.which("apt-get") and (not sudo or shutil.which("sudo")):
        say(f"installing Debian's {package}")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=False, env=env)
        installed = (
            subprocess.run(
                [
                    *sudo,
                    "apt-get",
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    package,
                ],
                check=False,
                env=env,
            ).returncode
            == 0
        )
    if not installed:
        if required:
            sys.exit(f"{command} is missing and could not be installed ({package})")
        say(f"{package} is not installed; the tests that need it will skip")


# What the test command checks before pytest runs: lint, formatting, and the
# direction of imports between the apps (pyproject.toml, [tool.importlinter]).
LINTS = (
    ("ruff check", [".venv/bin/ruff", "check", "."]),
    ("ruff format --check", [".venv/bin/ruff", "format", "--check", "."]),
    ("lint-imports", [".venv/bin/lint-imports"]),
)


def lint() -> None:
    for name, argv in LINTS:
        say(name)
        if subprocess.run([str(ROOT / argv[0]), *argv[1:]], check=False).returncode:
            sys.exit(f"[bootstrap] {name} failed")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"serve", "test", "bench"}:
        print(__doc__)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    os.chdir(ROOT)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "horizon_quota.settings"}
    if command == "serve":
        ensure_venv("requirements.txt")
        argv = [str(PYTHON), "-m", "horizon_quota.serve", *args]
    elif command == "test":
        ensure_venv("requirements-dev.txt")
        lint()
        # The admin's browser test drives Debian's chromium; the HTTP concurrency
        # tests run once more through Debian's PgBouncer.
        ensure_debian_package("chromium", "chromium", required=False)
        ensure_debian_package("pgbouncer", "pgbouncer", required=False)
        # The whole suite runs on every core (pytest-xdist, one database per
        # worker on the same server); a module's tests stay on one worker.
        parallel = [] if any(a.startswith("-n") for a in args) else ["-n", "auto"]
        argv = [str(PYTHON), "-m", "pytest", *parallel, "--dist", "loadfile", *args]
    else:
        ensure_venv("requirements-dev.txt")
        ensure_debian_package("wrk", "wrk", required=True)
        # The scenario of two app servers sharing PostgreSQL through PgBouncer.
        ensure_debian_package("pgbouncer", "pgbouncer", required=False)
        argv = [str(PYTHON), str(ROOT / "benchmarks" / "bench_allocate.py"), *args]
    # Replace this process so signals (Ctrl-C, SIGTERM) reach the real program.
    os.execve(argv[0], argv, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
