"""API plumbing shared by every app: parsing, rendering, paging and errors."""

import json
import logging
from decimal import Decimal

import simplejson
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from horizon_quota.errors import ServiceError

logger = logging.getLogger(__name__)

# DRF exception class → the error kind of DESIGN §5.
_KIND_BY_EXCEPTION = [
    (exceptions.NotAuthenticated, "unauthorized"),
    (exceptions.AuthenticationFailed, "unauthorized"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.NotAcceptable, "invalid_input"),
    (exceptions.Throttled, "rate_limited"),
    (exceptions.ParseError, "invalid_input"),
    (exceptions.ValidationError, "invalid_input"),
]


def error_body(kind: str, message: str, fields: dict | None = None) -> dict:
    body = {"error": kind, "message": message}
    if fields:
        body["fields"] = fields
    return body


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [f"{key}: {text}" for key, value in detail.items() for text in _flatten(value)]
    if isinstance(detail, list):
        return [text for item in detail for text in _flatten(item)]
    return [str(detail)]


def _validation_fields(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    return {"non_field_errors": _flatten(detail)}


def exception_handler(exc, context):
    """Turn every exception raised in an API view into the JSON error of DESIGN §5."""
    if isinstance(exc, ServiceError):
        body = error_body(exc.kind, exc.message, exc.fields)
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if not isinstance(exc, exceptions.APIException):
        # Unhandled: log it with its traceback, answer without one.
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__)
        return Response(
            error_body("internal_error", "An internal error occurred."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    kind = next((k for cls, k in _KIND_BY_EXCEPTION if isinstance(exc, cls)), None)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        fields = _validation_fields(exc.detail)
        message = "; ".join(
            f"{name}: {' '.join(texts)}" if name != "non_field_errors" else " ".join(texts)
            for name, texts in fields.items()
        )
        return Response(
            error_body("invalid_input", message or "Invalid input.", fields),
            status=400,
            headers=headers,
        )
    if kind is None:
        kind = "invalid_input" if exc.status_code < 500 else "internal_error"
    message = " ".join(_flatten(exc.detail))
    if isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        exc.status_code = status.HTTP_401_UNAUTHORIZED
    return Response(error_body(kind, message), status=exc.status_code, headers=headers)


# --- Django-level handlers (outside DRF views: unknown paths, crashes) ----------------


def handler400(request, exception=None):
    return JsonResponse(error_body("invalid_input", "Bad request."), status=400)


def handler403(request, exception=None):
    return JsonResponse(error_body("forbidden", "Forbidden."), status=403)


def handler404(request, exception=None):
    return JsonResponse(
        error_body("not_found", f"No such path: {request.path}"), status=404
    )


def handler500(request):
    return JsonResponse(
        error_body("internal_error", "An internal error occurred."), status=500
    )


# --- Parsing and rendering ------------------------------------------------------------


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


class StrictJSONParser(JSONParser):
    """JSON parser that keeps numbers exact and refuses NaN and Infinity.

    Floats are parsed as ``Decimal`` so that ``0.1`` stays 0.1 and an amount with five
    decimal places is seen, and refused, instead of being rounded by a binary float.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream else ""
            if not text.strip():
                return {}
            return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"Malformed JSON: {exc}") from None
        except RecursionError:
            raise exceptions.ParseError("Malformed JSON: nested too deeply") from None


class DecimalJSONRenderer(JSONRenderer):
    """Render ``Decimal`` as an exact JSON number (DRF would go through ``float``)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return simplejson.dumps(
            data,
            default=JSONEncoder().default,
            use_decimal=True,
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()


# --- Paging -------------------------------------------------------------------------


class LinkHeaderCursorPagination(CursorPagination):
    """Cursor paging that keeps the body a plain JSON array (as the Rust service did)
    and puts the next page in an RFC 8288 ``Link`` header."""

    ordering = ("-created_at", "-id")
    page_size_query_param = "limit"
    invalid_cursor_message = "Invalid cursor."

    def __init__(self):
        self.page_size = settings.API_PAGE_SIZE
        self.max_page_size = settings.API_MAX_PAGE_SIZE

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            raise exceptions.ValidationError(
                {"limit": ["Must be a positive integer."]}
            )
        # A limit above the maximum is clamped, not refused (DESIGN §5).
        return min(int(raw), self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            raise exceptions.ValidationError({"cursor": ["Invalid cursor."]}) from None

    def get_paginated_response(self, data):
        headers = {}
        next_url = self.get_next_link()
        if next_url:
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Response(data, headers=headers)

    def get_paginated_response_schema(self, schema):
        return schema

    def get_schema_operation_parameters(self, view):
        return [
            {
                "name": "limit",
                "required": False,
                "in": "query",
                "description": (
                    f"Page size (default {settings.API_PAGE_SIZE}, values above "
                    f"{settings.API_MAX_PAGE_SIZE} are clamped)."
                ),
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": "cursor",
                "required": False,
                "in": "query",
                "description": (
                    "Opaque cursor taken from the `Link: <…>; rel=\"next\"` header."
                ),
                "schema": {"type": "string"},
            },
        ]

