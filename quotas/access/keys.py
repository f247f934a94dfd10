"""API keys: creating, revoking and listing them.

A key is shown once, when it is created; only its SHA-256 is stored
(``quotas.models.ApiKey``). Revoking stamps ``revoked_at`` with the database clock
and drops the key from this process's authentication cache; other processes refuse
it within ``API_KEY_CACHE_SECONDS``.
"""

import logging

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Now

from horizon_quota.env import parse_rate
from horizon_quota.errors import Conflict, InvalidInput, NotFound
from quotas.access.authentication import forget_verified_key
from quotas.access.scoping import Scope
from quotas.audit import Actor
from quotas.models import ApiKey, ApiKeyRole


def api_key_create(
    *,
    name: str,
    role: str,
    scope: Scope | str | None = None,
    expires_at=None,
    write_rate: str = "",
) -> tuple[ApiKey, str]:
    """Create a key; return it with the raw secret, which is never stored.

    ``scope`` confines it to an entity: a ``Scope``, or text as ``Scope.parse``
    reads it (``team:acme-research``, or a quota id meaning that quota's entity).
    """
    if role not in ApiKeyRole.values:
        raise InvalidInput(
            f"Unknown role {role!r}; valid: {', '.join(ApiKeyRole.values)}."
        )
    if not name or not name.strip():
        raise InvalidInput("A key needs a name.")
    if isinstance(scope, str):
        scope = Scope.parse(scope) if scope.strip() else None
    write_rate = write_rate_clean(write_rate)
    prefix, raw_key = ApiKey.generate()
    key = ApiKey.objects.create(
        name=name.strip(),
        role=role,
        scope_entity_type=scope.entity_type if scope else None,
        scope_entity_id=scope.entity_id if scope else None,
        expires_at=expires_at,
        write_rate=write_rate,
        prefix=prefix,
        key_hash=ApiKey.hash_key(raw_key),
    )
    return key, raw_key


def write_rate_clean(value: str | None) -> str:
    """A key's own write rate as stored: ``""`` (its role's default), ``off``, or
    a rate such as ``2000/s`` or ``100000/min``; anything else is ``InvalidInput``."""
    text = (value or "").strip().lower()
    if not text:
        return ""
    try:
        parse_rate("write_rate", text)
    except ImproperlyConfigured:
        message = (
            "Expected a rate such as 2000/s, 100000/min or 5000000/hour, or off "
            f"(got {value!r})."
        )
        raise InvalidInput(
            f"write_rate: {message}", fields={"write_rate": [message]}
        ) from None
    return "off" if text == "0" else text


_key_log = logging.getLogger(__name__)


def _api_key_lookup(key_id_or_prefix) -> ApiKey:
    """The key with this prefix or, failing that, this numeric id; locked."""
    value = str(key_id_or_prefix).strip()
    keys = ApiKey.objects.select_for_update()
    key = keys.filter(prefix=value).first() if value else None
    if key is None and value.isdigit() and len(value) < 19:
        key = keys.filter(id=int(value)).first()
    if key is None:
        raise NotFound(f"No API key with prefix or id {value!r}.")
    return key


def api_key_revoke(*, key_id_or_prefix, actor: Actor | None = None) -> ApiKey:
    """Revoke a key (``revoked_at`` = the database clock) and forget it in this
    process's authentication cache; other processes refuse it within
    API_KEY_CACHE_SECONDS. Revoking a revoked key is a ``Conflict``."""
    with transaction.atomic():
        key = _api_key_lookup(key_id_or_prefix)
        if key.revoked_at is not None:
            raise Conflict(
                f"API key {key.prefix} ({key.name}) was already revoked at "
                f"{key.revoked_at:%Y-%m-%dT%H:%M:%SZ}."
            )
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=Now())
        key.refresh_from_db(fields=["revoked_at"])
    forget_verified_key(key.pk)
    actor = actor or Actor.system()
    _key_log.info(
        "API key %s (%s) revoked by %s %s", key.prefix, key.name, actor.type, actor.name
    )
    return key


def api_key_list(*, include_inactive: bool = False) -> QuerySet[ApiKey]:
    """API keys, oldest first; only the active ones (neither revoked nor expired by
    the database clock) unless ``include_inactive``."""
    keys = ApiKey.objects.order_by("created_at", "id")
    if not include_inactive:
        keys = keys.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=Now())
        )
    return keys


def api_key_state(key: ApiKey, *, now) -> str:
    """``revoked``, ``expired`` or ``active`` at ``now``."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"
