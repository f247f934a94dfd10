"""``manage.py export_quotas`` and ``import_quotas``: the hierarchy as YAML or JSON,
and a file made the database's state, all or nothing (DESIGN §7)."""

import io
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from decimal import Decimal

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from allocations.services import allocation_create
from quotas import importing
from quotas.access.keys import api_key_create
from quotas.demo import seed_demo
from quotas.importing import (
    ImportFailed,
    hierarchy_import_apply,
    hierarchy_import_plan,
    hierarchy_render,
)
from quotas.models import EntityType, Quota, QuotaChange
from quotas.services import quota_create, quota_update

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------------- helpers


def _export(*args: str) -> str:
    out = io.StringIO()
    call_command("export_quotas", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _import(path, *args: str) -> str:
    out = io.StringIO()
    call_command("import_quotas", str(path), *args, stdout=out)
    return out.getvalue()


def _import_error(path, *args: str) -> str:
    with pytest.raises(CommandError) as error:
        _import(path, *args)
    assert error.value.returncode == 1
    return str(error.value)


def _write(tmp_path, text: str, name: str = "quotas.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _write_document(tmp_path, document: dict, fmt: str = "yaml"):
    return _write(
        tmp_path, hierarchy_render(document=document, fmt=fmt), f"quotas.{fmt}"
    )


def _table() -> list[dict]:
    """Every column of every quota: what "nothing was written" compares."""
    return list(Quota.objects.order_by("id").values())


def _state() -> dict[tuple, tuple]:
    """The hierarchy without ids and timestamps: what an import must reproduce."""
    quotas = list(Quota.objects.all())
    by_id = {quota.id: quota for quota in quotas}
    return {
        (q.resource_type_id, q.entity_type, q.entity_id): (
            (by_id[q.parent_id].entity_type, by_id[q.parent_id].entity_id)
            if q.parent_id
            else None,
            q.limit_value,
            q.soft_limit,
            q.burst_limit,
            q.overcommit_ratio,
        )
        for q in quotas
    }


def _quota(entity_id: str, resource_type: str = "gpu_hours") -> Quota:
    return Quota.objects.get(entity_id=entity_id, resource_type_id=resource_type)


def _demo_document() -> dict:
    return yaml.safe_load(_export())


def _org(document: dict, resource_type: str = "gpu_hours") -> dict:
    return document["quotas"][resource_type]["organizations"]["acme"]


def _team(document: dict, team: str, resource_type: str = "gpu_hours") -> dict:
    return _org(document, resource_type)["teams"][team]


def _user(document: dict, team: str, user: str) -> dict:
    return _team(document, team)["users"][user]


def _allocate(entity_id: str, amount: str) -> None:
    allocation_create(
        entity_type=EntityType.USER,
        entity_id=entity_id,
        resource_type="gpu_hours",
        job_id=uuid.uuid4(),
        requested_value=Decimal(amount),
    )


@pytest.fixture
def demo():
    seed_demo()


# -------------------------------------------------------------------------- export


def test_export_writes_the_demo_hierarchy_as_nested_yaml(demo):
    text = _export()
    document = yaml.safe_load(text)

    assert text.startswith("# The horizon-quota hierarchy")
    assert document["version"] == 1
    assert list(document["quotas"]) == [
        "concurrent_gpus",
        "cpu_hours",
        "gpu_hours",
        "memory_gb",
        "storage_gb",
    ]
    org = _org(document)
    assert list(org) == [
        "limit_value",
        "soft_limit",
        "burst_limit",
        "overcommit_ratio",
        "teams",
    ]
    assert (org["limit_value"], org["soft_limit"], org["burst_limit"]) == (
        "10000",
        "8000",
        "12000",
    )
    assert org["overcommit_ratio"] == "1"
    assert list(org["teams"]) == ["acme-platform", "acme-research"]
    assert _user(document, "acme-research", "alice") == {
        "limit_value": "3000",
        "soft_limit": "2400",
        "burst_limit": "3600",
        "overcommit_ratio": "1",
    }
    # Amounts are quoted strings, so YAML reads them back as text, not numbers.
    assert "limit_value: '10000'" in text


def test_export_as_json_holds_the_same_document(demo):
    assert json.loads(_export("--format", "json")) == _demo_document()


def test_export_leaves_out_unset_soft_and_burst_limits(tree):
    document = _demo_document()["quotas"]["concurrent_gpus"]
    user = document["organizations"]["acme"]["teams"]
    assert user["research"]["users"]["alice"] == {
        "limit_value": "30",
        "overcommit_ratio": "1",
    }


def test_export_of_an_empty_database_is_an_empty_document(db):
    assert yaml.safe_load(_export()) == {"version": 1, "quotas": {}}


def test_export_writes_to_a_file_and_says_so(demo, tmp_path):
    out = io.StringIO()
    call_command("export_quotas", "--output", str(tmp_path / "q.json"), stdout=out)

    assert json.loads((tmp_path / "q.json").read_text()) == _demo_document()
    assert out.getvalue() == (
        f"Exported 35 quotas in 5 resource types (json) to {tmp_path / 'q.json'}.\n"
    )


def test_export_to_standard_output_puts_the_summary_on_stderr(demo):
    out, err = io.StringIO(), io.StringIO()
    call_command("export_quotas", stdout=out, stderr=err)

    assert "Exported" not in out.getvalue()
    assert err.getvalue() == "Exported 35 quotas in 5 resource types (yaml).\n"


def test_export_to_an_unwritable_path_is_a_clean_error(demo, tmp_path):
    with pytest.raises(CommandError) as error:
        _export("--output", str(tmp_path / "missing" / "q.yaml"))

    assert str(error.value) == (
        f"cannot write {tmp_path / 'missing' / 'q.yaml'}: No such file or directory"
    )


def test_an_unknown_export_format_is_a_usage_error_with_exit_status_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "export_quotas", "--format", "xml"],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr


# ---------------------------------------------------------------------- round trip


@pytest.fixture
def rich(demo):
    """The demo plus what stresses the format: overcommit, exact decimals at the
    limits of the type, roots of every entity type, entity ids YAML would read as
    numbers, booleans or null, and ids with spaces, colons, newlines, 255
    characters and non-ASCII letters."""
    org = quota_create(
        entity_type=EntityType.ORGANIZATION,
        entity_id="yes",
        resource_type="cpu_hours",
        limit_value=Decimal("1234567890123456.7891"),
        soft_limit=Decimal("0.0001"),
        overcommit_ratio=Decimal("999.99"),
    )
    team_ids = ["123", "a: b", "#hash", " spaced ", "null", "x" * 255]
    for team_id in team_ids:
        team = quota_create(
            entity_type=EntityType.TEAM,
            entity_id=team_id,
            resource_type="cpu_hours",
            parent_id=org.id,
            limit_value=Decimal("1000.5"),
            burst_limit=Decimal("9999999999999999.9999"),
            overcommit_ratio=Decimal("1.25"),
        )
    for user_id in ["zoë", "multi\nline", "~", "- dash", "0.0001"]:
        quota_create(
            entity_type=EntityType.USER,
            entity_id=user_id,
            resource_type="cpu_hours",
            parent_id=team.id,
            limit_value=Decimal("0.0001"),
        )
    quota_create(
        entity_type=EntityType.TEAM,
        entity_id="solo-team",
        resource_type="memory_gb",
        limit_value=Decimal("7"),
        alert_thresholds=[Decimal("75.5"), Decimal("50")],
    )
    quota_create(
        entity_type=EntityType.USER,
        entity_id="solo-user",
        resource_type="memory_gb",
        limit_value=Decimal("3.5"),
    )


def _delete_every_quota() -> None:
    for quota in Quota.objects.order_by("-depth"):
        quota.delete()


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_import_export_gives_the_same_text(rich, tmp_path, fmt):
    before = _state()
    text = _export("--format", fmt)
    path = _write(tmp_path, text, f"quotas.{fmt}")
    _delete_every_quota()

    output = _import(path)

    assert output.endswith(f"Imported {path}: 49 created, 0 updated, 0 deleted.\n")
    assert _state() == before
    assert _export("--format", fmt) == text


def test_a_round_trip_keeps_long_ids_as_plain_keys(rich):
    text = _export()

    assert "\n          " + "x" * 255 + ":\n" in text


# Each once, in this order (some single characters are also in the words).
TRICKY_IDS = dict.fromkeys(
    [
        *map(chr, range(33, 127)),
        *(f"{char}x" for char in map(chr, range(32, 127))),
        "yes",
        "No",
        "y",
        "N",
        "null",
        "Null",
        "~",
        "true",
        "False",
        "on",
        "OFF",
        "1",
        "-1",
        "0x1F",
        "0o17",
        "1_000",
        "1:30",
        ".5",
        "1e3",
        "2001-01-01",
        ".inf",
        ".NaN",
        "<<",
        "- a",
        "? q",
        "a #b",
        "a: b",
        "'quoted'",
        '"double"',
        "back\\slash",
        "tab\tin",
        "new\nline",
        "cr\rx",
        "nel\x85x",
        "line\u2028sep",
        "del\x7fx",
        "c1\x9bx",
        "bom\ufeffx",
        "emoji😀",
        "zoë",
        " lead",
        "trail ",
        "x" * 255,
    ]
)


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_any_entity_id_reads_back_exactly(fmt):
    document = {
        "version": 1,
        "quotas": {
            "gpu_hours": {
                "users": {
                    entity_id: {"limit_value": "1", "overcommit_ratio": "1"}
                    for entity_id in TRICKY_IDS
                }
            }
        },
    }
    text = hierarchy_render(document=document, fmt=fmt)

    parsed, problems = importing.hierarchy_parse(text=text, fmt=fmt)

    assert problems == []
    assert parsed == document
    assert list(parsed["quotas"]["gpu_hours"]["users"]) == list(TRICKY_IDS)
    if fmt == "yaml":
        # Standard YAML too, not only our reader; and no "? key" forms.
        assert yaml.load(text, Loader=yaml.SafeLoader) == document
        assert "\n? " not in text and "  ? " not in text


def test_a_key_too_long_for_a_simple_key_still_reads_back_exactly():
    entity_id = "\x01" * 255  # 1,020 characters once escaped
    document = {
        "version": 1,
        "quotas": {"gpu_hours": {"users": {entity_id: {"limit_value": "1"}}}},
    }
    text = hierarchy_render(document=document, fmt="yaml")

    parsed, problems = importing.hierarchy_parse(text=text, fmt="yaml")

    assert problems == []
    assert parsed == document


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_importing_an_unchanged_export_changes_nothing(rich, tmp_path, fmt):
    path = _write(tmp_path, _export("--format", fmt), f"quotas.{fmt}")
    table = _table()

    output = _import(path)

    assert output == f"Nothing to change: the database already matches {path}.\n"
    assert _table() == table


# ------------------------------------------------------------------ import: writes


def test_import_creates_updates_and_deletes_to_match_the_file(demo, tmp_path):
    document = _demo_document()
    _org(document)["limit_value"] = "11000"
    _user(document, "acme-research", "alice")["soft_limit"] = "2000"
    del _user(document, "acme-research", "alice")["burst_limit"]
    del _team(document, "acme-research")["users"]["bob"]
    _team(document, "acme-research")["users"]["erin"] = {"limit_value": "2500.25"}
    _org(document)["teams"]["acme-ops"] = {
        "limit_value": "1000",
        "overcommit_ratio": "1.5",
        "users": {"frank": {"limit_value": "900", "burst_limit": "1000"}},
    }
    del document["quotas"]["storage_gb"]
    path = _write_document(tmp_path, document)

    output = _import(path)

    assert output.splitlines() == [
        "delete gpu_hours user bob (limit_value 3000)",
        "delete storage_gb user alice (limit_value 30000)",
        "delete storage_gb user bob (limit_value 30000)",
        "delete storage_gb user carol (limit_value 20000)",
        "delete storage_gb user dave (limit_value 20000)",
        "delete storage_gb team acme-platform (limit_value 40000)",
        "delete storage_gb team acme-research (limit_value 60000)",
        "delete storage_gb organization acme (limit_value 100000)",
        "update gpu_hours organization acme: limit_value 10000 → 11000",
        "update gpu_hours user alice: soft_limit 2400 → 2000, burst_limit 3600 → none",
        "create gpu_hours team acme-ops under organization acme: limit_value 1000, "
        "overcommit_ratio 1.5",
        "create gpu_hours user erin under team acme-research: limit_value 2500.25, "
        "overcommit_ratio 1",
        "create gpu_hours user frank under team acme-ops: limit_value 900, "
        "burst_limit 1000, overcommit_ratio 1",
        f"Imported {path}: 3 created, 2 updated, 8 deleted.",
    ]
    state = _state()
    assert state[("gpu_hours", "organization", "acme")][1] == Decimal("11000")
    assert state[("gpu_hours", "user", "alice")][1:] == (
        Decimal("3000"),
        Decimal("2000"),
        None,
        Decimal("1"),
    )
    assert ("gpu_hours", "user", "bob") not in state
    assert not Quota.objects.filter(resource_type="storage_gb").exists()
    assert state[("gpu_hours", "user", "erin")] == (
        ("team", "acme-research"),
        Decimal("2500.25"),
        None,
        None,
        Decimal("1"),
    )
    assert state[("gpu_hours", "team", "acme-ops")][0] == ("organization", "acme")
    assert state[("gpu_hours", "team", "acme-ops")][4] == Decimal("1.5")
    assert state[("gpu_hours", "user", "frank")][0] == ("team", "acme-ops")
    # Everything the file did not touch kept its row (and its version).
    assert _quota("carol").version == 1


def test_the_audit_trail_names_the_import_and_its_file(demo, tmp_path):
    document = _demo_document()
    _org(document)["limit_value"] = "11000"
    del _team(document, "acme-research")["users"]["bob"]

    _import(_write_document(tmp_path, document))

    assert sorted(
        QuotaChange.objects.exclude(actor_name="system").values_list(
            "resource_type", "entity_id", "action", "actor_type", "actor_name", "reason"
        )
    ) == [
        (
            "gpu_hours",
            "acme",
            "update",
            "system",
            "import_quotas",
            "imported from quotas.yaml",
        ),
        (
            "gpu_hours",
            "bob",
            "delete",
            "system",
            "import_quotas",
            "imported from quotas.yaml",
        ),
    ]


def test_importing_the_same_file_twice_changes_nothing_the_second_time(demo, tmp_path):
    document = _demo_document()
    _org(document)["limit_value"] = "12000"
    _team(document, "acme-platform").update(limit_value="5000", burst_limit="6000")
    path = _write_document(tmp_path, document)
    _import(path)
    table = _table()

    output = _import(path)

    assert output == f"Nothing to change: the database already matches {path}.\n"
    assert _table() == table
    assert _quota("acme").version == 2


def test_a_dry_run_prints_the_plan_with_old_and_new_values_and_writes_nothing(
    demo, tmp_path
):
    document = _demo_document()
    _team(document, "acme-research")["limit_value"] = "7000"
    _team(document, "acme-platform")["limit_value"] = "3000"
    _team(document, "acme-platform")["soft_limit"] = "2400"
    del _team(document, "acme-platform")["users"]["dave"]
    _team(document, "acme-platform")["users"]["erin"] = {"limit_value": "1000"}
    path = _write_document(tmp_path, document)
    table = _table()

    output = _import(path, "--dry-run")

    assert output.splitlines() == [
        "delete gpu_hours user dave (limit_value 2000)",
        "update gpu_hours team acme-platform: limit_value 4000 → 3000, "
        "soft_limit 3200 → 2400",
        "update gpu_hours team acme-research: limit_value 6000 → 7000",
        "create gpu_hours user erin under team acme-platform: limit_value 1000, "
        "overcommit_ratio 1",
        "Dry run: would create 1, update 2, delete 1; nothing written.",
    ]
    assert _table() == table


def test_a_file_missing_a_resource_type_deletes_its_quotas(demo, tmp_path):
    document = _demo_document()
    document["quotas"] = {"gpu_hours": document["quotas"]["gpu_hours"]}

    output = _import(_write_document(tmp_path, document))

    assert output.endswith("0 created, 0 updated, 28 deleted.\n")
    assert set(Quota.objects.values_list("resource_type", flat=True)) == {"gpu_hours"}


def test_a_file_read_from_standard_input(demo, monkeypatch):
    document = _demo_document()
    _org(document)["soft_limit"] = "9000"
    monkeypatch.setattr(
        sys, "stdin", io.StringIO(hierarchy_render(document=document, fmt="json"))
    )

    output = _import("-")

    assert output.endswith(
        "Imported standard input: 0 created, 1 updated, 0 deleted.\n"
    )
    assert _quota("acme").soft_limit == Decimal("9000")


def test_unquoted_numbers_are_read_exactly(db, tmp_path):
    path = _write(
        tmp_path,
        textwrap.dedent(
            """\
            version: 1
            quotas:
              gpu_hours:
                organizations:
                  acme:
                    limit_value: 1234567890123456.7891
                    soft_limit: 0.1
                    burst_limit: 9999999999999999.9999
                    overcommit_ratio: 1.01
            """
        ),
    )

    _import(path)

    acme = _quota("acme")
    assert acme.limit_value == Decimal("1234567890123456.7891")
    assert acme.soft_limit == Decimal("0.1")
    assert acme.burst_limit == Decimal("9999999999999999.9999")
    assert acme.overcommit_ratio == Decimal("1.01")


def test_json_numbers_are_read_exactly(db, tmp_path):
    path = _write(
        tmp_path,
        '{"version": 1, "quotas": {"gpu_hours": {"organizations": {"acme": '
        '{"limit_value": 1234567890123456.7891, "soft_limit": 0.1}}}}}',
        "quotas.json",
    )

    _import(path)

    assert _quota("acme").limit_value == Decimal("1234567890123456.7891")
    assert _quota("acme").soft_limit == Decimal("0.1")


def test_the_format_is_read_from_the_content_when_the_name_does_not_say(demo, tmp_path):
    path = _write(tmp_path, _export("--format", "json"), "quotas.txt")

    assert _import(path).startswith("Nothing to change")


# ----------------------------------------------------- import: order of operations


def test_raising_a_parent_and_its_child_together_raises_the_parent_first(
    demo, tmp_path
):
    # Raising alice first would overfill acme-research (5000 + 3000 > 6000).
    document = _demo_document()
    _org(document)["limit_value"] = "12000"
    _team(document, "acme-research").update(limit_value="8000", burst_limit="9000")
    _user(document, "acme-research", "alice")["limit_value"] = "5000"
    _user(document, "acme-research", "alice")["burst_limit"] = "6000"

    output = _import(_write_document(tmp_path, document))

    assert [line.split(":")[0] for line in output.splitlines()[:3]] == [
        "update gpu_hours organization acme",
        "update gpu_hours team acme-research",
        "update gpu_hours user alice",
    ]
    assert _quota("acme").limit_value == 12000
    assert _quota("acme-research").limit_value == 8000
    assert _quota("alice").limit_value == 5000


def test_lowering_a_parent_and_its_children_together_lowers_the_children_first(
    demo, tmp_path
):
    # Lowering acme first would leave its teams (6000 + 4000) above it.
    document = _demo_document()
    _org(document).update(limit_value="5000", soft_limit="4000", burst_limit="6000")
    for team, limit in [("acme-research", "3000"), ("acme-platform", "2000")]:
        _team(document, team).update(limit_value=limit, soft_limit=limit)
        for user in _team(document, team)["users"].values():
            user.update(limit_value=str(int(limit) // 2), soft_limit="0")

    output = _import(_write_document(tmp_path, document))

    order = [line.split(":")[0] for line in output.splitlines()[:7]]
    assert order[-1] == "update gpu_hours organization acme"
    assert order.index("update gpu_hours user alice") < order.index(
        "update gpu_hours team acme-research"
    )
    assert _quota("acme").limit_value == 5000
    assert _quota("carol").limit_value == 1000


def test_lowering_a_parent_while_raising_one_child_and_lowering_another(demo, tmp_path):
    document = _demo_document()
    _org(document)["limit_value"] = "9000"
    _org(document)["soft_limit"] = "7000"
    _team(document, "acme-research")["limit_value"] = "7000"
    _team(document, "acme-research")["burst_limit"] = "8000"
    _team(document, "acme-platform").update(limit_value="2000", soft_limit="1000")
    for user in ("carol", "dave"):
        _user(document, "acme-platform", user).update(
            limit_value="1000", soft_limit="800"
        )
    for user in ("alice", "bob"):
        _user(document, "acme-research", user)["limit_value"] = "3500"

    _import(_write_document(tmp_path, document))

    assert _state() == {
        **_state(),
        ("gpu_hours", "organization", "acme"): (
            None,
            Decimal("9000"),
            Decimal("7000"),
            Decimal("12000"),
            Decimal("1"),
        ),
    }
    assert _quota("acme-research").limit_value == 7000
    assert _quota("acme-platform").limit_value == 2000
    assert _quota("alice").limit_value == 3500
    assert _quota("dave").limit_value == 1000


def test_raising_the_overcommit_ratio_lets_children_sum_past_the_limit(demo, tmp_path):
    document = _demo_document()
    _org(document)["overcommit_ratio"] = "2"
    _team(document, "acme-research")["limit_value"] = "9000"
    _team(document, "acme-research")["burst_limit"] = "9000"
    _team(document, "acme-platform")["limit_value"] = "8000"
    _team(document, "acme-platform")["burst_limit"] = "8000"

    _import(_write_document(tmp_path, document))

    assert _quota("acme").overcommit_ratio == 2
    assert _quota("acme-research").limit_value == 9000


def test_moving_a_user_to_another_team_re_creates_it(demo, tmp_path):
    document = _demo_document()
    alice = _team(document, "acme-research")["users"].pop("alice")
    platform = _team(document, "acme-platform")
    platform["users"]["alice"] = alice
    for user in ("carol", "dave"):
        _user(document, "acme-platform", user).update(
            limit_value="500", soft_limit="400"
        )
    old_id = _quota("alice").id

    output = _import(_write_document(tmp_path, document))

    assert "delete gpu_hours user alice (limit_value 3000) (to re-create it)" in (
        output
    )
    assert (
        "create gpu_hours user alice under team acme-platform: limit_value 3000, "
        "soft_limit 2400, burst_limit 3600, overcommit_ratio 1 "
        "(moving from team acme-research to team acme-platform)"
    ) in output
    alice = _quota("alice")
    assert alice.parent.entity_id == "acme-platform"
    assert alice.id != old_id


def test_moving_a_team_re_creates_its_users_under_it(demo, tmp_path):
    document = _demo_document()
    research = _org(document)["teams"].pop("acme-research")
    document["quotas"]["gpu_hours"]["organizations"]["globex"] = {
        "limit_value": "6000",
        "teams": {"acme-research": research},
    }

    output = _import(_write_document(tmp_path, document))

    assert "(moving from organization acme to organization globex)" in output
    assert output.count("(re-created: its parent moves)") == 2
    assert _quota("alice").parent.parent.entity_id == "globex"


# --------------------------------------------------------- import: refused, no write


def test_deleting_a_quota_that_is_in_use_is_refused_and_nothing_is_written(
    demo, tmp_path
):
    _allocate("bob", "5")
    document = _demo_document()
    _org(document)["limit_value"] = "11000"
    del _team(document, "acme-research")["users"]["bob"]
    path = _write_document(tmp_path, document)
    table = _table()

    message = _import_error(path)

    assert message == (
        f"{path} is not valid (1 problem); nothing was written:\n"
        "  gpu_hours user bob has 5 in use in its subtree, so it cannot be deleted: "
        "release its allocations first."
    )
    assert _table() == table


def test_moving_a_quota_that_is_in_use_is_refused(demo, tmp_path):
    _allocate("alice", "5")
    document = _demo_document()
    alice = _team(document, "acme-research")["users"].pop("alice")
    _team(document, "acme-platform")["users"]["alice"] = alice
    _team(document, "acme-platform").update(limit_value="7000", burst_limit="8000")
    _team(document, "acme-research").update(limit_value="3000", soft_limit="3000")
    table = _table()

    message = _import_error(_write_document(tmp_path, document))

    assert "gpu_hours user alice has 5 in use in its subtree, so it cannot move" in (
        message
    )
    assert _table() == table


def test_lowering_a_limit_below_usage_is_refused(demo, tmp_path):
    _allocate("alice", "2500")
    document = _demo_document()
    _user(document, "acme-research", "alice").update(
        limit_value="2000", soft_limit="1000"
    )
    table = _table()

    message = _import_error(_write_document(tmp_path, document))

    assert "users › alice › limit_value: The new effective limit (2000) is below " in (
        message
    )
    assert "current usage (2500)" in message
    assert _table() == table


def test_a_service_refusal_fails_the_command_with_its_reason(demo, tmp_path):
    # Books that drifted (bob's used reads 0 under an active allocation) pass the
    # plan's check; the service, which also looks at the allocations, refuses.
    _allocate("bob", "5")
    Quota.objects.filter(id=_quota("bob").id).update(reserved=0)
    document = _demo_document()
    del _team(document, "acme-research")["users"]["bob"]
    path = _write_document(tmp_path, document)
    table = _table()

    message = _import_error(path)

    assert message.startswith(
        "Import refused, nothing was written: delete gpu_hours user bob "
        "(limit_value 3000): Quota "
    )
    assert message.endswith(" has active allocations in its subtree.")
    assert _table() == table


def test_a_refusal_while_applying_rolls_back_the_operations_before_it(demo, tmp_path):
    document = _demo_document()
    _user(document, "acme-platform", "dave").update(
        limit_value="1000", soft_limit="500"
    )
    _org(document)["limit_value"] = "10500"
    _team(document, "acme-platform")["users"]["erin"] = {"limit_value": "1000"}
    plan = hierarchy_import_plan(
        text=hierarchy_render(document=document, fmt="yaml"), fmt="yaml"
    )
    # Someone creates erin between the plan and its application.
    quota_create(
        entity_type=EntityType.USER,
        entity_id="erin",
        resource_type="gpu_hours",
        parent_id=_quota("acme-platform").id,
        limit_value=Decimal("0"),
    )
    table = _table()

    with pytest.raises(ImportFailed) as error:
        hierarchy_import_apply(plan=plan)

    assert str(error.value).startswith(
        "create gpu_hours user erin under team acme-platform: limit_value 1000, "
        "overcommit_ratio 1: A gpu_hours quota for user 'erin' already exists."
    )
    assert [op.action for op in plan.operations] == ["update", "update", "create"]
    assert _table() == table


def test_a_quota_put_in_use_after_planning_is_not_deleted(demo):
    document = _demo_document()
    del _team(document, "acme-research")["users"]["bob"]
    plan = hierarchy_import_plan(
        text=hierarchy_render(document=document, fmt="json"), fmt="json"
    )
    _allocate("bob", "1")
    table = _table()

    with pytest.raises(ImportFailed) as error:
        hierarchy_import_apply(plan=plan)

    assert "delete gpu_hours user bob (limit_value 3000): Quota " in str(error.value)
    assert "has active allocations" in str(error.value)
    assert _table() == table


def test_a_quota_changed_by_someone_else_while_importing_fails_the_import(demo):
    document = _demo_document()
    _org(document)["limit_value"] = "11000"
    plan = hierarchy_import_plan(
        text=hierarchy_render(document=document, fmt="yaml"), fmt="yaml"
    )
    quota_update(quota_id=_quota("carol").id, changes={"soft_limit": Decimal("1")})
    table = _table()

    with pytest.raises(ImportFailed) as error:
        hierarchy_import_apply(plan=plan)

    assert str(error.value) == (
        "The quotas changed while the import ran (gpu_hours user carol); run it again."
    )
    assert _table() == table


def test_deleting_an_entitys_last_quota_warns_about_the_keys_scoped_to_it(
    demo, tmp_path
):
    api_key_create(name="bob's scheduler", role="scheduler", scope="user:bob")
    api_key_create(name="research", role="viewer", scope="team:acme-research")
    document = _demo_document()
    for resource_type in document["quotas"]:
        del _team(document, "acme-research", resource_type)["users"]["bob"]
    only_gpus = _demo_document()
    del _team(only_gpus, "acme-research")["users"]["bob"]

    output = _import(_write_document(tmp_path, document), "--dry-run")
    partly = _import(_write_document(tmp_path, only_gpus), "--dry-run")

    # Keys are scoped to entities: the team keeps its quotas, bob loses all his;
    # losing one resource type of several leaves the key something to reach.
    assert "warning" not in partly
    assert output.splitlines()[0] == (
        "warning: user bob is left without quotas: the 1 API key scoped to it will "
        "reach nothing."
    )
    assert "acme-research is left" not in output


def test_planning_reads_the_database_in_a_bounded_number_of_queries(
    demo, django_assert_max_num_queries
):
    document = _demo_document()
    _org(document)["limit_value"] = "11000"
    del _team(document, "acme-research")["users"]["bob"]
    text = hierarchy_render(document=document, fmt="yaml")

    with django_assert_max_num_queries(3):
        plan = hierarchy_import_plan(text=text, fmt="yaml")

    assert plan.counts() == {"create": 0, "update": 1, "delete": 1}


# ----------------------------------------------------------------- import: checks

SMALL = """\
version: 1
quotas:
  gpu_hours:
    organizations:
      acme:
        limit_value: '100'
        teams:
          research:
            limit_value: '60'
            users:
              alice:
                limit_value: '30'
"""


def _small(old: str, new: str) -> str:
    assert old in SMALL
    return SMALL.replace(old, new)


INVALID_FILES = {
    "unknown resource type": (
        _small("  gpu_hours:", "  bananas:"),
        "line 3, quotas › bananas: unknown resource type 'bananas'; valid: "
        "concurrent_gpus, cpu_hours, gpu_hours, memory_gb, storage_gb.",
    ),
    "resource type twice": (
        SMALL + "  GPU_Hours: {}\n",
        "line 13, quotas › GPU_Hours: resource type gpu_hours appears twice "
        "(also as 'gpu_hours').",
    ),
    "unknown entity type": (
        _small("    organizations:", "    companies:"),
        "line 4, quotas › gpu_hours › companies: unknown key 'companies'; expected "
        "organizations, teams or users.",
    ),
    "user under an organization": (
        _small(
            "        teams:\n          research:", "        users:\n          research:"
        ),
        "line 7, quotas › gpu_hours › organizations › acme › users: a user cannot "
        "have an organization parent: users go under a team's users; an "
        "organization holds teams.",
    ),
    "team under a team": (
        _small("            users:", "            teams:"),
        "line 10, quotas › gpu_hours › organizations › acme › teams › research › "
        "teams: a team cannot have a team parent: teams go under an organization's "
        "teams; a team holds users.",
    ),
    "organization under a team": (
        _small("            users:", "            organizations:"),
        "organizations: an organization cannot have a team parent: organizations "
        "have no parent (put them directly under the resource type); a team holds "
        "users.",
    ),
    "anything under a user": (
        SMALL + "                users: {bob: {limit_value: '1'}}\n",
        "line 13, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice › users: a user cannot have a user parent: users go under a "
        "team's users; a user has no children.",
    ),
    "child above its parent": (
        _small("limit_value: '30'", "limit_value: '70'"),
        "line 12, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice › limit_value: limit_value (70) exceeds the parent's "
        "limit_value (60). The parent is at line 8.",
    ),
    "children above the parent's effective limit": (
        SMALL + "          platform:\n            limit_value: '50'\n",
        "line 5, quotas › gpu_hours › organizations › acme: The children's limits "
        "sum to 110, above the parent's effective limit (100).",
    ),
    "children above the parent's overcommitted limit": (
        _small("'100'", "'100'\n        overcommit_ratio: '1.5'")
        + "          platform:\n            limit_value: '50'\n"
        + "          ops:\n            limit_value: '50'\n",
        "line 5, quotas › gpu_hours › organizations › acme: The children's limits "
        "sum to 160, above the parent's effective limit (150).",
    ),
    "soft limit above the limit": (
        _small("'60'", "'60'\n            soft_limit: '61'"),
        "line 10, quotas › gpu_hours › organizations › acme › teams › research › "
        "soft_limit: soft_limit (61) must not exceed limit_value (60).",
    ),
    "burst limit below the limit": (
        _small("'60'", "'60'\n            burst_limit: '59.9999'"),
        "line 10, quotas › gpu_hours › organizations › acme › teams › research › "
        "burst_limit: burst_limit (59.9999) must be at least limit_value (60).",
    ),
    "the same entity twice": (
        SMALL
        + "          platform:\n            limit_value: '10'\n"
        + "            users:\n"
        + "              alice:\n"
        + "                limit_value: '1'\n",
        "line 16, quotas › gpu_hours › organizations › acme › teams › platform › "
        "users › alice: user alice already has a gpu_hours quota at line 11; an "
        "entity has one quota per resource type.",
    ),
    "the same key twice": (
        SMALL + "              alice:\n                limit_value: '1'\n",
        "line 13, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice: 'alice' appears more than once here (first at line 11).",
    ),
    "negative amount": (
        _small("'30'", "'-1'"),
        "line 12, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice › limit_value: limit_value '-1' is not valid: Must not be "
        "negative.",
    ),
    "too many decimal places": (
        _small("'30'", "'30.00001'"),
        "limit_value '30.00001' is not valid: At most 4 decimal places are allowed.",
    ),
    "too many digits": (
        _small("'100'", "'12345678901234567'"),
        "limit_value '12345678901234567' is not valid: At most 16 digits before "
        "the decimal point are allowed.",
    ),
    "not a number": (
        _small("'30'", "'NaN'"),
        "limit_value 'NaN' is not valid: Must be a number or a numeric string.",
    ),
    "an exponent": (
        _small("'30'", "3.0e+1"),
        "limit_value '3.0e+1' is not valid: Must be a number or a numeric string.",
    ),
    "a boolean": (
        _small("'30'", "yes"),
        "limit_value True is not valid: Must be a number or a numeric string.",
    ),
    "overcommit below 1": (
        _small("'60'", "'60'\n            overcommit_ratio: '0.5'"),
        "overcommit_ratio '0.5' is not valid: Must be at least 1.",
    ),
    "overcommit with three places": (
        _small("'60'", "'60'\n            overcommit_ratio: '1.005'"),
        "overcommit_ratio '1.005' is not valid: At most 2 decimal places are allowed.",
    ),
    "missing limit": (
        _small(
            "              alice:\n                limit_value: '30'",
            "              alice: {}",
        ),
        "line 11, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice: limit_value is missing.",
    ),
    "unknown field": (
        _small("limit_value: '30'", "limit: '30'"),
        "line 12, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice › limit: unknown key 'limit'; expected limit_value, "
        "soft_limit, burst_limit, overcommit_ratio, period, carryover_limit or "
        "alert_thresholds.",
    ),
    "thresholds that are not a list": (
        _small(
            "limit_value: '30'",
            "limit_value: '30'\n                alert_thresholds: 80",
        ),
        "line 13, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice › alert_thresholds: alert_thresholds 80 is not valid: a list "
        "of percents of the cap, e.g. [80, 100].",
    ),
    "a threshold above 1000": (
        _small(
            "limit_value: '30'",
            "limit_value: '30'\n                alert_thresholds: [2000]",
        ),
        "line 13, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice › alert_thresholds: A threshold is a percent of the cap above 0 "
        "and at most 1000 (got 2000).",
    ),
    "a quota that is a number": (
        _small(
            "              alice:\n                limit_value: '30'",
            "              alice: 30",
        ),
        "line 11, quotas › gpu_hours › organizations › acme › teams › research › "
        "users › alice: a quota must be a mapping with at least limit_value, not 30.",
    ),
    "a group that is a list": (
        _small(
            "            users:\n"
            "              alice:\n"
            "                limit_value: '30'\n",
            "            users: [alice]\n",
        ),
        "line 10, quotas › gpu_hours › organizations › acme › teams › research › "
        "users: users must be a mapping, not a list.",
    ),
    "blank entity id": (
        _small("alice:", "'  ':"),
        "users ›   : an entity id must not be blank.",
    ),
    "entity id too long": (
        _small("alice:", "x" * 256 + ":"),
        "an entity id has at most 255 characters (this one has 256).",
    ),
    "missing version": (
        _small("version: 1\n", ""),
        "version is missing (this format is 1).",
    ),
    "unsupported version": (
        _small("version: 1", "version: 2"),
        "line 1, version: unsupported version 2; this format is 1.",
    ),
    "unknown top-level key": (
        SMALL + "comment: hello\n",
        "line 13, comment: unknown key 'comment'; expected version and quotas.",
    ),
    "missing quotas": (
        "version: 1\n",
        "quotas is missing.",
    ),
    "not a mapping": (
        "- version: 1\n",
        "The file's top level must be a mapping, not a list.",
    ),
    "an empty file": ("", "The file is empty."),
}


@pytest.mark.parametrize(
    ("text", "expected"),
    list(INVALID_FILES.values()),
    ids=list(INVALID_FILES),
)
def test_an_invalid_file_is_refused_with_where_and_why_and_nothing_written(
    demo, tmp_path, text, expected
):
    path = _write(tmp_path, text)
    table = _table()

    message = _import_error(path)

    assert message.startswith(f"{path} is not valid (")
    assert "nothing was written:\n" in message
    assert expected in message
    assert _table() == table


def test_every_problem_is_reported_at_once_in_file_order(demo, tmp_path):
    text = (
        _small("'100'", "'100'\n        soft_limit: '101'")
        .replace("'60'", "'abc'")
        .replace("limit_value: '30'", "limit_value: '30'\n                extra: 1")
        + "  bananas: {}\n"
    )
    path = _write(tmp_path, text)
    table = _table()

    message = _import_error(path)

    prefix = "quotas › gpu_hours › organizations › acme"
    assert message.splitlines() == [
        f"{path} is not valid (4 problems); nothing was written:",
        f"  line 7, {prefix} › soft_limit: soft_limit (101) must not exceed "
        "limit_value (100).",
        f"  line 10, {prefix} › teams › research › limit_value: limit_value 'abc' is "
        "not valid: Must be a number or a numeric string.",
        f"  line 14, {prefix} › teams › research › users › alice › extra: unknown key "
        "'extra'; expected limit_value, soft_limit, burst_limit, overcommit_ratio, "
        "period, carryover_limit or alert_thresholds.",
        "  line 15, quotas › bananas: unknown resource type 'bananas'; valid: "
        "concurrent_gpus, cpu_hours, gpu_hours, memory_gb, storage_gb.",
    ]
    assert _table() == table


def test_problems_in_the_file_and_with_current_usage_are_reported_together(
    demo, tmp_path
):
    _allocate("bob", "5")
    document = _demo_document()
    _user(document, "acme-research", "alice")["soft_limit"] = "3001"
    del _team(document, "acme-research")["users"]["bob"]
    table = _table()

    message = _import_error(_write_document(tmp_path, document))

    assert message.splitlines()[1:] == [
        "  line 120, quotas › gpu_hours › organizations › acme › teams › "
        "acme-research › users › alice › soft_limit: soft_limit (3001) must not "
        "exceed limit_value (3000).",
        "  gpu_hours user bob has 5 in use in its subtree, so it cannot be deleted: "
        "release its allocations first.",
    ]
    assert _table() == table


def test_json_problems_name_the_path(demo, tmp_path):
    path = _write(
        tmp_path,
        json.dumps(
            {
                "version": 1,
                "quotas": {
                    "gpu_hours": {
                        "organizations": {"acme": {"limit_value": "-5"}},
                    }
                },
            }
        ),
        "quotas.json",
    )

    message = _import_error(path)

    assert message.splitlines()[1] == (
        "  quotas › gpu_hours › organizations › acme › limit_value: limit_value '-5' "
        "is not valid: Must not be negative."
    )


def test_a_json_key_given_twice_is_refused(demo, tmp_path):
    path = _write(
        tmp_path,
        '{"version": 1, "version": 1, "quotas": {}}',
        "quotas.json",
    )

    assert "version: 'version' appears more than once here." in _import_error(path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "quotas.yaml",
            "version: 1\nquotas:\n  gpu_hours: [\n",
            "line 4: not valid YAML: while parsing a flow node: did not find expected "
            "node content (column 1)",
        ),
        (
            "quotas.yaml",
            "version: 1\nquotas:\n\tgpu_hours: {}\n",
            "line 3: not valid YAML: while scanning for the next token: found "
            "character that cannot start any token (column 1); it is a tab: YAML "
            "indents with spaces",
        ),
        (
            "quotas.json",
            '{"version": 1,\n  "quotas": {,}}',
            "line 2: not valid JSON: Expecting property name enclosed in double quotes "
            "(column 14)",
        ),
        (
            "quotas.json",
            '{"version": 1, "quotas": {}} trailing',
            "line 1: not valid JSON: Extra data (column 30)",
        ),
    ],
)
def test_malformed_yaml_or_json_is_a_clean_error(demo, tmp_path, name, text, expected):
    path = _write(tmp_path, text, name)
    table = _table()

    message = _import_error(path)

    assert message.startswith(f"{path} is not valid (1 problem); nothing was written:")
    assert expected in message
    assert _table() == table


def test_a_missing_file_is_a_clean_error(db, tmp_path):
    assert (
        _import_error(tmp_path / "nope.yaml")
        == f"{tmp_path / 'nope.yaml'}: no such file."
    )


def test_a_directory_is_a_clean_error(db, tmp_path):
    assert _import_error(tmp_path) == f"cannot read {tmp_path}: Is a directory"


def test_a_file_that_is_not_utf8_is_a_clean_error(db, tmp_path):
    path = tmp_path / "quotas.yaml"
    path.write_bytes(b"version: 1\nquotas: \xff\n")

    assert _import_error(path) == f"{path} is not UTF-8 text (byte 19)."


def test_a_missing_file_argument_is_a_usage_error_with_exit_status_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "import_quotas"],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "the following arguments are required: FILE" in result.stderr


# --------------------------------------------------------------------- concurrency


def _lock_like_an_allocation(
    quota_ids: list, locked: threading.Event, outcome: list
) -> None:
    """Lock rows one by one, leaf first and root last, as the allocation function
    does, pausing after the first so the import runs meanwhile."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            for index, quota_id in enumerate(quota_ids):
                cursor.execute(
                    "UPDATE quotas SET reserved = reserved WHERE id = %s", [quota_id]
                )
                if index == 0:
                    locked.set()
                    time.sleep(0.5)
        outcome.append("committed")
    except DatabaseError as exc:
        outcome.append(exc)
    finally:
        connection.close()


def _import_while_an_allocation_holds_the_team() -> tuple[object, list]:
    """Raise org, team and user together (applied root first) while another
    transaction holds the team and then wants the organization."""
    seed_demo()
    document = _demo_document()
    _org(document)["limit_value"] = "12000"
    _team(document, "acme-research").update(limit_value="8000", burst_limit="9000")
    _user(document, "acme-research", "alice")["limit_value"] = "3500"
    plan = hierarchy_import_plan(
        text=hierarchy_render(document=document, fmt="yaml"), fmt="yaml"
    )
    locked, outcome = threading.Event(), []
    holder = threading.Thread(
        target=_lock_like_an_allocation,
        args=([_quota("acme-research").id, _quota("acme").id], locked, outcome),
    )
    holder.start()
    assert locked.wait(timeout=10)
    try:
        result = hierarchy_import_apply(plan=plan)
    except ImportFailed as exc:
        result = exc
    holder.join(timeout=30)
    return result, outcome


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_an_import_waits_for_an_allocation_instead_of_deadlocking_with_it():
    result, outcome = _import_while_an_allocation_holds_the_team()

    assert result == {"create": 0, "update": 3, "delete": 0}
    assert outcome == ["committed"]
    assert _quota("acme").limit_value == 12000
    assert _quota("alice").limit_value == 3500


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_without_its_upfront_lock_the_import_would_deadlock(monkeypatch):
    # The broken variant: each service locks on its own, root first for raises.
    monkeypatch.setattr(importing.apply, "lock_quotas", lambda quota_ids: {})

    result, outcome = _import_while_an_allocation_holds_the_team()

    assert isinstance(result, ImportFailed)
    assert "deadlock detected" in str(result)
    assert outcome == ["committed"]
    assert _quota("acme").limit_value == 10000
