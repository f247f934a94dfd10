"""manage.py reconcile_usage: report drift of `used`, repair it under the locks."""

import io
import random
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.db.models import F

from allocations import services
from allocations.exceptions import QuotaExceeded
from allocations.models import UsageRepair
from allocations.selectors import usage_drift
from quotas.models import Quota
from tests import broken
from tests.concurrency import (
    outcomes,
    run_command_while_quota_locked,
    run_in_threads,
)
from tests.factories import UserQuotaFactory
from tests.helpers import (
    allocate_direct,
    assert_p1,
    assert_p2,
    mixed_tree,
    run_command,
    used_of,
)

BASE_DIR = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a user's stderr would."""

    def isatty(self):
        return True


def _run(*args, stderr=None):
    return run_command("reconcile_usage", *args, stderr=stderr)


def _drift(quota, by):
    Quota.objects.filter(id=quota.id).update(reserved=F("reserved") + Decimal(by))


def _manage(*args):
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        capture_output=True,
        text=True,
        cwd=BASE_DIR,
        timeout=60,
    )


# --- Reporting ------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_exits_0_when_no_quota_drifted(tree):
    allocate_direct(amount="5")

    code, out, _ = _run()

    assert code == 0
    assert out.strip() == "No drift: every quota's used matches its allocations."


@pytest.mark.django_db
def test_it_prints_each_drift_as_an_aligned_table_and_exits_1(tree):
    org, team, user = tree
    allocate_direct(amount="5")
    _drift(team, "2")
    _drift(org, "12.25")

    code, out, _ = _run()

    assert code == 1
    header, *rows, summary = out.splitlines()
    assert header.split() == [
        "quota",
        "id",
        "entity",
        "resource",
        "stored",
        "actual",
        "delta",
    ]
    assert rows[0].split() == [
        str(org.id),
        "organization",
        "acme",
        "concurrent_gpus",
        "17.25",
        "5",
        "+12.25",
    ]
    assert rows[1].split() == [
        str(team.id),
        "team",
        "research",
        "concurrent_gpus",
        "7",
        "5",
        "+2",
    ]
    # Text columns start where their header does; amounts end where theirs does.
    for title in ("entity", "resource"):
        start = header.index(title)
        assert all(row[start - 2 : start] == "  " and row[start] != " " for row in rows)
    for title in ("stored", "actual", "delta"):
        end = header.index(title) + len(title)
        assert all(
            row[end - 1] != " " and row[end : end + 1] in ("", " ") for row in rows
        )
    assert summary == "2 quotas drifted; --fix repairs them."


@pytest.mark.django_db
def test_without_fix_it_changes_nothing(tree):
    org, team, user = tree
    allocate_direct(amount="5")
    _drift(team, "2")

    assert _run()[0] == 1

    assert used_of(team) == [Decimal("7")]
    assert UsageRepair.objects.count() == 0


# --- Repairing ------------------------------------------------------------------------


@pytest.mark.django_db
def test_fix_repairs_every_drifted_level_and_records_each_repair(tree):
    org, team, user = tree
    allocate_direct(amount="5")
    _drift(org, "3")
    _drift(user, "-4")

    code, out, _ = _run("--fix")

    assert code == 1  # drift was found, even though it is now repaired
    assert used_of(org, team, user) == [Decimal("5")] * 3
    repairs = {r.quota_id: r for r in UsageRepair.objects.all()}
    assert set(repairs) == {org.id, user.id}
    org_repair, user_repair = repairs[org.id], repairs[user.id]
    assert (org_repair.stored, org_repair.actual, org_repair.delta) == (8, 5, 3)
    assert (user_repair.stored, user_repair.actual, user_repair.delta) == (1, 5, -4)
    assert (user_repair.entity_type, user_repair.entity_id) == ("user", "alice")
    assert user_repair.resource_type == "concurrent_gpus"
    assert org_repair.run_id == user_repair.run_id
    assert org_repair.repaired_at is not None
    assert out.splitlines()[-1] == (
        f"2 quotas drifted; 2 repaired (run {org_repair.run_id})."
    )
    assert usage_drift() == []
    assert _run()[0] == 0


@pytest.mark.django_db
def test_each_run_records_its_repairs_under_its_own_run_id(tree):
    org, team, user = tree
    _drift(org, "1")
    _run("--fix")
    _drift(org, "1")
    _run("--fix")

    assert UsageRepair.objects.values("run_id").distinct().count() == 2


@pytest.mark.django_db
def test_dry_run_reports_what_fix_would_repair_and_writes_nothing(tree):
    org, team, user = tree
    _drift(team, "2")

    code, out, _ = _run("--fix", "--dry-run")

    assert code == 1
    assert str(team.id) in out
    assert out.splitlines()[-1] == "1 quota drifted; dry run, nothing repaired."
    assert used_of(team) == [Decimal("2")]
    assert UsageRepair.objects.count() == 0


@pytest.mark.django_db
def test_root_limits_the_report_and_the_repair_to_one_subtree(tree):
    org, team, user = tree
    allocate_direct(amount="5")
    _drift(org, "1")
    _drift(user, "1")

    code, out, _ = _run("--root", str(team.id), "--fix")

    assert code == 1
    assert str(user.id) in out and str(org.id) not in out
    assert used_of(user) == [Decimal("5")]
    assert used_of(org) == [Decimal("6")]  # outside the subtree: left alone
    assert _run("--root", str(team.id))[0] == 0
    assert _run("--root", str(org.id))[0] == 1


@pytest.mark.django_db
def test_an_unknown_root_is_an_error_with_exit_code_2():
    code, out, err = _run("--root", str(uuid.uuid4()))

    assert code == 2
    assert out == ""
    assert "not found" in err


@pytest.mark.django_db(transaction=True)
def test_leaves_are_repaired_in_batches_and_each_quota_with_children_alone(tree):
    org, team, user = tree
    users = [
        user,
        *(
            UserQuotaFactory(parent=team, entity_id=name, limit_value=Decimal("10"))
            for name in ("bob", "carol")
        ),
    ]
    allocate_direct(amount="5")
    for quota in [org, team, *users]:
        _drift(quota, "1")

    assert _run("--fix", "--batch-size", "2")[0] == 1

    # repaired_at is the database's transaction time: one per transaction.
    at = dict(UsageRepair.objects.values_list("quota_id", "repaired_at"))
    assert len(at) == 5
    assert len({at[quota.id] for quota in users}) == 2  # 3 leaves, batches of 2
    assert len({at[org.id], at[team.id], *(at[quota.id] for quota in users)}) == 4
    assert at[team.id] < at[org.id]  # deepest first
    assert usage_drift() == []


@pytest.mark.parametrize(
    "option", [["--batch-size", "0"], ["--batch-size", "x"], ["--root", "nonsense"]]
)
def test_a_bad_option_is_refused(option):
    with pytest.raises(CommandError, match="argument"):
        call_command("reconcile_usage", *option)


def test_a_bad_option_on_the_command_line_exits_2():
    result = _manage("reconcile_usage", "--root", "nonsense")

    assert result.returncode == 2
    assert "argument --root: invalid UUID value" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_it_waits_for_the_allocation_locks_and_exits_2_when_it_cannot_take_them(tree):
    org, team, user = tree
    _drift(team, "1")

    # Another transaction holds the team's row, as an allocation in flight would.
    code, out, err = run_command_while_quota_locked(team, "reconcile_usage", "--fix")

    assert code == 2
    assert out == ""
    assert err == "cannot reconcile usage: OperationalError\n"
    assert used_of(team) == [Decimal("1")]
    assert UsageRepair.objects.count() == 0


# --- Progress bar ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_terminal_gets_a_progress_bar_over_the_batches(tree):
    org, team, user = tree
    for quota in [
        user,
        UserQuotaFactory(parent=team, entity_id="bob", limit_value=Decimal("10")),
        UserQuotaFactory(parent=team, entity_id="carol", limit_value=Decimal("10")),
        team,
    ]:
        _drift(quota, "1")

    _, _, err = _run("--fix", "--batch-size", "2", stderr=Terminal())

    assert err.startswith("\rrepairing [")
    frames = err.rstrip("\n").split("\r")[1:]
    assert [frame.rsplit(" ", 1)[1] for frame in frames] == ["2/4", "3/4", "4/4"]
    assert frames[-1] == "repairing [" + "#" * 30 + "] 4/4"
    assert err.endswith("\n")


@pytest.mark.django_db
def test_no_progress_bar_with_no_progress_or_when_stderr_is_not_a_terminal(tree):
    for quota in tree:
        _drift(quota, "1")

    assert _run("--fix", "--no-progress", stderr=Terminal())[2] == ""
    for quota in tree:
        _drift(quota, "1")
    assert _run("--fix")[2] == ""


# --- Under live allocation traffic ---------------------------------------------------


def _repair_during_traffic(reconcile, *, seconds):
    """Allocation traffic on a small tree for a few seconds while another thread
    keeps introducing drift on a random level and running ``reconcile()``.
    Returns what each thread returned: the reconciler's list of ``reconcile()``
    results first, then each traffic thread's counts. Fails if a thread raised."""
    org, teams, users = mixed_tree()
    levels = [org, *teams, *users]
    deadline = time.monotonic() + seconds
    # The last repair happens while traffic still runs, so a wrong one stays visible.
    repairs_deadline = deadline - 0.5

    def traffic(index):
        rng = random.Random(index)
        held, counts = [], {"granted": 0, "refused_by_check": 0}
        while time.monotonic() < deadline:
            if held and rng.random() < 0.45:
                try:
                    services.allocation_release(
                        allocation_id=held.pop(rng.randrange(len(held)))
                    )
                except IntegrityError:
                    # used >= 0 refused the release: `used` was below the truth.
                    counts["refused_by_check"] += 1
                continue
            try:
                allocation = allocate_direct(
                    entity_id=rng.choice(users).entity_id,
                    amount=Decimal(rng.randint(1, 150_000)) / 10_000,
                )
            except QuotaExceeded:
                continue
            held.append(allocation.id)
            counts["granted"] += 1
        return counts

    def reconciler():
        rng = random.Random(-1)
        runs = []
        while time.monotonic() < repairs_deadline:
            # Upwards only: `used` below the truth could be driven under zero by
            # a release, which the database's check refuses.
            _drift(rng.choice(levels), "0.5")
            runs.append(reconcile())
        return runs

    def work(index):
        return reconciler() if index == 0 else traffic(index)

    # Refusals are counted inside the threads: none may raise anything.
    returned, _ = outcomes(run_in_threads(7, work))
    return returned


@pytest.mark.django_db(transaction=True)
def test_fix_during_live_allocation_traffic_leaves_the_books_exact():
    def reconcile():
        return _run("--fix", "--no-progress", "--batch-size", "2")[0]

    reconciler, *traffic = _repair_during_traffic(reconcile, seconds=3)

    assert len(traffic) == 6
    assert all(isinstance(counts, dict) for counts in traffic), traffic
    assert sum(counts["granted"] for counts in traffic) > 100
    assert sum(counts["refused_by_check"] for counts in traffic) == 0
    assert isinstance(reconciler, list), reconciler
    assert len(reconciler) > 10
    # Every run found the drift just introduced, and repaired exactly that: under
    # the lock, stored - actual was the 0.5 added, however much traffic went by.
    assert set(reconciler) == {1}
    assert UsageRepair.objects.count() == len(reconciler)
    assert set(UsageRepair.objects.values_list("delta", flat=True)) == {Decimal("0.5")}
    assert_p2()
    assert_p1()


@pytest.mark.django_db(transaction=True)
def test_a_fix_from_the_report_without_the_locks_breaks_the_books_under_traffic():
    reconciler, *traffic = _repair_during_traffic(
        broken.usage_reconcile_from_report, seconds=2
    )

    assert isinstance(reconciler, list), reconciler
    assert len(reconciler) > 0
    assert all(isinstance(counts, dict) for counts in traffic), traffic
    assert sum(counts["granted"] for counts in traffic) > 0
    assert usage_drift() != []
