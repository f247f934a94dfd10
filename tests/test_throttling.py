"""Per-key write throttle counted in PostgreSQL (quotas/access/throttling.py)."""

import threading

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from allocations.models import Allocation
from horizon_quota.errors import InvalidInput
from quotas.access.keys import api_key_create
from quotas.access.throttling import count_write
from quotas.models import ApiKey, Quota
from tests.helpers import (
    ALLOCATIONS,
    QUOTAS,
    allocation_body,
    assert_books_unchanged,
    books,
    client_for_role,
    client_with_key,
    org_body,
)

# A window of about 31 years: no window boundary falls inside a test.
PERIOD = 10**9


def _client(role: str = "admin") -> APIClient:
    return client_for_role(role, name=f"throttle {role}", raise_request_exception=False)


def _create(client: APIClient, entity_id: str):
    return client.post(QUOTAS, org_body(entity_id, 10), format="json")


def _assert_rate_limited(response):
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["error"] == "rate_limited"
    assert body["error"] != "resource_exhausted"
    assert body["message"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    # The body repeats the header as an integer, for clients that read only it.
    assert body["retry_after"] == retry_after


def test_the_throttle_is_on_by_default_in_settings(settings):
    assert settings.API_WRITE_RATE == (6000, 60)
    # Scheduler keys: far above one scheduler's peak, still a stop for a runaway.
    assert settings.API_SCHEDULER_WRITE_RATE == (600000, 60)
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] == [
        "quotas.access.throttling.ApiKeyWriteThrottle"
    ]


def test_writes_past_the_limit_answer_429_rate_limited(db, settings):
    settings.API_WRITE_RATE = "3/min"
    client = _client()

    for number in range(3):
        assert _create(client, f"org-{number}").status_code == 201

    _assert_rate_limited(_create(client, "org-over"))
    assert not Quota.objects.filter(entity_id="org-over").exists()
    assert Quota.objects.count() == 3


def test_every_write_method_counts(db, settings, tree):
    settings.API_WRITE_RATE = "3/min"
    org, _, user = tree
    client = _client()

    assert (
        client.patch(f"{QUOTAS}/{org.id}", {"limit_value": 90}, format="json")
    ).status_code == 200
    assert (
        client.put(f"{QUOTAS}/{org.id}", {"limit_value": 95}, format="json")
    ).status_code == 200
    assert client.delete(f"{QUOTAS}/{user.id}").status_code == 204

    _assert_rate_limited(
        client.patch(f"{QUOTAS}/{org.id}", {"limit_value": 1}, format="json")
    )
    org.refresh_from_db()
    assert org.limit_value == 95


def test_reads_are_never_throttled(db, settings, tree):
    settings.API_WRITE_RATE = "1/min"
    org, _, _ = tree
    client = _client()
    assert _create(client, "org-a").status_code == 201
    _assert_rate_limited(_create(client, "org-b"))

    for _ in range(5):
        assert client.get(QUOTAS).status_code == 200
        assert client.get(f"{QUOTAS}/{org.id}").status_code == 200
        assert client.get(f"{QUOTAS}/{org.id}/usage").status_code == 200


def test_the_limit_is_per_key_and_keys_are_independent(db, settings):
    settings.API_WRITE_RATE = "2/min"
    first, second = _client(), _client()

    assert _create(first, "first-1").status_code == 201
    assert _create(first, "first-2").status_code == 201
    _assert_rate_limited(_create(first, "first-3"))

    assert _create(second, "second-1").status_code == 201
    assert _create(second, "second-2").status_code == 201
    _assert_rate_limited(_create(second, "second-3"))
    _assert_rate_limited(_create(first, "first-4"))


def test_refused_writes_are_not_counted(db, settings):
    settings.API_WRITE_RATE = "1/min"
    viewer = _client("viewer")
    for number in range(3):
        assert _create(viewer, f"viewer-{number}").status_code == 403


def test_off_disables_the_throttle(db, settings):
    settings.API_WRITE_RATE = None
    client = _client()
    for number in range(5):
        assert _create(client, f"org-{number}").status_code == 201
    key = ApiKey.objects.get(name="throttle admin")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rate_limits WHERE key_id = %s", [key.pk])
        assert cursor.fetchone()[0] == 0


def test_past_windows_are_deleted_by_the_next_write(db):
    key_id = 10**15
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rate_limits (key_id, window_start, count) "
            "VALUES (%s, 0, 7), (%s, 60, 9)",
            [key_id, key_id],
        )
    count, remaining = count_write(key_id, 60)
    assert count == 1
    assert 0 < remaining <= 60
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rate_limits WHERE key_id = %s", [key_id])
        assert cursor.fetchone()[0] == 1


@pytest.mark.django_db(transaction=True)
def test_the_count_is_shared_by_separate_database_connections():
    """Two threads, each with its own connection (as two worker processes would
    have), count into their own rows; every call of one sees the other's committed
    calls, and no increment is lost."""
    key_id = 10**15 + 1
    per_thread = 25
    counts = {0: [], 1: []}
    errors = []
    barrier = threading.Barrier(2)

    def work(index):
        try:
            barrier.wait()
            for _ in range(per_thread):
                counts[index].append(count_write(key_id, PERIOD)[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    for seen in counts.values():
        # Each connection's calls count up, and include the other's so far.
        assert seen == sorted(seen) and len(set(seen)) == per_thread
    assert max(counts[0] + counts[1]) >= per_thread + 1
    # One more call, from a third connection, sees all fifty.
    assert count_write(key_id, PERIOD)[0] == 2 * per_thread + 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(count) FROM rate_limits WHERE key_id = %s", [key_id])
        assert cursor.fetchone()[0] == 2 * per_thread + 1
        cursor.execute("DELETE FROM rate_limits WHERE key_id = %s", [key_id])


# --- Counted in the engine's statement (issue #13) ---------------------------------


def _allocate(client, **overrides):
    return client.post(ALLOCATIONS, allocation_body(**overrides), format="json")


def test_an_allocation_and_its_count_are_one_statement(db, settings, tree):
    settings.API_SCHEDULER_WRITE_RATE = "100/min"
    settings.API_KEY_CACHE_SECONDS = 60
    client = _client("scheduler")
    # The key's first use is looked up and stamped; later calls find it cached.
    assert client.get(QUOTAS).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = _allocate(client, requested_value=1)
    assert response.status_code == 201, response.content
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 1, statements
    assert "rate_limits" in statements[0] and "hq_allocate" in statements[0]


def test_an_allocation_over_the_limit_is_refused_and_writes_nothing(db, settings, tree):
    settings.API_SCHEDULER_WRITE_RATE = "2/min"
    client = _client("scheduler")
    assert _allocate(client, requested_value=1).status_code == 201
    assert _allocate(client, requested_value=1).status_code == 201
    before = books()

    _assert_rate_limited(_allocate(client, requested_value=1))
    assert_books_unchanged(before)
    # Releasing and admitting count the same way.
    allocation_id = Allocation.objects.first().id
    _assert_rate_limited(client.delete(f"{ALLOCATIONS}/{allocation_id}"))
    assert Allocation.objects.get(id=allocation_id).status == "active"


def test_a_write_that_never_reaches_the_engine_is_counted_after_its_answer(
    db, settings, tree
):
    settings.API_SCHEDULER_WRITE_RATE = "2/min"
    client = _client("scheduler")
    assert _allocate(client, requested_value=0).status_code == 400  # counted: 1
    assert (
        _allocate(client, entity_id="nobody", requested_value=1).status_code == 404
    )  # counted: 2
    _assert_rate_limited(_allocate(client, requested_value=1))


def _counted(key_id) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(count), 0) FROM rate_limits WHERE key_id = %s",
            [key_id],
        )
        return cursor.fetchone()[0]


def test_a_high_limit_is_counted_in_batches(db, settings, tree):
    # 5,000 a minute: a batch of 5 (limit // 1000), so one counting statement per
    # five writes, added in the engine's statement with the write that fills it.
    settings.API_SCHEDULER_WRITE_RATE = "5000/min"
    client = _client("scheduler")
    key = ApiKey.objects.get(name="throttle scheduler")
    counting = []
    for number in range(12):
        with CaptureQueriesContext(connection) as queries:
            assert _allocate(client, requested_value=1).status_code == 201
        if any("rate_limits" in q["sql"] for q in queries.captured_queries):
            counting.append(number + 1)
    assert counting == [5, 10]
    assert _counted(key.pk) == 10


def test_a_key_over_its_limit_is_refused_here_without_asking_again(db, settings, tree):
    settings.API_SCHEDULER_WRITE_RATE = "5000/min"
    client = _client("scheduler")
    key = ApiKey.objects.get(name="throttle scheduler")
    # Other processes have used the whole window already.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rate_limits (key_id, window_start, shard, count) "
            "SELECT %s, floor(extract(epoch FROM clock_timestamp()) / 60) * 60, "
            "-1, 5000",
            [key.pk],
        )
    # The first four are within this process's batch; the fifth is counted, over.
    for _ in range(4):
        assert _allocate(client, requested_value=1).status_code == 201
    before = books()
    _assert_rate_limited(_allocate(client, requested_value=1))
    with CaptureQueriesContext(connection) as queries:
        _assert_rate_limited(_allocate(client, requested_value=1))
    assert not any("rate_limits" in q["sql"] for q in queries.captured_queries)
    assert_books_unchanged(before)


def test_a_limit_below_two_thousand_is_counted_write_by_write(db, settings, tree):
    settings.API_SCHEDULER_WRITE_RATE = "1999/min"
    client = _client("scheduler")
    key = ApiKey.objects.get(name="throttle scheduler")
    for number in range(3):
        assert _allocate(client, requested_value=1).status_code == 201
        assert _counted(key.pk) == number + 1


def test_a_keys_own_write_rate_overrides_its_roles(db, settings, tree):
    settings.API_SCHEDULER_WRITE_RATE = "1000/min"
    key, raw = api_key_create(name="slow", role="scheduler", write_rate="1/MIN")
    assert key.write_rate == "1/min"
    client = client_with_key(raw, raise_request_exception=False)
    assert _allocate(client, requested_value=1).status_code == 201
    _assert_rate_limited(_allocate(client, requested_value=1))

    _, unlimited = api_key_create(name="fast", role="admin", write_rate="off")
    settings.API_WRITE_RATE = "1/min"
    fast = client_with_key(unlimited)
    for number in range(3):
        assert _create(fast, f"fast-{number}").status_code == 201


@pytest.mark.parametrize("rate", ["fast", "1/fortnight", "-1/s", "0/s", "1e3/min"])
def test_an_invalid_write_rate_is_refused(db, rate):
    with pytest.raises(InvalidInput) as refused:
        api_key_create(name="k", role="scheduler", write_rate=rate)
    assert "write_rate" in refused.value.fields
    assert not ApiKey.objects.filter(name="k").exists()


# --- Counting never waits for another session (issue #13) ---------------------------


def _counting_blocks_while_another_session_holds_its_count(shard_sql: str) -> bool:
    """Session A counts a write of a key inside an open transaction (as the engine's
    statement does) and holds it; session B counts a write of the same key. True if
    B had to wait (it gives up after 300 ms)."""
    key_id = 10**15 + 7
    holding, done = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(shard_sql.replace("%(key)s", str(key_id)))
                holding.set()
                done.wait(timeout=10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(timeout=10)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '300ms'")
            cursor.execute(shard_sql.replace("%(key)s", str(key_id)))
        return False
    except OperationalError:
        return True
    finally:
        done.set()
        holder.join()
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM rate_limits WHERE key_id = %s", [key_id])


_PER_SESSION = (
    "INSERT INTO rate_limits AS r (key_id, window_start, shard, count) "
    "VALUES (%(key)s, 0, pg_backend_pid(), 1) "
    "ON CONFLICT (key_id, window_start, shard) DO UPDATE SET count = r.count + 1"
)
# The broken twin: one row per key and window, as before issue #13.
_ONE_ROW = _PER_SESSION.replace("pg_backend_pid()", "0")


@pytest.mark.django_db(transaction=True)
def test_counting_never_waits_for_another_sessions_open_count():
    assert not _counting_blocks_while_another_session_holds_its_count(_PER_SESSION)


@pytest.mark.django_db(transaction=True)
def test_broken_one_row_per_key_makes_every_call_of_the_key_wait():
    assert _counting_blocks_while_another_session_holds_its_count(_ONE_ROW)
