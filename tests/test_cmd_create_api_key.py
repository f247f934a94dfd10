"""``manage.py create_api_key`` (DESIGN §6): a key shown once, stored hashed."""

import hashlib
import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from quotas.models import ApiKey
from tests.helpers import QUOTAS, client_with_key, org_body

KEY_FORMAT = re.compile(r"hq_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def _create_key(*args: str) -> tuple[str, str]:
    """Run the command; return its whole output and the key on its last line."""
    stdout = io.StringIO()
    call_command("create_api_key", *args, stdout=stdout)
    output = stdout.getvalue()
    return output, output.rstrip("\n").splitlines()[-1]


def test_it_prints_the_key_alone_on_the_last_line(db):
    output, raw_key = _create_key("sched", "--role", "scheduler")

    assert KEY_FORMAT.fullmatch(raw_key)
    assert output.endswith(raw_key + "\n")
    assert raw_key == raw_key.strip()
    # The key appears once, on its own line, and nowhere in the summary above it.
    assert output.count(raw_key) == 1
    summary = output.splitlines()[:-1]
    assert summary
    assert "sched" in summary[0]
    assert "scheduler" in summary[0]


def test_the_printed_key_authenticates_against_the_api(db):
    _, raw_key = _create_key("sched", "--role", "scheduler")

    response = client_with_key(raw_key).get(QUOTAS)

    assert response.status_code == 200
    assert response.json() == []


def test_only_the_sha256_of_the_key_is_stored(db):
    _, raw_key = _create_key("sched", "--role", "scheduler")
    key = ApiKey.objects.get()
    secret = raw_key.split("_", 2)[2]

    assert key.key_hash == hashlib.sha256(raw_key.encode()).hexdigest()
    assert key.name == "sched"
    assert key.prefix == raw_key.split("_", 2)[1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_keys::text FROM api_keys")
        (row,) = cursor.fetchone()
    assert raw_key not in row
    assert secret not in row


def test_each_run_creates_a_different_key(db):
    _, first = _create_key("one", "--role", "viewer")
    _, second = _create_key("two", "--role", "viewer")

    assert first != second
    assert ApiKey.objects.count() == 2
    assert len(set(ApiKey.objects.values_list("prefix", flat=True))) == 2


@pytest.mark.parametrize("role", ["admin", "scheduler", "viewer"])
def test_it_stores_the_role(db, role):
    _create_key(f"{role} key", "--role", role)

    assert ApiKey.objects.get().role == role


def test_the_role_is_matched_without_regard_to_case(db):
    _create_key("sched", "--role", "SCHEDULER")

    assert ApiKey.objects.get().role == "scheduler"


def test_a_scheduler_key_can_read_but_not_write_quotas(tree):
    org, _, _ = tree
    _, raw_key = _create_key("sched", "--role", "scheduler")
    client = client_with_key(raw_key)

    assert client.get(f"{QUOTAS}/{org.id}").status_code == 200
    created = client.post(
        QUOTAS,
        data={
            "entity_type": "organization",
            "entity_id": "intruder",
            "resource_type": "concurrent_gpus",
            "limit_value": 1,
        },
        format="json",
    )
    deleted = client.delete(f"{QUOTAS}/{org.id}")
    assert created.status_code == 403
    assert created.json()["error"] == "forbidden"
    assert deleted.status_code == 403


def test_a_viewer_key_cannot_write_quotas(tree):
    org, _, _ = tree
    _, raw_key = _create_key("dashboard", "--role", "viewer")

    response = client_with_key(raw_key).patch(
        f"{QUOTAS}/{org.id}", data={"limit_value": 200}, format="json"
    )

    assert response.status_code == 403
    org.refresh_from_db()
    assert org.limit_value == 100


def test_an_admin_key_can_write_quotas(db):
    _, raw_key = _create_key("ops", "--role", "admin")

    response = client_with_key(raw_key).post(
        QUOTAS, data=org_body("acme", 10), format="json"
    )

    assert response.status_code == 201


def test_an_unknown_role_is_refused(db):
    with pytest.raises(CommandError) as error:
        _create_key("sched", "--role", "bogus")

    assert "role" in str(error.value)
    assert not ApiKey.objects.exists()


def test_the_role_is_required(db):
    with pytest.raises(CommandError) as error:
        _create_key("sched")

    assert "--role" in str(error.value)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("name", ["", "   "])
def test_a_blank_name_is_refused(db, name):
    with pytest.raises(CommandError):
        _create_key(name, "--role", "viewer")

    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("days", ["0", "-1"])
def test_an_expiry_below_one_day_is_refused(db, days):
    with pytest.raises(CommandError) as error:
        _create_key("sched", "--role", "scheduler", "--expires-in", days)

    assert "--expires-in" in str(error.value)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("days", ["abc", "1.5", ""])
def test_an_expiry_that_is_not_a_whole_number_of_days_is_refused(db, days):
    with pytest.raises(CommandError):
        _create_key("sched", "--role", "scheduler", "--expires-in", days)

    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("days", ["3000000", "999999999", "99999999999"])
def test_an_expiry_past_the_calendar_is_refused_cleanly(db, days):
    with pytest.raises(CommandError) as error:
        _create_key("sched", "--role", "scheduler", "--expires-in", days)

    assert "--expires-in" in str(error.value)
    assert not ApiKey.objects.exists()


def test_expires_in_sets_the_expiry(db):
    before = timezone.now()
    output, raw_key = _create_key("sched", "--role", "scheduler", "--expires-in", "7")
    after = timezone.now()
    key = ApiKey.objects.get()

    assert before + timedelta(days=7) <= key.expires_at <= after + timedelta(days=7)
    assert "expires" in output
    assert client_with_key(raw_key).get(QUOTAS).status_code == 200


def test_a_key_without_expires_in_never_expires(db):
    _create_key("sched", "--role", "scheduler")

    assert ApiKey.objects.get().expires_at is None


@pytest.mark.parametrize("how", ["entity", "quota id"])
def test_a_scope_confines_the_created_key_to_its_subtree(tree, how):
    org, team, user = tree
    scope = "team:research" if how == "entity" else str(team.id)

    output, _ = _create_key("research", "--role", "viewer", "--scope", scope)
    raw_key = output.strip().splitlines()[-1]

    key = ApiKey.objects.get()
    assert (key.scope_entity_type, key.scope_entity_id) == ("team", "research")
    assert "scope team:research" in output
    client = client_with_key(raw_key)
    listed = {row["id"] for row in client.get(QUOTAS).json()}
    assert listed == {str(team.id), str(user.id)}
    assert client.get(f"{QUOTAS}/{org.id}").status_code == 404


def test_a_scoped_key_row_is_accepted_at_authentication_and_confined(tree):
    org, team, user = tree
    output, _ = _create_key("research", "--role", "viewer")
    raw_key = output.strip().splitlines()[-1]
    ApiKey.objects.update(scope_entity_type="team", scope_entity_id="research")

    response = client_with_key(raw_key).get(QUOTAS)

    assert response.status_code == 200
    assert {row["id"] for row in response.json()} == {str(team.id), str(user.id)}


@pytest.mark.parametrize(
    "scope",
    [
        "b818b920-aa6f-455e-b708-42622b4f2ae9",
        "not-a-uuid",
        "42",
        "team:nobody",
        "galaxy:acme",
    ],
)
def test_a_scope_that_is_not_a_quota_is_refused(db, scope):
    with pytest.raises(CommandError) as error:
        _create_key("sched", "--role", "scheduler", "--scope", scope)

    assert scope in str(error.value)
    assert not ApiKey.objects.exists()


def test_the_help_explains_the_options(capsys):
    with pytest.raises(SystemExit):
        call_command("create_api_key", "--help")

    help_text = capsys.readouterr().out
    for option in ("--role", "--scope", "--expires-in"):
        assert option in help_text


def test_write_rate_sets_the_keys_own_limit(db):
    output, raw_key = _create_key(
        "sched", "--role", "scheduler", "--write-rate", "50/s"
    )
    assert "write rate 50/s" in output
    assert ApiKey.objects.get(name="sched").write_rate == "50/s"


def test_an_invalid_write_rate_is_an_error_and_creates_nothing(db):
    with pytest.raises(CommandError, match="write_rate"):
        _create_key("sched", "--role", "scheduler", "--write-rate", "lots")
    assert not ApiKey.objects.exists()
