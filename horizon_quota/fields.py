"""Serializer fields with the input rules of DESIGN §5 (see horizon_quota.amounts)."""

from decimal import Decimal

from rest_framework import serializers

from horizon_quota.amounts import MESSAGES, AmountError, normalize_amount, parse_amount

__all__ = ["AmountField", "LowerChoiceField", "normalize_amount"]


class AmountField(serializers.Field):
    """An exact, non-negative decimal: a JSON number or an ASCII numeric string.

    More decimal places than allowed, NaN, infinities, exponents in strings and
    negatives are refused, never rounded (``horizon_quota.amounts.parse_amount``).
    Output is a JSON number without trailing zeros.
    """

    default_error_messages = MESSAGES

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
        try:
            return parse_amount(
                data,
                integer_digits=self.integer_digits,
                places=self.places,
                positive=self.positive,
                minimum=self.minimum,
                maximum=self.maximum,
            )
        except AmountError as exc:
            self.fail(exc.code, **exc.params)

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
