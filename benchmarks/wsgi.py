"""The benchmark's WSGI application: the service, plus two baselines served by the
same gunicorn workers in the same run (issue #13).

* ``/bench/trivial``: a DRF view that does nothing, under the service's whole
  middleware stack (what every request of the service pays before its view).
* ``/bench/bare``: the same view through Django and DRF with no project
  middleware and no authentication (``BareHandler``): the framework's own floor.
* ``/bench/floor/allocations``: the allocate statement the service sends
  (``hq_allocate``, the same arguments) from a plain WSGI function over one
  psycopg connection per worker, without Django or DRF: how much of the gap
  between the bare view and an allocation is the engine's, and how much the
  framework's.
"""

import json
import os

import dj_database_url
import psycopg
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application
from django.test.utils import override_settings

service = get_wsgi_application()


class BareHandler(WSGIHandler):
    """Django's handler with no middleware at all."""

    def load_middleware(self, is_async=False):
        with override_settings(MIDDLEWARE=[]):
            super().load_middleware(is_async)


bare = BareHandler()

_FLOOR_SQL = (
    "SELECT hq_allocate(%s, %s, %s, %s, %s, false, '{}'::jsonb, NULL, NULL, NULL, "
    "%s, NULL, %s, %s)::text"
)
_floor_connection = None


def _floor_database():
    global _floor_connection
    if _floor_connection is None or _floor_connection.closed:
        config = dj_database_url.parse(os.environ["DATABASE_URL"])
        _floor_connection = psycopg.connect(
            dbname=config["NAME"],
            user=config["USER"],
            password=config["PASSWORD"] or None,
            host=config["HOST"] or None,
            port=config["PORT"] or None,
            autocommit=True,
        )
    return _floor_connection


def floor(environ, start_response):
    """Allocate with the service's statement and nothing else: no validation, no
    authentication, the engine's JSON passed through."""
    from django.conf import settings

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.loads(environ["wsgi.input"].read(length))
    row = (
        _floor_database()
        .execute(
            _FLOOR_SQL,
            [
                body["entity_type"],
                body["entity_id"],
                body["resource_type"],
                body["job_id"],
                body["requested_value"],
                settings.DATABASE_LOCK_TIMEOUT_MS,
                settings.BUDGET_TIMEZONE,
                [str(t) for t in settings.ALERT_THRESHOLDS],
            ],
        )
        .fetchone()
    )
    answer = row[0].encode()
    granted = b'"outcome" : "granted"' in answer or b'"outcome":"granted"' in answer
    start_response(
        "201 Created" if granted else "409 Conflict",
        [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))],
    )
    return [answer]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/bench/bare":
        return bare(environ, start_response)
    if path == "/bench/floor/allocations":
        return floor(environ, start_response)
    return service(environ, start_response)
