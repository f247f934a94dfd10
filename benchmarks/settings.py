"""Settings for benchmark runs: the service's own, plus a trivial endpoint to
measure the framework's ceiling on the same machine, in the same run."""

from horizon_quota.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls"
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
