"""Middleware that only browsers need, skipped for the API.

Sessions, the logged-in user and messages serve the admin and the pages a browser
opens. The API authenticates every call with its key (the ``Authorization`` header,
no cookies) and answers JSON, so none of them applies to it, yet each cost every API
call some work (issue #13: the profile of an allocation). Each class here is the
middleware it names (a subclass, so Django's checks still find it) that lets
requests under ``API_PREFIXES`` go straight past; every other request gets it as
before. CSRF and framing protection stay as Django ships them, for every request
(they cost an API call next to nothing: DRF's views are CSRF-exempt).

``BodyLengthRequired`` is the API's own: it refuses a body it could not read.
"""

from django.contrib.auth.middleware import (
    AuthenticationMiddleware as DjangoAuthenticationMiddleware,
)
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessages
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessions
from django.http import JsonResponse

from horizon_quota.api import LENGTH_REQUIRED_MESSAGE, error_body

# Paths no browser session is ever for: the API, health checks and metrics.
API_PREFIXES = ("/api/", "/health", "/metrics")


def for_api(request) -> bool:
    return request.path_info.startswith(API_PREFIXES)


class BrowserOnly:
    """Mixin: the middleware's work (and hooks) for every request but the API's."""

    def __call__(self, request):
        if for_api(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(BrowserOnly, DjangoSessions):
    pass


class AuthenticationMiddleware(BrowserOnly, DjangoAuthenticationMiddleware):
    pass


class MessageMiddleware(BrowserOnly, DjangoMessages):
    pass


class BodyLengthRequired:
    """411 ``length_required`` for an API request whose body has no length.

    Django reads a request body only up to ``CONTENT_LENGTH`` (and so enforces
    ``API_MAX_BODY_BYTES``); a body sent with ``Transfer-Encoding`` (chunked) and no
    ``Content-Length`` reached the views as empty, so a release with a final
    consumption settled the whole reservation. Such a request is refused before any
    view runs, whatever the server (gunicorn hands the body on decoded, others do
    not): it changes nothing, and the client learns to send ``Content-Length``.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        if (
            meta.get("HTTP_TRANSFER_ENCODING")
            and not meta.get("CONTENT_LENGTH")
            and request.path_info.startswith("/api/")
        ):
            return JsonResponse(
                error_body("length_required", LENGTH_REQUIRED_MESSAGE), status=411
            )
        return self.get_response(request)
