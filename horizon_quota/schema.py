"""OpenAPI helpers: the error bodies and the error responses every app documents.

Every error answer is ``{"error": <kind>, "message": <text>}`` (DESIGN §5), and some
carry more members. Each member an answer can carry is declared in a component, so
that a client generated from the schema sees it typed:

* ``Error``: the base, with ``fields`` (validation errors) and ``retry_after`` (the
  ``Retry-After`` header again, on a lock timeout and an unavailable database);
* ``RateLimitedError``: the 429 ``rate_limited`` of the per-key write limit, whose
  ``retry_after`` is always there.

Components of one app's answers (e.g. the allocate refusal) live in that app's
serializers and build on ``ErrorBodySerializer``. The examples here are the real
answers of ``horizon_quota.api`` and DRF, word for word (``tests/test_schema.py``
produces each through the API and compares).
"""

from collections.abc import Sequence
from decimal import Decimal

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.serializers import PolymorphicProxySerializerExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    PolymorphicProxySerializer,
)
from rest_framework import serializers

from horizon_quota.api import (
    LENGTH_REQUIRED_MESSAGE,
    LOCK_CONFLICT_MESSAGE,
    RETRY_AFTER_SECONDS,
    UNAVAILABLE_MESSAGE,
    payload_too_large_message,
)


class AmountFieldExtension(OpenApiSerializerFieldExtension):
    """Document ``horizon_quota.fields.AmountField`` as the exact decimal it is.

    Without it drf-spectacular cannot resolve the custom field, falls back to
    ``string`` and warns, so ``spectacular --fail-on-warn`` fails. Output is always a
    JSON number; input also takes an ASCII numeric string (DESIGN §5).
    """

    target_class = "horizon_quota.fields.AmountField"

    def map_serializer_field(self, auto_schema, direction):
        field = self.target
        number = {"type": "number"}
        minimum = field.minimum if field.minimum is not None else Decimal(0)
        number["minimum"] = float(minimum)
        if field.positive:
            number["exclusiveMinimum"] = True
        if field.maximum is not None:
            number["maximum"] = float(field.maximum)
        description = (
            f"Exact decimal: at most {field.integer_digits} digits before the point "
            f"and {field.places} after it; more places are refused, never rounded."
        )
        if direction == "response":
            return {**number, "description": description}
        return {
            "oneOf": [
                number,
                {
                    "type": "string",
                    "pattern": r"^\s*\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*$",
                },
            ],
            "description": f"{description} A JSON number or an ASCII numeric string.",
        }


class OneOfSerializer(PolymorphicProxySerializer):
    """Documentation only: a value that is exactly one of several components
    (``oneOf``, told apart by their required members, so no discriminator), as a
    described component of its own."""

    def __init__(self, component_name: str, serializers, *, description: str, **kw):
        self.union_description = description
        super().__init__(
            component_name=component_name,
            serializers=serializers,
            resource_type_field_name=None,
            **kw,
        )


class OneOfSerializerExtension(PolymorphicProxySerializerExtension):
    """The ``oneOf`` of ``PolymorphicProxySerializer``, with a description."""

    target_class = "horizon_quota.schema.OneOfSerializer"
    priority = 1

    def map_serializer(self, auto_schema, direction):
        schema = super().map_serializer(auto_schema, direction)
        return {"description": self.target.union_description, **schema}


# Every error kind of DESIGN §5 (each has one HTTP status).
ERROR_KINDS = [
    "invalid_input",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "already_exists",
    "already_released",
    "conflict",
    "length_required",
    "payload_too_large",
    "unsupported_media_type",
    "resource_exhausted",
    "rate_limited",
    "internal_error",
    "unavailable",
]


def retry_after_field(**kwargs) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1,
        help_text="Seconds to wait before retrying: the same value as the "
        "`Retry-After` header.",
        **kwargs,
    )


class ErrorBodySerializer(serializers.Serializer):
    """The members every error body has: the kind of error (each kind has one HTTP
    status) and a message."""

    # No help_text: the member stays a plain reference to the ErrorEnum component.
    error = serializers.ChoiceField(choices=ERROR_KINDS)
    message = serializers.CharField(help_text="What went wrong, for people.")


class ErrorSerializer(ErrorBodySerializer):
    """An error answer: its kind, a message and, for some kinds, more members.

    A validation error (`invalid_input`) lists its messages per field in `fields`.
    An answer sent with a `Retry-After` header (a `conflict` on a row lock timeout,
    `unavailable`) repeats it in `retry_after`."""

    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Per-field messages, for validation errors.",
    )
    retry_after = retry_after_field(required=False)


class RateLimitedErrorSerializer(ErrorBodySerializer):
    """429 `rate_limited`: the API key made more writes than `API_WRITE_RATE`
    allows in the current window. Retry after `retry_after` seconds."""

    retry_after = retry_after_field()


def error_example(name: str, kind: str, message: str, **members) -> OpenApiExample:
    """An example error answer; ``members`` are the members it adds."""
    return body_example(name, {"error": kind, "message": message, **members})


def body_example(name: str, body: dict) -> OpenApiExample:
    """An example answer, given whole."""
    return OpenApiExample(name, value=body, response_only=True)


def error_response(
    description: str,
    *examples: OpenApiExample,
    schema=ErrorSerializer,
) -> OpenApiResponse:
    """One documented error status: its schema, what it means and real examples."""
    return OpenApiResponse(
        response=schema, description=description, examples=list(examples)
    )


def invalid_input_example(
    name: str, field: str, *messages: str, **members
) -> OpenApiExample:
    """A 400 ``invalid_input`` for one field, as ``horizon_quota.api`` words it."""
    return error_example(
        name,
        "invalid_input",
        f"{field}: {' '.join(messages)}",
        fields={field: list(messages)},
        **members,
    )


# --- The answers every operation may give (horizon_quota.api, DRF) -------------------

UNAUTHORIZED = error_example(
    "No API key", "unauthorized", "Authentication credentials were not provided."
)
INVALID_KEY = error_example("Unknown API key", "unauthorized", "Invalid API key.")
FORBIDDEN = error_example(
    "The key's role does not allow this",
    "forbidden",
    "Your API key's role does not allow this.",
)
PAYLOAD_TOO_LARGE = error_example(
    "Body too large", "payload_too_large", payload_too_large_message()
)
LENGTH_REQUIRED = error_example(
    "Body without Content-Length", "length_required", LENGTH_REQUIRED_MESSAGE
)
UNSUPPORTED_MEDIA_TYPE = error_example(
    "Not JSON",
    "unsupported_media_type",
    'Unsupported media type "text/plain" in request.',
)
MALFORMED_JSON = error_example(
    "Malformed JSON",
    "invalid_input",
    "Malformed JSON: Expecting value: line 1 column 1 (char 0)",
)
NOT_AN_OBJECT = error_example(
    "The body is not a JSON object",
    "invalid_input",
    "Invalid data. Expected a dictionary, but got list.",
    fields={"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
)
INVALID_CURSOR = invalid_input_example("Invalid cursor", "cursor", "Invalid cursor.")
INVALID_LIMIT = invalid_input_example(
    "Invalid limit", "limit", "Must be a positive integer."
)
ROW_LOCK_TIMEOUT = error_example(
    "Busy: a row lock timed out",
    "conflict",
    LOCK_CONFLICT_MESSAGE,
    retry_after=RETRY_AFTER_SECONDS,
)
RATE_LIMITED = error_example(
    "Too many writes with this key",
    "rate_limited",
    "Request was throttled. Expected available in 42 seconds.",
    retry_after=42,
)
UNAVAILABLE = error_example(
    "Database unavailable",
    "unavailable",
    UNAVAILABLE_MESSAGE,
    retry_after=RETRY_AFTER_SECONDS,
)

DESCRIPTIONS = {
    400: "invalid_input: the request is malformed or a value is invalid; `fields`, "
    "when present, names each invalid input.",
    401: "unauthorized: no API key, or one that is unknown, revoked or expired.",
    403: "forbidden: the API key's role or scope does not allow this.",
    404: "not_found: no such object, or it lies outside the API key's scope.",
    409: "A conflict with the current state; `conflict` with `retry_after` when a row "
    "lock timed out (retry then).",
    411: "length_required: a body was sent without `Content-Length` (chunked "
    "transfer encoding); it is not read, nothing changes.",
    413: "payload_too_large: the body exceeds the size limit (API_MAX_BODY_BYTES).",
    415: "unsupported_media_type: the body is not `application/json`.",
    429: "rate_limited: the API key's writes exceed API_WRITE_RATE; retry after "
    "`retry_after` seconds.",
    503: "unavailable: the database is unreachable; retry after `retry_after` seconds.",
}


def _examples(value) -> list[OpenApiExample]:
    if value is None:
        return []
    if isinstance(value, OpenApiExample):
        return [value]
    return list(value)


def error_responses(
    *,
    invalid: OpenApiExample | Sequence[OpenApiExample] | None = None,
    not_found: OpenApiExample | Sequence[OpenApiExample] | None = None,
    write: bool = False,
    forbidden: Sequence[OpenApiExample] = (),
    body: bool = False,
    locks: bool = False,
    conflicts: Sequence[OpenApiExample] = (),
    conflict: OpenApiResponse | None = None,
    too_many: OpenApiResponse | None = None,
) -> dict[int, OpenApiResponse]:
    """The documented error answers of one ``/api/v1`` operation.

    Always 401 and 503 (every call authenticates against the database). ``invalid``
    (400) and ``not_found`` (404) give that status with these examples. ``write``:
    a write, so 403 (role; ``forbidden`` adds the operation's own 403 answers) and
    429 ``rate_limited`` (the per-key write limit counts every POST, PUT, PATCH and
    DELETE). ``body``: the operation reads a JSON body, so 400 (malformed JSON), 411
    (no ``Content-Length``), 413 and 415. ``locks``: it takes row locks, so 409
    ``conflict`` with ``retry_after`` on a lock timeout, after ``conflicts``, the
    operation's own 409 answers.
    ``conflict`` and ``too_many`` replace the whole 409 and 429 responses (for an
    operation whose answers carry more members).
    """
    responses: dict[int, OpenApiResponse] = {}
    invalid_examples = _examples(invalid)
    if body:
        invalid_examples.append(MALFORMED_JSON)
    if invalid_examples:
        responses[400] = error_response(DESCRIPTIONS[400], *invalid_examples)
    responses[401] = error_response(DESCRIPTIONS[401], UNAUTHORIZED, INVALID_KEY)
    if write:
        responses[403] = error_response(DESCRIPTIONS[403], FORBIDDEN, *forbidden)
    if not_found is not None:
        responses[404] = error_response(DESCRIPTIONS[404], *_examples(not_found))
    if conflict is not None:
        responses[409] = conflict
    elif conflicts or locks:
        examples = [*conflicts, *([ROW_LOCK_TIMEOUT] if locks else [])]
        responses[409] = error_response(DESCRIPTIONS[409], *examples)
    if body:
        responses[411] = error_response(DESCRIPTIONS[411], LENGTH_REQUIRED)
        responses[413] = error_response(DESCRIPTIONS[413], PAYLOAD_TOO_LARGE)
        responses[415] = error_response(DESCRIPTIONS[415], UNSUPPORTED_MEDIA_TYPE)
    if too_many is not None:
        responses[429] = too_many
    elif write:
        responses[429] = rate_limited_response()
    responses[503] = error_response(DESCRIPTIONS[503], UNAVAILABLE)
    return responses


def rate_limited_response() -> OpenApiResponse:
    return error_response(
        DESCRIPTIONS[429], RATE_LIMITED, schema=RateLimitedErrorSerializer
    )
