"""API plumbing shared by every app: parsing, rendering, paging and errors."""

import base64
import binascii
import json
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal

import simplejson
from django.conf import settings
from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.db.models import Field, Q
from django.http import Http404, JsonResponse
from django.utils import timezone
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import BasePagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.utils.urls import replace_query_param

from horizon_quota.errors import ServiceError
from horizon_quota.observability import DATABASE_ERRORS

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


# The texts of the answers built here; ``horizon_quota.schema`` documents them.
LOCK_CONFLICT_MESSAGE = "The quota is busy (a row lock timed out); retry shortly."
UNAVAILABLE_MESSAGE = "The database is unavailable; retry shortly."
LENGTH_REQUIRED_MESSAGE = (
    "A request body needs a Content-Length header; one sent with Transfer-Encoding "
    "(chunked) and no Content-Length is not read."
)
# Seconds a client waits after a lock timeout or an unavailable database.
RETRY_AFTER_SECONDS = 1


def payload_too_large_message() -> str:
    return f"The request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."


def error_body(
    kind: str,
    message: str,
    fields: dict | None = None,
    *,
    retry_after: int | None = None,
) -> dict:
    """The JSON error of DESIGN §5. ``retry_after`` repeats the ``Retry-After``
    header (seconds) in the body, for clients that only see the body."""
    body = {"error": kind, "message": message}
    if fields:
        body["fields"] = fields
    if retry_after is not None:
        body["retry_after"] = retry_after
    return body


def _retry_later(kind: str, message: str, status_code: int, seconds: int) -> Response:
    """An answer to retry: ``Retry-After`` in the header and the body alike."""
    return Response(
        error_body(kind, message, retry_after=seconds),
        status=status_code,
        headers={"Retry-After": str(seconds)},
    )


def _flatten(detail) -> list[str]:
    if isinstance(detail, dict):
        return [
            f"{key}: {text}"
            for key, value in detail.items()
            for text in _flatten(value)
        ]
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
        body = {**error_body(exc.kind, exc.message, exc.fields), **exc.extra}
        return Response(body, status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body above DATA_UPLOAD_MAX_MEMORY_SIZE.
        return Response(
            error_body("payload_too_large", payload_too_large_message()),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response(error_body("invalid_input", "Bad request."), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    if getattr(exc.__cause__, "sqlstate", None) == "55P03":  # lock_timeout
        # Also a spent lock budget (allocations/sql/hq_lock_budget.sql).
        return _retry_later(
            "conflict",
            LOCK_CONFLICT_MESSAGE,
            status.HTTP_409_CONFLICT,
            RETRY_AFTER_SECONDS,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or the connection broke: a retryable 503, not a bug.
        logger.warning("database unavailable: %s", exc.__class__.__name__)
        DATABASE_ERRORS.labels(exc.__class__.__name__).inc()
        return _retry_later(
            "unavailable",
            UNAVAILABLE_MESSAGE,
            status.HTTP_503_SERVICE_UNAVAILABLE,
            RETRY_AFTER_SECONDS,
        )
    if not isinstance(exc, exceptions.APIException):
        # Unhandled: log it with its traceback, answer without one.
        logger.exception(
            "unhandled error in %s", context.get("view").__class__.__name__
        )
        return Response(
            error_body("internal_error", "An internal error occurred."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    kind = next((k for cls, k in _KIND_BY_EXCEPTION if isinstance(exc, cls)), None)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    retry_after = None
    if getattr(exc, "wait", None):  # Throttled: the write rate limit of the key
        retry_after = int(exc.wait)
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, exceptions.ValidationError):
        fields = _validation_fields(exc.detail)
        message = "; ".join(
            f"{name}: {' '.join(texts)}"
            if name != "non_field_errors"
            else " ".join(texts)
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
    return Response(
        error_body(kind, message, retry_after=retry_after),
        status=exc.status_code,
        headers=headers,
    )


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


class _BadDocument(ValueError):
    """A document ``json.loads`` would take that the API refuses; its text is the
    whole message after "Malformed JSON: "."""


def _object(pairs: list) -> dict:
    """A JSON object, refused when a key appears twice (at any depth): the last one
    would silently win, and a client meant one of them."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _BadDocument(f"the key {json.dumps(key)} appears twice")
            seen.add(key)
    return obj


def _integer(text: str) -> int:
    # int() of a JSON integer literal fails only past the interpreter's digit limit
    # (sys.get_int_max_str_digits), with a message naming Python internals.
    try:
        return int(text)
    except ValueError:
        raise _BadDocument("a number has too many digits") from None


# A JSON string, escapes included; its brackets do not nest anything.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects in ``text`` nest deeper than ``limit``.

    A scan without recursion, done before ``json.loads`` so that a deep document is
    refused in time linear in its size, whatever the interpreter's recursion limit.
    """
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class StrictJSONParser(JSONParser):
    """JSON parser that keeps numbers exact and refuses NaN, Infinity and an object
    with a key twice.

    Floats are parsed as ``Decimal`` so that ``0.1`` stays 0.1 and an amount with five
    decimal places is seen, and refused, instead of being rounded by a binary float.
    It reads at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes (a larger body is 413) and
    refuses nesting deeper than ``API_MAX_JSON_DEPTH`` before parsing.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = b""
        if stream:
            # DRF hands over the request itself, which Django does not size-check
            # on read(): read one byte past the limit to see an oversize body.
            raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise RequestDataTooBig("The request body is too large.")
        max_depth = settings.API_MAX_JSON_DEPTH
        try:
            text = raw.decode(encoding)
            if not text.strip():
                return {}
            if json_depth_exceeds(text, max_depth):
                raise exceptions.ParseError(
                    f"Malformed JSON: nested deeper than {max_depth} levels "
                    "(API_MAX_JSON_DEPTH)."
                )
            return json.loads(
                text,
                parse_float=Decimal,
                parse_int=_integer,
                parse_constant=_reject_constant,
                object_pairs_hook=_object,
            )
        except _BadDocument as exc:
            raise exceptions.ParseError(f"Malformed JSON: {exc}.") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"Malformed JSON: {exc}") from None
        except RecursionError:
            raise exceptions.ParseError("Malformed JSON: nested too deeply") from None


def json_object_body(request) -> dict:
    """The request's body, which must be a JSON object; no body is ``{}``.

    For a view that reads its body without a serializer (a serializer refuses any
    other value itself): malformed JSON is 400, a body not sent as JSON is 415 (the
    parser's), and any other JSON value (``[1]``, ``"5"``, ``null``) is 400 in a
    serializer's words, so that a body is never silently taken as none.
    """
    data = request.data
    if not isinstance(data, dict):
        raise exceptions.ValidationError(
            {
                "non_field_errors": [
                    "Invalid data. Expected a dictionary, but got "
                    f"{type(data).__name__}."
                ]
            }
        )
    return data


class JsonNegotiation(DefaultContentNegotiation):
    """DRF's content negotiation, with the common case answered at once: a view
    that renders only JSON, asked with no ``Accept`` header or one that takes any
    type or JSON as such. Parsing the header took 7 % of an allocation's
    application CPU (issue #13); anything else is negotiated as DRF does, 406
    included."""

    _TAKES_JSON = frozenset({"", "*/*", "application/json", "application/*"})

    def select_renderer(self, request, renderers, format_suffix=None):
        if len(renderers) == 1 and not format_suffix:
            accept = request.META.get("HTTP_ACCEPT", "").strip().lower()
            if (
                accept in self._TAKES_JSON
                and renderers[0].media_type == "application/json"
                and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
            ):
                return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


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

# A cursor is unpadded URL-safe base64 of a JSON list of strings.
_CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,4096}")


class LinkHeaderCursorPagination(BasePagination):
    """Keyset paging that keeps the body a plain JSON array (as the Rust service did)
    and puts the next page in an RFC 8288 ``Link`` header.

    The cursor holds the values of *every* ordering field of the page's last row, and
    the next page starts strictly after that tuple. DRF's ``CursorPagination`` keys on
    the first field only and counts an offset through rows that share it; rows created
    in one transaction share ``created_at``, and past 1000 of them (its offset cutoff)
    its next link pointed at the same page forever. A tuple key has no ties, because
    the primary key ends it, and each page costs one index range scan however deep.

    Subclasses set ``ordering`` to non-null fields; the primary key is appended when
    it is not already the last one.
    """

    ordering = ("-created_at", "-id")
    page_size_query_param = "limit"
    cursor_query_param = "cursor"
    invalid_cursor_message = "Invalid cursor."

    def __init__(self):
        self.page_size = settings.API_PAGE_SIZE
        self.max_page_size = settings.API_MAX_PAGE_SIZE
        self.request = None
        self.page = []
        self.has_next = False
        self.keys = []

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            raise exceptions.ValidationError({"limit": ["Must be a positive integer."]})
        # A limit above the maximum is clamped, not refused (DESIGN §5).
        return min(int(raw), self.max_page_size)

    def _ordering_keys(self, model) -> list[tuple[Field, bool]]:
        """(field, descending) for each ordering field, the primary key last."""
        keys = []
        for name in self.ordering:
            field_name = name.lstrip("-")
            if field_name == "pk":
                field = model._meta.pk
            else:
                field = model._meta.get_field(field_name)
            keys.append((field, name.startswith("-")))
        if keys[-1][0] != model._meta.pk:
            keys.append((model._meta.pk, keys[-1][1]))
        return keys

    def _invalid_cursor(self):
        return exceptions.ValidationError({"cursor": [self.invalid_cursor_message]})

    def encode_cursor(self, instance) -> str:
        position = [field.value_to_string(instance) for field, _ in self.keys]
        raw = json.dumps(position, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode_cursor(self, encoded: str) -> list:
        """The ordering values a cursor holds, parsed; anything else is a 400."""
        if not _CURSOR_PATTERN.fullmatch(encoded):
            raise self._invalid_cursor()
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            position = json.loads(raw.decode("ascii"))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise self._invalid_cursor() from None
        if (
            not isinstance(position, list)
            or len(position) != len(self.keys)
            or not all(isinstance(text, str) for text in position)
        ):
            raise self._invalid_cursor()
        values = []
        for (field, _), text in zip(self.keys, position, strict=True):
            try:
                value = field.to_python(text)
                if isinstance(value, datetime):
                    # Only aware timestamps that exist in UTC: the database compares
                    # them, and a naive or out-of-range one would fail there.
                    if timezone.is_naive(value):
                        raise ValueError("naive timestamp")
                    value = value.astimezone(UTC)
            except (DjangoValidationError, ValueError, TypeError, OverflowError):
                raise self._invalid_cursor() from None
            if value is None:
                raise self._invalid_cursor()
            values.append(value)
        return values

    def _after(self, values) -> Q:
        """Rows strictly after ``values`` in the ordering (lexicographic)."""
        after = Q()
        for index, (field, descending) in enumerate(self.keys):
            lookup = "lt" if descending else "gt"
            step = Q(**{f"{field.attname}__{lookup}": values[index]})
            for (tied_field, _), tied_value in zip(
                self.keys[:index], values[:index], strict=True
            ):
                step &= Q(**{tied_field.attname: tied_value})
            after |= step
        return after

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        self.keys = self._ordering_keys(queryset.model)
        queryset = queryset.order_by(
            *[f"{'-' if desc else ''}{field.attname}" for field, desc in self.keys]
        )
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded:
            values = self.decode_cursor(encoded)
            first, descending = self.keys[0]
            # The bound on the first field alone is implied by the tuple condition;
            # it is spelled out so that PostgreSQL scans the index from the cursor on.
            bound = {f"{first.attname}__{'lte' if descending else 'gte'}": values[0]}
            queryset = queryset.filter(**bound).filter(self._after(values))
        rows = list(queryset[: self.page_size + 1])
        self.has_next = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        return self.page

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        return replace_query_param(
            self.request.build_absolute_uri(),
            self.cursor_query_param,
            self.encode_cursor(self.page[-1]),
        )

    def get_paginated_response(self, data):
        headers = {}
        next_url = self.get_next_link()
        if next_url:
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Response(data, headers=headers)

    def get_paginated_response_schema(self, schema):
        if not isinstance(schema, dict):
            # drf-spectacular asks with a placeholder to place a list example.
            return schema
        return {
            **schema,
            "description": "One page, as a plain JSON array; the next page's URL is "
            'in the `Link` header (`rel="next"`), absent on the last page.',
        }

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
                    'Opaque cursor taken from the `Link: <…>; rel="next"` header.'
                ),
                "schema": {"type": "string"},
            },
        ]
