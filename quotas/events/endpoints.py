"""Webhook endpoints (DESIGN §7a): creating, changing, deleting and reading them,
and the test event. The API (admin role) and the admin both call these.

An endpoint receives the events of its ``event_types`` (empty: every type) whose
quota lies in its ``scope`` (an entity, as for API keys; null: every quota). Its
secret (Standard Webhooks, ``whsec_`` and base64) is made here and shown once, in
the answer that creates the endpoint. A new endpoint receives the events committed
after it was made, not the outbox's past; so does one that is enabled again.

These functions open ``transaction.atomic()`` rather than a durable block because
the Django admin calls them inside its own transaction (as quotas.services does).

A scoped API key manages only endpoints made by keys of its scope (or of one inside
it): it sees no other, and may not make one without a scope. An endpoint made or
changed by a scoped key gets only events inside that key's scope, whatever its own
scope names (an entity id may repeat in another organization). An entity or a quota
id outside the key's scope is refused in the same words as one that does not
exist.
"""

import base64
import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, QuerySet
from django.db.models.functions import Now

from horizon_quota.errors import Forbidden, InvalidInput, NotFound
from quotas.access.scoping import Scope, quotas_in_scope
from quotas.events.models import (
    Event,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from quotas.events.selectors import FEED_TYPES
from quotas.events.targets import TargetRefused, target_check
from quotas.models import Quota

# Standard Webhooks asks for a secret of 24 to 64 random bytes.
SECRET_BYTES = 32
URL_MAX_LENGTH = 2000
DESCRIPTION_MAX_LENGTH = 200
SUBJECT = "a webhook endpoint"


def secret_generate() -> str:
    """A new Standard Webhooks secret: ``whsec_`` and base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", fields={field: [message]})


def url_clean(url: str) -> str:
    """The URL, trimmed and checked by the SSRF guard (quotas/events/targets.py)."""
    url = (url or "").strip()
    if not url:
        raise _invalid("url", "This field may not be blank.")
    if len(url) > URL_MAX_LENGTH:
        raise _invalid("url", f"At most {URL_MAX_LENGTH} characters.")
    try:
        target_check(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
    except TargetRefused as exc:
        raise _invalid("url", str(exc)) from None
    return url


def event_types_clean(values: list[str]) -> list[str]:
    """Subscribed event types, any case, without repeats; empty means every type.
    The test event is not subscribed to: it is sent to one endpoint on request."""
    types = []
    for value in values:
        name = value.strip().lower()
        if name not in FEED_TYPES:
            raise _invalid(
                "event_types",
                f"Unknown event type {value!r}; one of: {', '.join(FEED_TYPES)}.",
            )
        types.append(name)
    return sorted(set(types))


def scope_clean(
    text: str | None, *, key_scope: Scope | None
) -> tuple[Scope | None, UUID | None]:
    """The endpoint's scope from ``organization:ID``, ``team:ID``, ``user:ID`` or a
    quota id (meaning its entity), as API keys read it; and the quota id when it
    was given as one. A scoped key may only name an entity inside its scope."""
    if text is None or not str(text).strip():
        if key_scope is not None:
            raise Forbidden(
                "A scoped API key cannot make a webhook endpoint without a scope: "
                "it would receive events from outside its scope."
            )
        return None, None
    text = str(text).strip()
    try:
        quota_id = UUID(text)
    except ValueError:
        quota_id = None
    try:
        scope = Scope.parse(text, subject=SUBJECT)
    except InvalidInput as exc:
        raise _invalid("scope", exc.message) from None
    if key_scope is not None and not _entity_in_scope(scope, key_scope):
        # Worded as for an entity or a quota id that does not exist: a quota id
        # outside the key's scope is never turned into the entity it names.
        if quota_id is not None:
            raise _invalid("scope", Scope.unknown_message(text, subject=SUBJECT))
        raise _invalid(
            "scope",
            f"Cannot scope {SUBJECT} to {text!r}: {scope.entity_type} "
            f"{scope.entity_id!r} has no quota.",
        )
    return scope, quota_id


def _entity_in_scope(scope: Scope, key_scope: Scope) -> bool:
    entity_quotas = Quota.objects.filter(
        entity_type=scope.entity_type, entity_id=scope.entity_id
    )
    return quotas_in_scope(entity_quotas, key_scope).exists()


def description_clean(text: str | None) -> str:
    text = (text or "").strip()
    if len(text) > DESCRIPTION_MAX_LENGTH:
        raise _invalid("description", f"At most {DESCRIPTION_MAX_LENGTH} characters.")
    return text


def _latest_event_id() -> int:
    return Event.objects.aggregate(latest=Max("id"))["latest"] or 0


# --- Reading -------------------------------------------------------------------------


def endpoint_list(*, scope: Scope | None = None) -> QuerySet[WebhookEndpoint]:
    """Endpoints, newest first; for a scoped key those scoped inside its scope."""
    endpoints = WebhookEndpoint.objects.order_by("-created_at", "-id")
    if scope is None:
        return endpoints
    # Made by a key of this scope or one inside it (whatever the endpoint's own
    # scope names, its events are confined to its maker's scope).
    inside = quotas_in_scope(
        Quota.objects.filter(
            entity_type=OuterRef("owner_scope_entity_type"),
            entity_id=OuterRef("owner_scope_entity_id"),
        ),
        scope,
    )
    return endpoints.filter(Exists(inside))


def endpoint_get(*, endpoint_id: UUID, scope: Scope | None = None) -> WebhookEndpoint:
    endpoint = endpoint_list(scope=scope).filter(id=endpoint_id).first()
    if endpoint is None:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found.")
    return endpoint


def attempt_list(*, endpoint_id: UUID) -> QuerySet[WebhookAttempt]:
    """The endpoint's delivery log, newest first."""
    return WebhookAttempt.objects.filter(endpoint_id=endpoint_id).order_by("-id")


# --- Writing -------------------------------------------------------------------------


def endpoint_create(
    *,
    url: str,
    event_types: list[str] | None = None,
    scope: str | None = None,
    enabled: bool = True,
    description: str = "",
    key_scope: Scope | None = None,
) -> WebhookEndpoint:
    """A new endpoint with a new secret (``endpoint.secret``, to show once). It
    receives the events committed from now on."""
    url = url_clean(url)
    event_types = event_types_clean(event_types or [])
    entity, quota_id = scope_clean(scope, key_scope=key_scope)
    description = description_clean(description)
    return WebhookEndpoint.objects.create(
        url=url,
        event_types=event_types,
        scope_entity_type=entity.entity_type if entity else None,
        scope_entity_id=entity.entity_id if entity else None,
        scope_quota_id=quota_id,
        owner_scope_entity_type=key_scope.entity_type if key_scope else None,
        owner_scope_entity_id=key_scope.entity_id if key_scope else None,
        enabled=enabled,
        secret=secret_generate(),
        description=description,
        cursor=_latest_event_id(),
    )


def endpoint_update(
    *, endpoint_id: UUID, changes: dict[str, Any], key_scope: Scope | None = None
) -> WebhookEndpoint:
    """Change ``url``, ``event_types``, ``scope``, ``enabled`` or ``description``
    (absent: unchanged). Everything is checked before anything is written. Enabling
    a disabled endpoint clears its failure record and starts it at the events
    committed from now on."""
    cleaned: dict[str, Any] = {}
    if "url" in changes:
        cleaned["url"] = url_clean(changes["url"])
    if "event_types" in changes:
        cleaned["event_types"] = event_types_clean(changes["event_types"] or [])
    if "scope" in changes:
        entity, quota_id = scope_clean(changes["scope"], key_scope=key_scope)
        cleaned["scope_entity_type"] = entity.entity_type if entity else None
        cleaned["scope_entity_id"] = entity.entity_id if entity else None
        cleaned["scope_quota_id"] = quota_id
    if "description" in changes:
        cleaned["description"] = description_clean(changes["description"])
    with transaction.atomic():
        # The row lock orders this change with the delivery process's fan-out,
        # which reads the cursor and filters under the same lock.
        endpoint = (
            endpoint_list(scope=key_scope)
            .select_for_update(of=("self",))
            .filter(id=endpoint_id)
            .first()
        )
        if endpoint is None:
            raise NotFound(f"Webhook endpoint {endpoint_id} not found.")
        if "enabled" in changes:
            enabled = bool(changes["enabled"])
            if enabled and not endpoint.enabled:
                endpoint.cursor = _latest_event_id()
                endpoint.failing_since = None
                endpoint.disabled_reason = ""
            endpoint.enabled = enabled
        for name, value in cleaned.items():
            setattr(endpoint, name, value)
        if key_scope is not None:
            # Changed by a scoped key: confined to its scope from now on.
            endpoint.owner_scope_entity_type = key_scope.entity_type
            endpoint.owner_scope_entity_id = key_scope.entity_id
        endpoint.save()
    return endpoint


def endpoint_delete(*, endpoint_id: UUID, key_scope: Scope | None = None) -> None:
    """Delete an endpoint with its deliveries and their log."""
    endpoint = endpoint_get(endpoint_id=endpoint_id, scope=key_scope)
    with transaction.atomic():
        WebhookAttempt.objects.filter(endpoint=endpoint).delete()
        WebhookDelivery.objects.filter(endpoint=endpoint).delete()
        WebhookEndpoint.objects.filter(id=endpoint.id).delete()


def endpoint_send_test(
    *, endpoint_id: UUID, key_scope: Scope | None = None
) -> WebhookDelivery:
    """Queue a ``webhook.test`` event for this endpoint alone (whether or not it
    subscribes to the type, and even when disabled: it is how one checks a
    receiver). The next delivery pass sends it. Returns its delivery."""
    endpoint = endpoint_get(endpoint_id=endpoint_id, scope=key_scope)
    hours = settings.WEBHOOK_RETRY_HOURS
    with transaction.atomic():
        event = Event.objects.create(
            type=EventType.TEST,
            data={
                "endpoint_id": str(endpoint.id),
                "message": "A test event from horizon-quota.",
            },
        )
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            event=event,
            retry_until=Now() + timedelta(hours=hours),
        )
    # The event's public id is given at the commit (quotas/events/services.py).
    return WebhookDelivery.objects.select_related("event").get(id=delivery.id)
