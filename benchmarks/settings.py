"""Settings for benchmark runs: the service's own, defaults included (request logs
at INFO, the write throttle counting), plus the baseline endpoints
(benchmarks/urls.py, benchmarks/wsgi.py)."""

from horizon_quota.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls"
