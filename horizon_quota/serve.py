"""``python3 bootstrap.py serve``: prepare everything, then run gunicorn.

1. Without ``DATABASE_URL``, start (or adopt) the embedded PostgreSQL under
   ``var/pgdata`` and hand its URL to gunicorn's workers through the environment.
2. Migrate, collect static files, load the demo hierarchy (idempotent).
3. Make sure a staff login and an admin API key exist, and print them. Their
   secrets are kept in ``var/demo-credentials.json`` (mode 0600) so a re-run prints
   the same ones; a password changed since is reported, never reset.
4. Run gunicorn in the foreground; on Ctrl-C or SIGTERM stop it, then the embedded
   server (the last user of it stops it).
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
CREDENTIALS = BASE_DIR / "var" / "demo-credentials.json"


def _load_credentials() -> dict:
    try:
        return json.loads(CREDENTIALS.read_text())
    except (OSError, ValueError):
        return {}


def _save_credentials(credentials: dict) -> None:
    CREDENTIALS.parent.mkdir(exist_ok=True)
    CREDENTIALS.touch(mode=0o600)
    CREDENTIALS.write_text(json.dumps(credentials, indent=2))


def ensure_demo_credentials() -> dict:
    from django.contrib.auth import get_user_model

    from quotas.access.authentication import ApiKeyAuthentication
    from quotas.access.keys import api_key_create

    credentials = _load_credentials()
    users = get_user_model()
    admin = users.objects.filter(username="admin").first()
    if admin is None:
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "admin@example.com", password)
        credentials["password"] = password
    elif not admin.check_password(credentials.get("password", "")):
        credentials["password"] = None  # changed by someone since; leave it alone

    raw_key = credentials.get("api_key")
    try:
        valid = bool(raw_key) and ApiKeyAuthentication().key_for(raw_key) is not None
    except Exception:
        valid = False
    if not valid:
        _, raw_key = api_key_create(name="demo admin key", role="admin")
        credentials["api_key"] = raw_key
    _save_credentials(credentials)
    return credentials


def main() -> int:
    from horizon_quota.runtime import prepare

    # This process holds the embedded server (when there is no DATABASE_URL) for
    # as long as gunicorn runs; the workers inherit its URL and the secret key.
    prepare()

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("seed_demo")
    credentials = ensure_demo_credentials()

    bind = os.environ.get("BIND", "127.0.0.1:8000")
    workers = os.environ.get("WEB_CONCURRENCY", "4")
    password = credentials.get("password") or "(changed since it was printed first)"
    print(
        "\n"
        f"  horizon-quota on http://{bind}\n"
        f"  admin:      http://{bind}/admin/  login admin / {password}\n"
        f"  API docs:   http://{bind}/swagger-ui/\n"
        f"  API key:    {credentials['api_key']}\n"
        f"  try:        curl -H 'Authorization: Api-Key {credentials['api_key']}' "
        f"http://{bind}/api/v1/quotas\n",
        flush=True,
    )

    # gunicorn's workers are processes: they share metric samples through files.
    metrics_dir = BASE_DIR / "var" / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    from django.db import connections

    # gunicorn's workers open their own connections; do not hold one here.
    connections.close_all()
    gunicorn = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "horizon_quota.wsgi",
            "--bind",
            bind,
            "--workers",
            workers,
            # Our middleware logs every request as JSON with its id.
            "--graceful-timeout",
            "10",
        ],
        env=os.environ.copy(),
    )

    def forward(signum, frame):
        gunicorn.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = gunicorn.wait()
    # Leaving normally runs the embedded server's atexit hook, which stops it.
    return 0 if code in (0, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(main())
