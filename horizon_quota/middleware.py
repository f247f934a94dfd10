"""Middleware that only browsers need, skipped for the API.

Sessions, the logged-in user and messages serve the admin and the pages a browser
opens. The API authenticates every call with its key (the ``Authorization`` header,
no cookies) and answers JSON, so none of them applies to it, yet each cost every API
call some work (issue #13: the profile of an allocation). Each class here is the
middleware it names (a subclass, so Django's checks still find it) that lets
requests under ``API_PREFIXES`` go straight past; every other request gets it as
before. CSRF and framing protection stay as Django ships them, for every request
(they cost an API call next to nothing: DRF's views are CSRF-exempt).
"""

from django.contrib.auth.middleware import (
    AuthenticationMiddleware as DjangoAuthenticationMiddleware,
)
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessages
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessions

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
