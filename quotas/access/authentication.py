import hmac
import re
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from quotas.models import KEY_PREFIX, ApiKey

KEYWORD = "Api-Key"
# What generated OpenAPI clients send; the same key either way.
KEYWORDS = {"api-key", "bearer"}
# hq_<prefix>_<secret>: the prefix is at most ApiKey.prefix's 16 characters, the
# secret is URL-safe base64 (see ApiKey.generate).
_KEY_SHAPE = re.compile(rf"{KEY_PREFIX}_[0-9A-Za-z]{{1,16}}_[0-9A-Za-z_-]{{1,256}}")


# Keys verified recently, by the SHA-256 of the raw key: the lookup would otherwise be
# a database round trip on every call, as costly here as half an allocation. Expiry
# is still checked on every request (expires_at is in the cached row); a revocation
# reaches a process within API_KEY_CACHE_SECONDS. Per process, bounded in size.
_verified: dict[str, tuple[float, ApiKey]] = {}
_VERIFIED_MAX = 4096


def forget_verified_keys() -> None:
    _verified.clear()


def forget_verified_key(key_id: int) -> None:
    """Drop one key from this process's cache (e.g. once it is revoked)."""
    for digest, (_, key) in list(_verified.items()):
        if key.pk == key_id:
            _verified.pop(digest, None)


# last_used_at is written at most once a minute per key, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def _record_use(key: ApiKey, now) -> None:
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    # Conditional on the stored value, so other processes sharing the key do not
    # rewrite it within the minute either; stamped with the database clock.
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=Now() - LAST_USED_RESOLUTION)
    ).update(last_used_at=Now())
    key.last_used_at = now  # the cached copy: no write again within the minute


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <key>`` (or ``Bearer <key>``, as generated clients
    send it). The request's ``auth`` is the ``ApiKey``."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _, raw_key = header.partition(" ")
        if keyword.lower() not in KEYWORDS or not raw_key.strip():
            raise exceptions.AuthenticationFailed(
                f"Use the header 'Authorization: {KEYWORD} <key>' "
                "(or 'Authorization: Bearer <key>')."
            )
        key = self._cached_key_for(raw_key.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        _record_use(key, now)
        return (None, key)

    def _cached_key_for(self, raw_key: str) -> ApiKey | None:
        ttl = settings.API_KEY_CACHE_SECONDS
        if ttl <= 0:
            return self.key_for(raw_key)
        digest = ApiKey.hash_key(raw_key)
        cached = _verified.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[0] < ttl:
            return cached[1]
        key = self.key_for(raw_key)
        if key is not None:  # only verified keys: unknown ones cannot fill the cache
            if len(_verified) >= _VERIFIED_MAX:
                _verified.clear()
            _verified[digest] = (now, key)
        return key

    @staticmethod
    def key_for(raw_key: str) -> ApiKey | None:
        """The stored key matching ``raw_key`` (revoked or expired included)."""
        # Check the shape before querying: a NUL byte or any other odd character
        # would otherwise reach PostgreSQL, which refuses it with an error (a 500).
        if not _KEY_SHAPE.fullmatch(raw_key):
            return None
        parts = raw_key.split("_", 2)
        key = ApiKey.objects.filter(prefix=parts[1]).first()
        if key is None or not hmac.compare_digest(
            key.key_hash, ApiKey.hash_key(raw_key)
        ):
            return None
        return key

    def authenticate_header(self, request):
        return KEYWORD


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Two schemes for the one key, either of which will do (OR): ``Api-Key <key>``
    and the bearer form that generated clients send."""

    target_class = "quotas.access.authentication.ApiKeyAuthentication"
    name = ["ApiKeyAuth", "BearerAuth"]

    def get_security_requirement(self, auto_schema):
        return [{"ApiKeyAuth": []}, {"BearerAuth": []}]

    def get_security_definition(self, auto_schema):
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "Send `Authorization: Api-Key <key>`.",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": "Or send the same key as `Authorization: Bearer <key>`.",
            },
        ]
