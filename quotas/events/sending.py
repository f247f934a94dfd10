"""Sending one webhook: the signed request and what came of it (DESIGN §7a).

Signed per the Standard Webhooks spec with the maintained ``standardwebhooks``
library: ``webhook-id`` is the event id (the same on every retry, so a receiver
drops repeats by it), ``webhook-timestamp`` the time of this attempt and
``webhook-signature`` ``v1,`` and the HMAC-SHA256 of ``id.timestamp.body``. The body
is the spec's envelope ``{"type", "timestamp", "data"}`` with the event, in the
feed's shape, as ``data``.

The target is resolved and checked by the SSRF guard at each send, and the
connection is made to the very address that was checked (urllib3 pool on the
address; ``Host`` header, TLS server name and certificate check on the host name),
so a name that resolves elsewhere a moment later cannot redirect it. Redirects are
never followed, the timeout is ``WEBHOOK_TIMEOUT_SECONDS`` and at most
``WEBHOOK_MAX_RESPONSE_BYTES`` of the answer are read. No database work here.
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from math import floor

import simplejson
import urllib3
from django.conf import settings
from rest_framework.utils.encoders import JSONEncoder
from standardwebhooks import Webhook

from quotas.events.models import Event
from quotas.events.serializers import EventSerializer
from quotas.events.targets import (
    Resolver,
    TargetRefused,
    system_resolver,
    target_resolve,
)

USER_AGENT = "horizon-quota-webhooks/1"
ERROR_MAX_LENGTH = 500


@dataclass(frozen=True)
class SendResult:
    """What one attempt came to: 2xx is delivered; anything else is retried."""

    status_code: int | None
    duration_ms: int
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def event_body(event: Event) -> bytes:
    """The request body for ``event``: the Standard Webhooks envelope, exact numbers."""
    shape = EventSerializer(event).data
    envelope = {"type": event.type, "timestamp": shape["occurred_at"], "data": shape}
    return simplejson.dumps(
        envelope,
        default=JSONEncoder().default,
        use_decimal=True,
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def signed_headers(*, secret: str, message_id: str, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed now."""
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(
        msg_id=message_id, timestamp=now, data=body.decode()
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(floor(now.timestamp())),
        "webhook-signature": signature,
    }


def _pool(target, timeout: urllib3.Timeout):
    options = {"timeout": timeout, "retries": False, "maxsize": 1, "block": False}
    if target.scheme == "https":
        # Connect to the checked address; verify the certificate against the name.
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            **options,
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, **options)


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_MAX_LENGTH else text[: ERROR_MAX_LENGTH - 1] + "…"


def webhook_send(
    *,
    url: str,
    secret: str,
    message_id: str,
    body: bytes,
    resolver: Resolver = system_resolver,
) -> SendResult:
    """POST ``body`` to ``url``, signed; never raises for what the network does."""
    began = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - began) * 1000)

    try:
        target = target_resolve(
            url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE, resolver=resolver
        )
    except TargetRefused as exc:
        return SendResult(None, elapsed(), _clip(f"refused: {exc}"))
    seconds = settings.WEBHOOK_TIMEOUT_SECONDS
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(secret=secret, message_id=message_id, body=body),
    }
    pool = _pool(target, urllib3.Timeout(connect=seconds, read=seconds))
    try:
        response = pool.urlopen(
            "POST",
            target.request_path,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            # Read no more than the cap; the connection is closed, not drained.
            excerpt = response.read(settings.WEBHOOK_MAX_RESPONSE_BYTES)
        finally:
            response.close()
    except urllib3.exceptions.NewConnectionError as exc:
        # A subclass of the timeout error: a refused connection is not a timeout.
        return SendResult(None, elapsed(), _clip(f"cannot connect: {exc}"))
    except urllib3.exceptions.TimeoutError:
        return SendResult(None, elapsed(), f"timed out after {seconds} s")
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        return SendResult(None, elapsed(), _clip(f"{type(exc).__name__}: {reason}"))
    finally:
        pool.close()
    status = response.status
    if 200 <= status < 300:
        return SendResult(status, elapsed())
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += " (redirects are not followed)"
    text = excerpt[:200].decode("utf-8", "replace").strip()
    if text:
        error += f": {text}"
    return SendResult(status, elapsed(), _clip(error))
