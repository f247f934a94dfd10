"""What a process does before Django reads its settings, done at entry points.

``settings.py`` only reads the environment: it starts nothing and writes nothing.
The programs that run the service call ``prepare()`` first (``manage.py``, the WSGI
module, ``python3 bootstrap.py serve`` and the benchmark); the test run has its own
(``horizon_quota.pytest_plugin``). It fills in what a local install leaves unset:

1. ``SECRET_KEY``: without it, a random key is generated once into
   ``var/secret_key`` (mode 0600), so a local install keeps its sessions across
   runs. Production sets it.
2. ``DATABASE_URL``: without it, the private PostgreSQL under ``var/pgdata`` is
   started (or an already running one adopted; see ``horizon_quota.embedded``).
3. The static files directory, which WhiteNoise expects to exist.
"""

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"
SECRET_KEY_FILE = VAR_DIR / "secret_key"


def local_secret_key() -> str:
    """The key kept in ``var/secret_key``, made on first use."""
    if not SECRET_KEY_FILE.exists():
        VAR_DIR.mkdir(exist_ok=True)
        SECRET_KEY_FILE.touch(mode=0o600)
        SECRET_KEY_FILE.write_text(secrets.token_urlsafe(50))
    return SECRET_KEY_FILE.read_text().strip()


def static_root() -> Path:
    return Path(os.environ.get("STATIC_ROOT", "").strip() or VAR_DIR / "static")


def prepare() -> None:
    """Fill in the environment a local run needs; a no-op for what is set."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "horizon_quota.settings")
    if not os.environ.get("SECRET_KEY", "").strip():
        os.environ["SECRET_KEY"] = local_secret_key()
    if not os.environ.get("DATABASE_URL", "").strip():
        from horizon_quota import embedded

        os.environ["DATABASE_URL"] = embedded.run_server_url()
    static_root().mkdir(parents=True, exist_ok=True)
