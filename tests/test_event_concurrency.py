"""Events under concurrency, with real commits (DESIGN §7a, P4).

(a) Many threads allocate one unit at a time past 80 % and 100 % of one team, then
    release everything: exactly one crossing per threshold and one ``back_under``
    per threshold, because the engine decides each edge under the team row's lock,
    in the transaction that moves usage across it.
(b) A transaction that wrote an event commits after another one that wrote later:
    the event ids still follow the commit order, so a reader that remembers the
    last id it saw misses nothing.
(c) Writers and a reader polling ``after=<last id>`` at once: the reader gets every
    event exactly once.

(a) and (b) also run against deliberately broken variants that must fail: a
level-triggered check made outside the transaction (duplicates), and ids taken when
an event is written rather than when it commits (a missed event).
"""

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction

from allocations import services
from allocations.exceptions import QuotaExceeded
from quotas import services as quota_services
from quotas.events.models import Event
from quotas.events.selectors import event_list
from quotas.events.services import quota_event, record_events
from quotas.models import EntityType
from tests import broken
from tests.concurrency import run_in_threads
from tests.factories import QuotaFactory
from tests.helpers import assert_p1, assert_p2

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

D = Decimal
THREADS = 16


def _team(alert_thresholds=None):
    org = QuotaFactory(entity_id="acme", limit_value=D(100000))
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="research",
        parent=org,
        limit_value=D(100),
        alert_thresholds=alert_thresholds,
    )
    for index in range(THREADS):
        QuotaFactory(
            entity_type=EntityType.USER,
            entity_id=f"u{index}",
            parent=team,
            limit_value=D(100),
            alert_thresholds=[],
        )
    return team


def _fill_then_drain(team, after_each=None):
    """Every thread allocates 1 until the team is full, then releases all."""
    filled = threading.Barrier(THREADS)

    def work(index):
        held = []
        while True:
            try:
                held.append(
                    services.allocation_create(
                        entity_type="user",
                        entity_id=f"u{index}",
                        resource_type="concurrent_gpus",
                        job_id=uuid.uuid4(),
                        requested_value=D(1),
                    ).allocation
                )
            except QuotaExceeded:
                break
            if after_each:
                after_each()
        filled.wait(timeout=60)
        for allocation in held:
            services.allocation_release(allocation_id=allocation.id)
            if after_each:
                after_each()
        return len(held)

    return run_in_threads(THREADS, work)


def _edges(team) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for event in Event.objects.filter(quota_id=team.id).exclude(type="quota.changed"):
        key = (event.type, int(event.data["threshold"]))
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_a_many_threads_crossing_thresholds_raise_one_event_per_edge():
    team = _team()
    held = _fill_then_drain(team)

    assert all(isinstance(count, int) for count in held), held
    assert sum(held) == 100
    assert _edges(team) == {
        ("quota.threshold_crossed", 80): 1,
        ("quota.threshold_crossed", 100): 1,
        ("quota.back_under", 80): 1,
        ("quota.back_under", 100): 1,
    }
    crossed = Event.objects.filter(type="quota.threshold_crossed").order_by("id")
    assert [event.data["used"] for event in crossed] == [80, 100]
    assert_p1()
    assert_p2()


def test_a_broken_level_triggered_check_outside_the_transaction_duplicates():
    # The engine's own alerts are off for the team; the broken check does it.
    team = _team(alert_thresholds=[])
    _fill_then_drain(
        team, after_each=lambda: broken.alert_level_triggered(quota_id=team.id)
    )

    edges = _edges(team)
    assert (
        edges.get(("quota.threshold_crossed", 80), 0) != 1
        or edges.get(("quota.threshold_crossed", 100), 0) != 1
    ), edges


# --- (b) ids follow the commit order ---------------------------------------------


def _write_in_two_transactions(write):
    """T1 writes an event and waits; T2 writes one and commits; a reader reads the
    feed; then T1 commits and the reader asks for what came after."""
    first, second = (
        QuotaFactory(entity_id=name, limit_value=D(1)) for name in ("one", "two")
    )
    wrote, release = threading.Event(), threading.Event()

    def slow(_):
        with transaction.atomic():
            write(quota_event("quota.changed", first, action="update"))
            wrote.set()
            assert release.wait(timeout=30)
        return "committed"

    results = []
    thread = threading.Thread(target=lambda: results.append(_run_closing(slow)))
    thread.start()
    assert wrote.wait(timeout=30)
    with transaction.atomic():
        write(quota_event("quota.changed", second, action="update"))
    seen = [event.id for event in event_list()]
    release.set()
    thread.join(timeout=30)
    assert results == ["committed"]
    later = [event.id for event in event_list(after=max(seen))]
    return seen, later


def _run_closing(work):
    try:
        return work(None)
    finally:
        connection.close()


def _write(event):
    record_events([event])


def test_b_an_event_committed_late_comes_after_the_last_id_a_reader_saw():
    seen, later = _write_in_two_transactions(_write)

    assert len(seen) == 1 and len(later) == 1
    assert Event.objects.count() == 2
    assert sorted(Event.objects.values_list("id", flat=True)) == seen + later


def test_b_broken_ids_taken_at_write_lose_the_late_commit():
    seen, later = _write_in_two_transactions(broken.record_event_numbered_at_insert)

    assert Event.objects.count() == 2
    assert later == [], "the reader should have missed the late commit"


# --- (c) a reader polling while writers write ------------------------------------


def test_c_a_polling_reader_gets_every_event_exactly_once():
    writers = THREADS - 1
    quotas = [
        QuotaFactory(entity_id=f"org-{index}", limit_value=D(10))
        for index in range(writers)
    ]
    done = threading.Event()
    all_written = threading.Barrier(writers, action=done.set)

    def work(index):
        if index == writers:  # the reader
            got, last = [], 0
            while True:
                finished = done.is_set()
                page = [event.id for event in event_list(after=last)[:50]]
                got += page
                last = page[-1] if page else last
                if finished and not page:
                    return got
        for step in range(10):
            quota_services.quota_update(
                quota_id=quotas[index].id, changes={"limit_value": D(11 + step)}
            )
        all_written.wait(timeout=60)
        return None

    results = run_in_threads(THREADS, work)

    got = results[writers]
    assert isinstance(got, list), got
    every = list(Event.objects.order_by("id").values_list("id", flat=True))
    assert len(every) == writers * 10
    assert got == every
