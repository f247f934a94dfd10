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
