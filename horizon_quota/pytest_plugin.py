"""Give the test run a database before pytest-django configures Django.

With ``DATABASE_URL`` set, the tests use that server (pytest-django creates and drops
its own ``test_*`` database there). Without it, a throwaway embedded PostgreSQL is
started for this run and deleted at exit.
"""

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
    # Tests revoke and expire keys between requests: look keys up every time
    # (tests/test_api_key_cache.py covers the cache itself).
    os.environ.setdefault("API_KEY_CACHE_SECONDS", "0")
    if not os.environ.get("DATABASE_URL"):
        from horizon_quota import embedded

        os.environ["DATABASE_URL"] = embedded.throwaway_server_url()
    from horizon_quota.runtime import static_root

    static_root().mkdir(parents=True, exist_ok=True)
