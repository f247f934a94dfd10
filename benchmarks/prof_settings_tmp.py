import os
from benchmarks.settings import *  # noqa
if os.environ.get("P_NOMW"):
    MIDDLEWARE = ["horizon_quota.observability.RequestObservabilityMiddleware", "django.middleware.common.CommonMiddleware"]
if os.environ.get("P_SSB"):
    DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = None if os.environ.get("P_NOPREP") else 5
if os.environ.get("P_NOTHROTTLE"):
    API_WRITE_RATE = None
