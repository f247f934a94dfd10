"""Django's PostgreSQL backend with a cheaper connection health check.

With persistent connections and ``CONN_HEALTH_CHECKS``, Django sends ``SELECT 1``
before the first query of every request: a full round trip, as costly as half an
allocation on this hot path. Here a connection that was seen healthy within
``DATABASE_HEALTH_CHECK_DELAY`` seconds (a query of an earlier request succeeded on
it, or it passed the check) and that psycopg does not know to be broken or closed is
trusted without the round trip, the way PgBouncer's ``server_check_delay`` works.
Older connections are checked as before. A connection that fails mid-request is
closed at the end of it (Django does that) and the next request reconnects.
"""

import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    healthy_at = float("-inf")

    def _recently_healthy(self) -> bool:
        delay = getattr(settings, "DATABASE_HEALTH_CHECK_DELAY", 0)
        return (
            time.monotonic() - self.healthy_at < delay
            and not self.connection.closed
            and not self.connection.broken
        )

    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and self._recently_healthy()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()
        if self.connection is not None:
            self.healthy_at = time.monotonic()

    def close_if_unusable_or_obsolete(self):
        healthy = self.connection is not None and not self.errors_occurred
        super().close_if_unusable_or_obsolete()
        if healthy and self.connection is not None:
            self.healthy_at = time.monotonic()
