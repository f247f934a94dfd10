"""Settings come from the environment and a bad value stops start-up (DESIGN §5)."""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from horizon_quota.env import env_bool, env_choice, env_int, env_list, env_str

NAME = "HQ_TEST_SETTING"


@pytest.fixture
def setenv(monkeypatch):
    """Set ``HQ_TEST_SETTING`` for one test."""

    def set_value(value: str) -> None:
        monkeypatch.setenv(NAME, value)

    monkeypatch.delenv(NAME, raising=False)
    return set_value


# --- env_bool ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON", " true "]
)
def test_env_bool_reads_true(setenv, value):
    setenv(value)

    assert env_bool(NAME, False) is True


@pytest.mark.parametrize(
    "value", ["0", "false", "False", "FALSE", "no", "NO", "off", "Off", " 0 "]
)
def test_env_bool_reads_false(setenv, value):
    setenv(value)

    assert env_bool(NAME, True) is False


@pytest.mark.parametrize("value", [None, "", "   "])
def test_env_bool_falls_back_to_the_default_when_unset_or_empty(setenv, value):
    if value is not None:
        setenv(value)

    assert env_bool(NAME, True) is True
    assert env_bool(NAME, False) is False


@pytest.mark.parametrize("value", ["maybe", "2", "-1", "y", "n", "t", "truee", "ja"])
def test_env_bool_refuses_anything_else_naming_the_variable(setenv, value):
    setenv(value)

    with pytest.raises(ImproperlyConfigured) as error:
        env_bool(NAME, False)

    assert NAME in str(error.value)
    assert repr(value) in str(error.value)


# --- env_int -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("60", 60), (" 42 ", 42)])
def test_env_int_reads_an_integer(setenv, value, expected):
    setenv(value)

    assert env_int(NAME, 7) == expected


@pytest.mark.parametrize("value", [None, "", "  "])
def test_env_int_falls_back_to_the_default_when_unset_or_empty(setenv, value):
    if value is not None:
        setenv(value)

    assert env_int(NAME, 7) == 7


@pytest.mark.parametrize(
    "value", ["abc", "1.5", "1e3", "0x10", "ten", "5s", "1 000", "1_000", "٣", "١٢"]
)
def test_env_int_refuses_anything_but_ascii_digits_naming_the_variable(setenv, value):
    setenv(value)

    with pytest.raises(ImproperlyConfigured) as error:
        env_int(NAME, 7)

    assert NAME in str(error.value)
    assert "integer" in str(error.value)


def test_env_int_refuses_a_value_below_the_minimum(setenv):
    setenv("-1")

    with pytest.raises(ImproperlyConfigured) as error:
        env_int(NAME, 7, minimum=0)

    assert NAME in str(error.value)
    assert "at least 0" in str(error.value)


def test_env_int_accepts_the_minimum_itself(setenv):
    setenv("1")

    assert env_int(NAME, 7, minimum=1) == 1


def test_env_int_accepts_a_negative_number_without_a_minimum(setenv):
    setenv("-5")

    assert env_int(NAME, 7) == -5


# --- env_list ----------------------------------------------------------------------


def test_env_list_splits_on_commas_and_strips_items(setenv):
    setenv(" example.com , api.example.com,localhost ")

    assert env_list(NAME, []) == ["example.com", "api.example.com", "localhost"]


def test_env_list_reads_a_single_item(setenv):
    setenv("example.com")

    assert env_list(NAME, []) == ["example.com"]


@pytest.mark.parametrize("value", [None, "", "  "])
def test_env_list_falls_back_to_a_copy_of_the_default(setenv, value):
    if value is not None:
        setenv(value)
    default = ["localhost"]

    result = env_list(NAME, default)

    assert result == ["localhost"]
    assert result is not default


@pytest.mark.parametrize("value", ["a,,b", "a,", ",a", "a, ,b", ","])
def test_env_list_refuses_empty_items_naming_the_variable(setenv, value):
    setenv(value)

    with pytest.raises(ImproperlyConfigured) as error:
        env_list(NAME, [])

    assert NAME in str(error.value)


# --- env_str and env_choice --------------------------------------------------------


def test_env_str_reads_and_strips_a_value(setenv):
    setenv("  value  ")

    assert env_str(NAME) == "value"


def test_env_str_falls_back_to_the_default(setenv):
    assert env_str(NAME) is None
    assert env_str(NAME, "fallback") == "fallback"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_env_str_refuses_a_missing_required_value_naming_it(setenv, value):
    if value is not None:
        setenv(value)

    with pytest.raises(ImproperlyConfigured) as error:
        env_str(NAME, required=True)

    assert NAME in str(error.value)


@pytest.mark.parametrize("value", ["debug", "Debug", "DEBUG", " warning "])
def test_env_choice_ignores_case_and_returns_the_canonical_value(setenv, value):
    setenv(value)

    assert env_choice(NAME, "INFO", {"DEBUG", "INFO", "WARNING"}) == (
        value.strip().upper()
    )


def test_env_choice_falls_back_to_the_default(setenv):
    assert env_choice(NAME, "INFO", {"DEBUG", "INFO"}) == "INFO"


def test_env_choice_refuses_an_unknown_value_naming_the_variable(setenv):
    setenv("verbose")

    with pytest.raises(ImproperlyConfigured) as error:
        env_choice(NAME, "INFO", {"DEBUG", "INFO"})

    assert NAME in str(error.value)
    assert "DEBUG, INFO" in str(error.value)


# --- Start-up with a bad environment -----------------------------------------------


def _start_django(**overrides: str) -> subprocess.CompletedProcess:
    """Run ``django.setup()`` in a fresh interpreter with these variables changed."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DEBUG", "CONN_MAX_AGE", "ALLOWED_HOSTS", "LOG_LEVEL"}
    }
    environment["DJANGO_SETTINGS_MODULE"] = "horizon_quota.settings"
    environment["DATABASE_URL"] = os.environ["DATABASE_URL"]
    environment.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_django_starts_with_a_good_environment():
    result = _start_django(DEBUG="false", CONN_MAX_AGE="0")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("CONN_MAX_AGE", "abc"),
        ("CONN_MAX_AGE", "-1"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "sqlite:///db.sqlite3"),
        ("ALLOWED_HOSTS", "example.com,,"),
        ("LOG_LEVEL", "chatty"),
        ("API_PAGE_SIZE", "0"),
    ],
)
def test_django_refuses_to_start_with_a_bad_value_naming_the_variable(variable, value):
    result = _start_django(**{variable: value})

    assert result.returncode != 0
    assert variable in result.stderr
    assert "ImproperlyConfigured" in result.stderr
