"""Strict parsing of settings taken from the environment.

Every reader names the variable in its error, so a bad value stops start-up with a
message an operator can act on instead of a stack trace deep inside Django.
"""

import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# Plain ASCII decimal digits: int() alone would also take "1_000" and non-ASCII
# digits such as "١٢", which no operator means to write in a setting.
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str:
    value = _raw(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"{name}: this environment variable is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}: expected a boolean (one of 1/0, true/false, yes/no, on/off), "
        f"got {value!r}"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    if not _INTEGER.fullmatch(value):
        raise ImproperlyConfigured(f"{name}: expected an integer, got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None or value == "":
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(
            f"{name}: expected a comma-separated list without empty items, "
            f"got {value!r}"
        )
    return items


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = _raw(name)
    if value is None or value == "":
        return default
    if value.upper() not in choices:
        raise ImproperlyConfigured(
            f"{name}: expected one of {', '.join(sorted(choices))}, got {value!r}"
        )
    return value.upper()


_RATE = re.compile(
    r"([0-9]+)\s*/\s*([0-9]*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?",
    re.IGNORECASE,
)
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(name: str, value: str) -> tuple[int, int] | None:
    """``"6000/min"`` → (6000, 60); ``"100/10s"`` → (100, 10); "0"/"off" → None."""
    text = value.strip()
    if text.lower() in {"0", "off"}:
        return None
    match = _RATE.fullmatch(text)
    if not match:
        raise ImproperlyConfigured(
            f"{name}: expected a rate such as 6000/min, 100/10s or 50000/hour "
            f"(or 0/off to disable), got {value!r}"
        )
    count = int(match.group(1))
    multiple = int(match.group(2)) if match.group(2) else 1
    period = multiple * _PERIOD_SECONDS[match.group(3)[0].lower()]
    if count < 1 or period < 1:
        raise ImproperlyConfigured(
            f"{name}: the count and the period must be at least 1, got {value!r}"
        )
    return count, period


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    value = _raw(name)
    if value is None or value == "":
        value = default
    return parse_rate(name, value)


def env_percents(name: str, default: str) -> list[int | float]:
    """``"80,100"`` → [80, 100]: percents above 0 and at most 1000, sorted, each
    once; empty (``""`` or ``none``) for no thresholds."""
    value = _raw(name)
    if value is None:
        value = default
    if value.strip().lower() in {"", "none"}:
        return []
    percents = set()
    for item in value.split(","):
        text = item.strip()
        try:
            number = float(text)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: expected comma-separated percents such as 80,100, got "
                f"{value!r}"
            ) from None
        if not 0 < number <= 1000:
            raise ImproperlyConfigured(
                f"{name}: each percent must be above 0 and at most 1000, got {text}"
            )
        percents.add(int(number) if number == int(number) else number)
    return sorted(percents)
