"""Serializer fields with the input rules of DESIGN §5."""

import re
from decimal import Decimal, InvalidOperation

from rest_framework import serializers

# [0-9], not \d: in a str pattern \d also matches non-ASCII digits ("١٢", "１２"),
# which Decimal() would quietly accept.
_ASCII_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


def normalize_amount(value) -> Decimal:
    """The amount without trailing zeros, never in exponent form (100, not 1E+2)."""
    value = Decimal(value)
    normal = value.normalize()
    if normal == normal.to_integral():
        return normal.quantize(Decimal(1))
    return normal


class AmountField(serializers.Field):
    """An exact, non-negative decimal: a JSON number or an ASCII numeric string.

    More decimal places than allowed, NaN, infinities, exponents in strings and
    negatives are refused, never rounded. Output is a JSON number without trailing
    zeros.
    """

    default_error_messages = {
        "invalid": "Must be a number or a numeric string.",
        "places": "At most {places} decimal places are allowed.",
        "digits": "At most {digits} digits before the decimal point are allowed.",
        "negative": "Must not be negative.",
        "positive": "Must be greater than 0.",
        "min": "Must be at least {minimum}.",
        "max": "Must be at most {maximum}.",
    }

    def __init__(
        self,
        *,
        integer_digits: int = 16,
        places: int = 4,
        positive: bool = False,
        minimum: Decimal | None = None,
        maximum: Decimal | None = None,
        **kwargs,
    ):
        self.integer_digits = integer_digits
        self.places = places
        self.positive = positive
        self.minimum = minimum
        self.maximum = maximum
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, str):
            text = data.strip()
            if not _ASCII_DECIMAL.fullmatch(text):
                self.fail("invalid")
            value = Decimal(text)
        elif isinstance(data, int | Decimal):
            value = Decimal(data)
        elif isinstance(data, float):
            value = Decimal(repr(data))
        else:
            self.fail("invalid")
        if not value.is_finite():
            self.fail("invalid")
        if value < 0:
            self.fail("negative")
        if self.positive and value == 0:
            self.fail("positive")
        try:
            exact = value.quantize(Decimal(1).scaleb(-self.places))
        except InvalidOperation:
            self.fail("digits", digits=self.integer_digits)
        if exact != value:
            self.fail("places", places=self.places)
        if value >= Decimal(10) ** self.integer_digits:
            self.fail("digits", digits=self.integer_digits)
        if self.minimum is not None and value < self.minimum:
            self.fail("min", minimum=self.minimum)
        if self.maximum is not None and value > self.maximum:
            self.fail("max", maximum=self.maximum)
        return exact

    def to_representation(self, value):
        if value is None:
            return None
        return normalize_amount(value)


class LowerChoiceField(serializers.ChoiceField):
    """A choice matched case-insensitively; the stored value is lower-case."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = data.strip().lower()
        return super().to_internal_value(data)
