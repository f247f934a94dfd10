"""Exact amounts (DESIGN §3): at most 16 integer digits and 4 decimal places.

Plain Python, no framework: the API's fields (``horizon_quota.fields``), the
importer and the rules all read and print amounts through these functions, so an
amount is refused, or written, the same way everywhere.
"""

import re
from decimal import Decimal, InvalidOperation

# [0-9], not \d: in a str pattern \d also matches non-ASCII digits ("١٢", "１２"),
# which Decimal() would quietly accept.
ASCII_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")

MESSAGES = {
    "invalid": "Must be a number or a numeric string.",
    "places": "At most {places} decimal places are allowed.",
    "digits": "At most {digits} digits before the decimal point are allowed.",
    "negative": "Must not be negative.",
    "positive": "Must be greater than 0.",
    "min": "Must be at least {minimum}.",
    "max": "Must be at most {maximum}.",
}


class AmountError(ValueError):
    """An amount refused; ``code`` is a key of ``MESSAGES``."""

    def __init__(self, code: str, **params):
        self.code = code
        self.params = params
        super().__init__(MESSAGES[code].format(**params))


def normalize_amount(value) -> Decimal:
    """The amount without trailing zeros, never in exponent form (100, not 1E+2)."""
    value = Decimal(value)
    normal = value.normalize()
    if normal == normal.to_integral():
        return normal.quantize(Decimal(1))
    return normal


def amount_text(value) -> str:
    """An amount as people read it: exact, no trailing zeros; ``none`` for None."""
    if value is None:
        return "none"
    if not isinstance(value, Decimal | int):
        return str(value)
    return f"{normalize_amount(value):f}"


# What people see where there is no amount (an unset soft limit, no job): the one
# empty marker of the admin.
EMPTY = "\u2014"


def amount_display(value, unit: str = "") -> str:
    """An amount for people to read in the admin and its exports: exact, without
    trailing zeros, with thousands separators, followed by ``unit`` when given
    (``10,000 GPU-hours``, ``1,234.5``); ``EMPTY`` for None."""
    if value is None:
        return EMPTY
    if not isinstance(value, Decimal | int):
        return str(value)
    text = f"{normalize_amount(value):,f}"
    return f"{text} {unit}" if unit else text


def parse_amount(
    data,
    *,
    integer_digits: int = 16,
    places: int = 4,
    positive: bool = False,
    minimum: Decimal | None = None,
    maximum: Decimal | None = None,
) -> Decimal:
    """``data`` (a JSON number, a ``Decimal`` or an ASCII numeric string) as an
    exact ``Decimal`` with ``places`` decimal places; anything else raises
    ``AmountError``. More places, NaN, infinities, exponents in strings and
    negatives are refused, never rounded."""
    if isinstance(data, bool):
        raise AmountError("invalid")
    if isinstance(data, str):
        text = data.strip()
        if not ASCII_DECIMAL.fullmatch(text):
            raise AmountError("invalid")
        value = Decimal(text)
    elif isinstance(data, int | Decimal):
        value = Decimal(data)
    elif isinstance(data, float):
        value = Decimal(repr(data))
    else:
        raise AmountError("invalid")
    if not value.is_finite():
        raise AmountError("invalid")
    if value < 0:
        raise AmountError("negative")
    if positive and value == 0:
        raise AmountError("positive")
    try:
        exact = value.quantize(Decimal(1).scaleb(-places))
    except InvalidOperation:
        raise AmountError("digits", digits=integer_digits) from None
    if exact != value:
        raise AmountError("places", places=places)
    if value >= Decimal(10) ** integer_digits:
        raise AmountError("digits", digits=integer_digits)
    if minimum is not None and value < minimum:
        raise AmountError("min", minimum=minimum)
    if maximum is not None and value > maximum:
        raise AmountError("max", maximum=maximum)
    return exact
