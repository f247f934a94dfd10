"""Request ids, structured logs and Prometheus metrics.

* Every request gets an id: the client's ``X-Request-ID`` when it is a sane token,
  otherwise a new one. It is returned in ``X-Request-ID``, attached to every log
  record made while the request runs, and logged with the request.
* One JSON line per request goes to the ``horizon_quota.requests`` logger.
* Metrics live in the ``prometheus_client`` registry. Under gunicorn each worker is
  a process: with ``PROMETHEUS_MULTIPROC_DIR`` set (the run command sets it), the
  workers share their samples through that directory and ``/metrics`` aggregates
  them. Quota gauges are read from the database at scrape time, for organization
  and team quotas only, so their label sets stay bounded.
"""

import contextvars
import hmac
import ipaddress
import json
import logging
import os
import re
import time
import uuid

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

request_logger = logging.getLogger("horizon_quota.requests")
_request_id = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

HTTP_REQUESTS = Counter(
    "hq_http_requests_total",
    "HTTP requests by endpoint (route name), method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "hq_http_request_duration_seconds",
    "HTTP request latency by endpoint and method.",
    ["endpoint", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ALLOCATION_OUTCOMES = Counter(
    "hq_allocation_outcomes_total",
    "Allocation outcomes: granted, denied, replayed, conflict, released, expired.",
    ["outcome"],
)
DATABASE_ERRORS = Counter(
    "hq_database_errors_total",
    "Database errors met while serving requests, by exception class.",
    ["kind"],
)


def current_request_id() -> str:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request)."""

    def filter(self, record):
        if not hasattr(record, "request_id"):  # the request log line sets its own
            record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record):
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for key, value in vars(record).items():
            if key not in self.RESERVED and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _route(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.url_name or match.route or "unnamed"


class RequestObservabilityMiddleware:
    """Outermost middleware: request id, one log line and the HTTP metrics."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        sent = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = sent if _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        token = _request_id.set(request_id)
        request.request_id = request_id
        # Work the view leaves for after its answer (e.g. counting a write that
        # never reached the engine: quotas/access/throttling.py).
        request.after_response = []
        began = time.perf_counter()
        try:
            response = self.get_response(request)
            for callback in request.after_response:
                try:
                    callback()
                except DatabaseError:
                    DATABASE_ERRORS.labels("after_response").inc()
                    request_logger.exception("after-response work failed")
        finally:
            _request_id.reset(token)
        elapsed = time.perf_counter() - began
        response["X-Request-ID"] = request_id
        route = _route(request)
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        HTTP_LATENCY.labels(route, request.method).observe(elapsed)
        key = getattr(request, "auth", None)  # DRF copies it onto the HttpRequest
        request_logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 3),
                "remote_addr": request.META.get("REMOTE_ADDR"),
                "api_key": getattr(key, "prefix", None),
            },
        )
        return response


class QuotaGaugeCollector:
    """Limit and used of organization and team quotas, read at scrape time."""

    QUERY = """
        SELECT entity_type, entity_id, resource_type,
               limit_value * overcommit_ratio, used
          FROM quotas
         WHERE entity_type IN ('organization', 'team')
         ORDER BY depth, entity_type, entity_id, resource_type
         LIMIT %s
    """

    def collect(self):
        limit = GaugeMetricFamily(
            "hq_quota_effective_limit",
            "Effective limit of organization and team quotas.",
            labels=["entity_type", "entity_id", "resource_type"],
        )
        used = GaugeMetricFamily(
            "hq_quota_used",
            "Used amount (whole subtree) of organization and team quotas.",
            labels=["entity_type", "entity_id", "resource_type"],
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(self.QUERY, [settings.METRICS_MAX_QUOTA_SERIES])
                rows = cursor.fetchall()
        except DatabaseError:
            DATABASE_ERRORS.labels("metrics_scrape").inc()
            rows = []
        for entity_type, entity_id, resource_type, effective, in_use in rows:
            labels = [entity_type, entity_id, resource_type]
            limit.add_metric(labels, float(effective))
            used.add_metric(labels, float(in_use))
        yield limit
        yield used


class WebhookGaugeCollector:
    """The webhook outbox at scrape time (DESIGN §7a), from the tables themselves,
    so every process reports the same figures whichever process delivers:

    * ``hq_webhook_deliveries{status}``: deliveries pending, delivered, given up;
    * ``hq_webhook_events_pending``: events some enabled endpoint has yet to get
      (a delivery pending, or not yet queued by a delivery pass);
    * ``hq_webhook_oldest_undelivered_age_seconds``: the age of the oldest of them
      (0 when there is none): how far behind the receivers are.
    """

    STATUSES = ("pending", "delivered", "given_up")
    DELIVERIES = "SELECT status, count(*) FROM webhook_deliveries GROUP BY status"
    # Pending deliveries of enabled endpoints, and the events after the smallest
    # cursor of an enabled endpoint that no pass has queued yet (test events are
    # queued as they are made).
    PENDING = """
        WITH undelivered AS (
            SELECT e.row_id, e.occurred_at
              FROM webhook_deliveries d
              JOIN webhook_endpoints ep ON ep.id = d.endpoint_id AND ep.enabled
              JOIN events e ON e.row_id = d.event_id
             WHERE d.status = 'pending'
            UNION
            SELECT e.row_id, e.occurred_at
              FROM events e
             WHERE e.id > (SELECT min(cursor) FROM webhook_endpoints WHERE enabled)
               AND e.type <> 'webhook.test'
        )
        SELECT count(*),
               coalesce(extract(epoch FROM statement_timestamp() - min(occurred_at)), 0)
          FROM undelivered
    """

    def collect(self):
        deliveries = GaugeMetricFamily(
            "hq_webhook_deliveries",
            "Webhook deliveries by status: pending, delivered, given_up.",
            labels=["status"],
        )
        pending = GaugeMetricFamily(
            "hq_webhook_events_pending",
            "Events an enabled webhook endpoint has yet to receive.",
        )
        oldest = GaugeMetricFamily(
            "hq_webhook_oldest_undelivered_age_seconds",
            "Age of the oldest event an enabled webhook endpoint has yet to receive.",
        )
        counts, waiting, age = {}, 0, 0.0
        try:
            with connection.cursor() as cursor:
                cursor.execute(self.DELIVERIES)
                counts = dict(cursor.fetchall())
                cursor.execute(self.PENDING)
                waiting, age = cursor.fetchone()
        except DatabaseError:
            DATABASE_ERRORS.labels("metrics_scrape").inc()
        for status in self.STATUSES:
            deliveries.add_metric([status], float(counts.get(status, 0)))
        pending.add_metric([], float(waiting))
        oldest.add_metric([], max(0.0, float(age)))
        yield deliveries
        yield pending
        yield oldest


def _client_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        sent = request.META.get("HTTP_AUTHORIZATION", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request):
    """Prometheus text format; only for allowed addresses or the metrics token."""
    if not _client_allowed(request):
        return JsonResponse(
            {"error": "forbidden", "message": "Metrics are not open to this client."},
            status=403,
        )
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry)
    output += generate_latest(_quota_registry())
    return HttpResponse(output, content_type=CONTENT_TYPE_LATEST)


_quota_registry_instance = None


def _quota_registry() -> CollectorRegistry:
    global _quota_registry_instance
    if _quota_registry_instance is None:
        _quota_registry_instance = CollectorRegistry(auto_describe=False)
        _quota_registry_instance.register(QuotaGaugeCollector())
        _quota_registry_instance.register(WebhookGaugeCollector())
    return _quota_registry_instance
