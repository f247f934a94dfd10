"""manage.py deliver_webhooks and prune_events (DESIGN §7a), as processes too.

Deliveries go to a real receiver on 127.0.0.1 (tests/receiver.py) that verifies
every signature; the delivery processes run against the test database
(DATABASE_URL), with WEBHOOK_ALLOW_PRIVATE=true.
"""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError
from django.db import connection, transaction
from django.db.models.functions import Now

from quotas.events.delivery import deliveries_fan_out, webhooks_deliver
from quotas.events.endpoints import endpoint_create
from quotas.events.models import (
    DeliveryStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
)
from quotas.events.pruning import events_prune
from quotas.events.services import quota_event, record_events
from tests.concurrency import outcomes, run_in_threads
from tests.factories import QuotaFactory
from tests.helpers import database_url, run_command
from tests.receiver import Receiver

BASE_DIR = Path(__file__).resolve().parent.parent
EVENTS = 300
BROKEN_DELIVERER = (
    "import django; django.setup(); from tests import broken; "
    "print(f'sent {broken.webhooks_deliver_without_claims()}')"
)


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    running = Receiver()
    yield running
    running.stop()


def _endpoint(receiver):
    endpoint = endpoint_create(url=receiver.url)
    receiver.secret = endpoint.secret
    return endpoint


def _committed_events(count: int) -> list[int]:
    """``count`` events, committed (their public ids are given at the commit)."""
    quota = QuotaFactory(entity_id="acme")
    with transaction.atomic():
        record_events([quota_event("quota.changed", quota, n=n) for n in range(count)])
    return list(Event.objects.order_by("id").values_list("id", flat=True))


def _start(*command):
    return subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": database_url(),
            "WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )


def _wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- One pass, the loop ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_pass_delivers_and_says_what_it_did(receiver):
    _endpoint(receiver)
    ids = _committed_events(3)

    code, out, _ = run_command("deliver_webhooks")

    assert code == 0
    assert out == "delivered 3, failed 0, given up 0 (queued 3)\n"
    assert receiver.ids() == [str(i) for i in ids]
    assert receiver.unverified == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--interval", "0"], "argument --interval: must be a positive number, not 0"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, not 0"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(CommandError) as refused:
        run_command("deliver_webhooks", *args)
    assert message in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_the_loop_delivers_new_events_until_sigterm_stops_it(receiver):
    _endpoint(receiver)
    first = _committed_events(2)
    process = _start("manage.py", "deliver_webhooks", "--loop", "--interval", "0.1")
    try:
        _wait_for(lambda: len(receiver.ids()) == 2)
        with transaction.atomic():
            record_events([quota_event("quota.changed", QuotaFactory(), n=9)])
        _wait_for(lambda: len(receiver.ids()) == 3)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()

    assert process.returncode == 0, err
    assert receiver.ids()[:2] == [str(i) for i in first]
    assert len(set(receiver.ids())) == 3
    delivered = sum(int(m) for m in re.findall(r"^delivered (\d+)", out, re.M))
    assert delivered == 3


# --- Two delivery processes at once ---------------------------------------------------


def _two_deliverers_at_once(receiver, command, *, events, until=None):
    """``events`` committed events queued for one endpoint, and two OS processes
    delivering them, set off together: both start while the test holds a lock on
    the deliveries table that blocks their first read, which is let go once the
    database shows both waiting. ``until()`` says when to stop them (SIGTERM);
    without it they run to their end. Returns each one's output."""
    _endpoint(receiver)
    _committed_events(events)
    assert deliveries_fan_out() == events
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
        processes = [_start(*command), _start(*command)]

        def both_waiting():
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] == 2

        try:
            _wait_for(
                lambda: both_waiting() or any(p.poll() is not None for p in processes)
            )
        except AssertionError:
            for process in processes:
                process.kill()
            raise
        for process in processes:
            if process.poll() is not None:
                for other in processes:
                    other.kill()
                pytest.fail(f"a deliverer exited early: {process.communicate()}")
    try:
        if until is not None:
            _wait_for(until)
            for process in processes:
                process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    return [out for out, _ in outputs]


@pytest.mark.django_db(transaction=True)
def test_two_delivery_processes_deliver_each_event_exactly_once(receiver):
    def all_delivered():
        return (
            WebhookDelivery.objects.filter(status=DeliveryStatus.DELIVERED).count()
            == EVENTS
        )

    outputs = _two_deliverers_at_once(
        receiver,
        ["manage.py", "deliver_webhooks", "--loop", "--interval", "0.05"],
        events=EVENTS,
        until=all_delivered,
    )

    received = Counter(receiver.ids())
    assert len(received) == EVENTS
    assert set(received.values()) == {1}  # each exactly once
    assert receiver.unverified == []
    per_process = [
        sum(int(m) for m in re.findall(r"^delivered (\d+)", out, re.M))
        for out in outputs
    ]
    assert sum(per_process) == EVENTS
    assert all(count > 0 for count in per_process), per_process  # both worked
    assert WebhookAttempt.objects.count() == EVENTS
    assert set(WebhookAttempt.objects.values_list("attempt", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_two_broken_deliverers_without_claims_send_events_twice(receiver):
    outputs = _two_deliverers_at_once(receiver, ["-c", BROKEN_DELIVERER], events=EVENTS)

    received = Counter(receiver.ids())
    assert sum(int(out.split()[1]) for out in outputs) > EVENTS
    assert max(received.values()) > 1


# --- prune_events ---------------------------------------------------------------------


@pytest.fixture
def sequenced(db):
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


def _aged(receiver, *, days: int) -> list[int]:
    """Two events delivered (with their log), then dated ``days`` ago."""
    quota = QuotaFactory()
    before = max(Event.objects.values_list("id", flat=True), default=0)
    record_events([quota_event("quota.changed", quota, n=n) for n in range(2)])
    ids = list(Event.objects.filter(id__gt=before).values_list("id", flat=True))
    webhooks_deliver()
    Event.objects.filter(id__in=ids).update(occurred_at=Now() - timedelta(days=days))
    WebhookAttempt.objects.filter(event_id__in=ids).update(
        at=Now() - timedelta(days=days)
    )
    return ids


@pytest.mark.django_db
def test_prune_deletes_old_events_their_deliveries_and_log(receiver, sequenced):
    _endpoint(receiver)
    old = _aged(receiver, days=31)
    recent = _aged(receiver, days=29)

    assert run_command("prune_events", "--dry-run")[1] == (
        "would delete 2 events, 2 deliveries and 2 delivery log entries older "
        "than 30 days (dry run)\n"
    )
    code, out, _ = run_command("prune_events")

    assert code == 0
    assert out == (
        "deleted 2 events, 2 deliveries and 2 delivery log entries older than 30 days\n"
    )
    assert sorted(Event.objects.values_list("id", flat=True)) == sorted(recent)
    assert not WebhookDelivery.objects.filter(event__id__in=old).exists()
    assert not WebhookAttempt.objects.filter(event_id__in=old).exists()
    assert WebhookAttempt.objects.count() == 2
    assert run_command("prune_events")[1].startswith("deleted 0 events, 0 deliveries")


@pytest.mark.django_db
def test_prune_keeps_what_days_says(receiver, sequenced):
    _endpoint(receiver)
    _aged(receiver, days=10)

    assert run_command("prune_events", "--days", "11")[1].startswith("deleted 0")
    assert run_command("prune_events", "--days", "9")[1].startswith("deleted 2")


@pytest.mark.django_db(transaction=True)
def test_two_prunes_at_once_delete_everything_once_without_errors(receiver):
    _endpoint(receiver)
    _committed_events(200)
    deliveries_fan_out()
    Event.objects.update(occurred_at=Now() - timedelta(days=40))

    results = run_in_threads(2, lambda _: events_prune(days=30, batch_size=7))

    returned, _ = outcomes(results)
    assert len(returned) == 2
    assert sum(counts["events"] for counts in returned) == 200
    assert sum(counts["deliveries"] for counts in returned) == 200
    assert not Event.objects.exists()
    assert not WebhookDelivery.objects.exists()
