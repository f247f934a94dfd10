"""manage.py expire_allocations: release every allocation whose lease ran out, once."""

import io
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Count
from django.db.models.functions import Now

from allocations import services
from allocations.models import Allocation, AllocationStatus, UsageHistory
from allocations.selectors import usage_drift
from quotas.models import EntityType, Quota
from tests.concurrency import run_command_while_quota_locked
from tests.factories import QuotaFactory
from tests.helpers import allocate_direct, database_url, run_command

BASE_DIR = Path(__file__).resolve().parent.parent


def _run(*args):
    code, out, _ = run_command("expire_allocations", *args)
    return code, out


def _leases(count: int) -> list:
    """The ids of ``count`` new allocations of 1 to alice, each with a one-hour
    lease."""
    return [allocate_direct(amount="1", ttl_seconds=3600).id for _ in range(count)]


def _run_out(*allocation_ids):
    """End the leases a minute ago, by the database clock."""
    Allocation.objects.filter(id__in=allocation_ids).update(
        expires_at=Now() - timedelta(minutes=1)
    )


def _expire_rows(allocation_id):
    return UsageHistory.objects.filter(
        allocation_id=allocation_id, operation="expire"
    ).count()


def _start(*command):
    return subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url()},
    )


def _wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- One pass -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_expires_each_allocation_whose_lease_ran_out_with_a_history_row(tree):
    org, team, user = tree
    due = [allocate_direct(amount=a, ttl_seconds=3600).id for a in ("2", "3")]
    running = allocate_direct(amount="4", ttl_seconds=3600).id
    no_lease = allocate_direct(amount="5", ttl_seconds=None).id
    _run_out(*due)

    code, out = _run()

    assert code == 0
    assert out == "expired 2 allocations\n"
    statuses = dict(Allocation.objects.values_list("id", "status"))
    assert [statuses[a] for a in due] == [AllocationStatus.EXPIRED] * 2
    assert statuses[running] == statuses[no_lease] == AllocationStatus.ACTIVE
    assert [_expire_rows(a) for a in [*due, running, no_lease]] == [1, 1, 0, 0]
    for quota in tree:
        quota.refresh_from_db()
        assert quota.used == Decimal("9")
    assert usage_drift() == []


@pytest.mark.django_db
def test_a_second_pass_finds_nothing_left_to_expire(tree):
    _run_out(*_leases(1))

    assert _run() == (0, "expired 1 allocations\n")
    assert _run() == (0, "expired 0 allocations\n")


@pytest.mark.django_db
def test_small_batches_still_expire_everything_in_one_pass(tree):
    due = _leases(7)
    _run_out(*due)

    assert _run("--batch-size", "2") == (0, "expired 7 allocations\n")
    assert Allocation.objects.filter(status=AllocationStatus.ACTIVE).count() == 0


@pytest.mark.django_db
def test_dry_run_counts_what_would_expire_and_changes_nothing(tree):
    org, team, user = tree
    _run_out(*_leases(2))
    _leases(1)

    assert _run("--dry-run") == (0, "would expire 2 allocations (dry run)\n")
    assert Allocation.objects.filter(status=AllocationStatus.ACTIVE).count() == 3
    assert UsageHistory.objects.filter(operation="expire").count() == 0
    user.refresh_from_db()
    assert user.used == Decimal("3")


@pytest.mark.django_db
def test_the_service_reports_how_many_it_expired(tree):
    _run_out(*_leases(2))

    assert services.allocations_expire(batch_size=10, dry_run=True) == 2
    assert services.allocations_expire(batch_size=10, dry_run=False) == 2
    assert services.allocations_expire(batch_size=10, dry_run=False) == 0


@pytest.mark.django_db
def test_the_service_stops_between_batches_when_asked(tree):
    _run_out(*_leases(5))
    asked = []

    def stop_after_the_first_batch():
        asked.append(True)
        return len(asked) > 1

    expired = services.allocations_expire(
        batch_size=2, dry_run=False, should_stop=stop_after_the_first_batch
    )

    assert expired == 2
    assert Allocation.objects.filter(status=AllocationStatus.ACTIVE).count() == 3


@pytest.mark.parametrize(
    "option, message",
    [
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, not 0"),
        (["--loop", "0"], "argument --loop: must be a positive number, not 0"),
        (["--loop", "soon"], "argument --loop: not a number: 'soon'"),
    ],
)
def test_a_bad_option_is_a_usage_error(option, message):
    # On the command line argparse turns this into exit code 2, as
    # test_cmd_reconcile.py shows for reconcile_usage.
    with pytest.raises(CommandError) as refused:
        call_command("expire_allocations", *option)

    assert str(refused.value) == f"Error: {message}"


@pytest.mark.django_db(transaction=True)
def test_a_database_error_exits_2_and_leaves_the_allocation_active(tree):
    org, team, user = tree
    [allocation] = _leases(1)
    _run_out(allocation)

    # Another transaction holds the organization's row, as an allocation in flight
    # would: the sweeper's release waits for it until lock_timeout ends it.
    code, out, err = run_command_while_quota_locked(org, "expire_allocations")

    assert code == 2
    assert out == ""
    assert err == "cannot expire allocations: OperationalError\n"
    assert Allocation.objects.get(id=allocation).status == AllocationStatus.ACTIVE
    assert UsageHistory.objects.filter(operation="expire").count() == 0
    assert usage_drift() == []


# --- Loop -----------------------------------------------------------------------------


def _read_line(process, timeout=20):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, "no output in time"
    return process.stdout.readline().rstrip("\n")


@pytest.mark.django_db(transaction=True)
def test_loop_expires_leases_as_they_run_out_until_sigterm_stops_it(tree):
    _run_out(*_leases(2))
    later = _leases(3)

    sweeper = _start("manage.py", "expire_allocations", "--loop", "0.1")
    try:
        passes = [_read_line(sweeper)]
        _run_out(*later)
        while passes[-1] != "expired 3 allocations":
            passes.append(_read_line(sweeper))
        sweeper.send_signal(signal.SIGTERM)
        out, err = sweeper.communicate(timeout=20)
    finally:
        sweeper.kill()

    assert sweeper.returncode == 0, err
    passes += out.splitlines()
    assert passes[0] == "expired 2 allocations"
    assert set(passes[1:]) <= {"expired 0 allocations", "expired 3 allocations"}
    assert passes.count("expired 3 allocations") == 1
    assert UsageHistory.objects.filter(operation="expire").count() == 5
    assert usage_drift() == []


@pytest.mark.django_db
def test_loop_stops_cleanly_on_sigint_and_gives_the_signal_back(tree):
    _run_out(*_leases(2))
    out = io.StringIO()
    before = signal.getsignal(signal.SIGINT)
    finished = threading.Event()

    def interrupt_after_two_passes():
        deadline = time.monotonic() + 20
        while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Only while the command's own handler is installed: never interrupt pytest.
        if not finished.is_set() and signal.getsignal(signal.SIGINT) is not before:
            os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_after_two_passes)
    interrupter.start()
    try:
        call_command("expire_allocations", "--loop", "0.05", stdout=out)
    finally:
        finished.set()
        interrupter.join()

    passes = out.getvalue().splitlines()
    assert passes[:2] == ["expired 2 allocations", "expired 0 allocations"]
    assert set(passes[1:]) == {"expired 0 allocations"}
    assert signal.getsignal(signal.SIGINT) is before


# --- Two sweepers at once -------------------------------------------------------------

SWEPT = 300
BROKEN_SWEEPER = (
    "import django; django.setup(); from tests import broken; "
    "print(f'expired {broken.allocations_expire_check_then_write()} allocations')"
)


def _two_sweepers_at_once(command, *, allocations=SWEPT):
    """Allocations whose leases ran out, and two OS processes sweeping them, set off
    together: both are started while the test holds a lock on the allocations table
    that blocks their first claim (or write), and the lock is let go once the
    database shows both waiting for it. Returns the count each one reported."""
    org = QuotaFactory(entity_id="org", limit_value=Decimal("1000"))
    team = QuotaFactory(
        entity_type=EntityType.TEAM, entity_id="team", parent=org, limit_value=500
    )
    users = [
        QuotaFactory(
            entity_type=EntityType.USER, entity_id=f"u{i}", parent=team, limit_value=100
        )
        for i in range(4)
    ]
    for i in range(allocations):
        allocate_direct(
            entity_id=users[i % 4].entity_id, amount="1.25", ttl_seconds=3600
        )
    Allocation.objects.update(expires_at=Now() - timedelta(minutes=1))

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE allocations IN EXCLUSIVE MODE")
        sweepers = [_start(*command), _start(*command)]

        def both_waiting():
            # Activity is read once per transaction unless the snapshot is cleared.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] == 2

        def exited():
            return [sweeper for sweeper in sweepers if sweeper.poll() is not None]

        try:
            _wait_for(lambda: both_waiting() or exited())
        except AssertionError:
            for sweeper in sweepers:
                sweeper.kill()
            raise
        early = exited()
        if early:
            for sweeper in sweepers:
                sweeper.kill()
            pytest.fail(f"a sweeper exited before the start: {early[0].communicate()}")
    outputs = [sweeper.communicate(timeout=60) for sweeper in sweepers]
    for sweeper, (_, err) in zip(sweepers, outputs, strict=True):
        assert sweeper.returncode == 0, err
    return [
        int(re.fullmatch(r"expired (\d+) allocations\n", out)[1]) for out, _ in outputs
    ]


@pytest.mark.django_db(transaction=True)
def test_two_sweeper_processes_at_once_expire_each_allocation_exactly_once():
    counts = _two_sweepers_at_once(
        ["manage.py", "expire_allocations", "--batch-size", "10"]
    )

    assert sum(counts) == SWEPT
    assert all(count > 0 for count in counts), counts  # both did part of the work
    assert Allocation.objects.filter(status=AllocationStatus.EXPIRED).count() == SWEPT
    per_allocation = (
        UsageHistory.objects.filter(operation="expire")
        .values("allocation_id")
        .annotate(rows=Count("id"))
    )
    assert len(per_allocation) == SWEPT
    assert {row["rows"] for row in per_allocation} == {1}
    assert set(Quota.objects.values_list("used", flat=True)) == {Decimal("0")}
    assert usage_drift() == []


@pytest.mark.django_db(transaction=True)
def test_two_broken_sweepers_without_claims_expire_allocations_twice():
    counts = _two_sweepers_at_once(["-c", BROKEN_SWEEPER], allocations=40)

    assert sum(counts) > 40
    per_allocation = (
        UsageHistory.objects.filter(operation="expire")
        .values("allocation_id")
        .annotate(rows=Count("id"))
    )
    assert max(row["rows"] for row in per_allocation) > 1
