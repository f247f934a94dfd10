"""`manage.py check --deploy` is clean with production settings."""

import os
import subprocess
import sys

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
    "ALLOWED_HOSTS": "quota.example.com",
    "TRUST_X_FORWARDED_PROTO": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
}


def _check(extra):
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={**os.environ, **extra},
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = _check(PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_warns_without_them():
    result = _check({"DEBUG": "false", "SECRET_KEY": PRODUCTION["SECRET_KEY"]})

    assert result.returncode != 0
    assert "security.W008" in result.stdout + result.stderr
