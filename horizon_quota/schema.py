"""OpenAPI helpers: the error body and its documented responses."""

from decimal import Decimal

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers


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


class ErrorSerializer(serializers.Serializer):
    error = serializers.ChoiceField(
        choices=[
            "invalid_input",
            "unauthorized",
            "forbidden",
            "not_found",
            "method_not_allowed",
            "already_exists",
            "already_released",
            "conflict",
            "payload_too_large",
            "unsupported_media_type",
            "resource_exhausted",
            "rate_limited",
            "internal_error",
            "unavailable",
        ]
    )
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Per-field messages, for validation errors.",
    )


_ERRORS = {
    400: ("invalid_input", "limit_value: At most 4 decimal places are allowed."),
    401: ("unauthorized", "Authentication credentials were not provided."),
    403: ("forbidden", "Your API key's role does not allow this."),
    404: ("not_found", "Quota 5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b not found."),
    409: ("conflict", "Quota is at version 4, not 3; re-read it and retry."),
    415: ("unsupported_media_type", 'Unsupported media type "text/plain" in request.'),
    429: (
        "resource_exhausted",
        "Quota exceeded at team acme-research: requested 8, available 2.",
    ),
    503: ("unavailable", "The database is unreachable."),
}


def error_responses(*statuses: int, **overrides: str) -> dict[int, OpenApiResponse]:
    """Documented error responses for ``extend_schema(responses=…)``."""
    responses = {}
    for status in statuses:
        kind, message = _ERRORS[status]
        kind = overrides.get(f"kind_{status}", kind)
        message = overrides.get(f"message_{status}", message)
        responses[status] = OpenApiResponse(
            response=ErrorSerializer,
            description=kind,
            examples=[
                OpenApiExample(
                    kind,
                    value={"error": kind, "message": message},
                    response_only=True,
                    status_codes=[str(status)],
                )
            ],
        )
    return responses
