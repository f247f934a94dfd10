"""Every hot query uses an index on a populated database (DESIGN §8, issue #13).

The database gets a thousand quotas, twenty thousand allocations and sixty thousand
history rows (benchmarks/populate.py, the benchmark's ``--scale`` data, smaller),
then the planner's statistics. The statements behind each list endpoint's first
page and each read of one object are taken from real requests and explained; the
statements inside the engine's functions (allocate, check, release, a job's
admission and release) are explained by PostgreSQL's auto_explain as they run. No
plan may read a big table from end to end.
"""

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from allocations import services
from allocations.services import jobs
from benchmarks.populate import Size, populate
from quotas.models import Quota

pytestmark = pytest.mark.django_db

BIG_TABLES = {
    "quotas",
    "allocations",
    "usage_history",
    "events",
    "quota_changes",
    "budget_periods",
    "usage_repairs",
    "webhook_deliveries",
    "webhook_attempts",
}
SIZE = Size(
    organizations=10, teams=5, users=20, allocations=20_000, history_per_allocation=3
)


@pytest.fixture
def populated(db):
    populate(connection, SIZE, vacuum=False)
    return Quota.objects.filter(entity_type="user").order_by("entity_id").first()


def _scans(plan: dict):
    """(node type, relation) of every node of a JSON plan."""
    yield plan.get("Node Type"), plan.get("Relation Name")
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _full_scans(plan: dict) -> list[str]:
    return [
        relation
        for node, relation in _scans(plan)
        if node == "Seq Scan" and relation in BIG_TABLES
    ]


def _explain(sql: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
        return cursor.fetchone()[0][0]["Plan"]


def test_a_query_without_an_index_is_caught(populated):
    # The check can fail: an unindexed filter on a big table reads all of it.
    plan = _explain("SELECT * FROM allocations WHERE metadata ->> 'team' = 'x'")
    assert _full_scans(plan) == ["allocations"]


def test_the_database_is_populated(populated):
    assert Quota.objects.count() == SIZE.quotas
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM usage_history")
        assert cursor.fetchone()[0] == SIZE.allocations * SIZE.history_per_allocation


def test_every_read_endpoint_uses_indexes(populated, admin_client_api):
    user = populated
    allocation = user.allocations.first()
    urls = [
        "/api/v1/quotas",
        "/api/v1/quotas?entity_type=team",
        f"/api/v1/quotas?entity_id={user.entity_id}",
        f"/api/v1/quotas/{user.id}",
        f"/api/v1/quotas/{user.id}/usage",
        f"/api/v1/quotas/{user.id}/history",
        f"/api/v1/quotas/{user.parent_id}/history",
        f"/api/v1/quotas/{user.id}/allocations",
        f"/api/v1/quotas/{user.id}/allocations?status=all",
        f"/api/v1/quotas/{user.id}/audit",
        f"/api/v1/quotas/{user.id}/periods",
        "/api/v1/allocations",
        "/api/v1/allocations?status=active",
        f"/api/v1/allocations?entity_id={user.entity_id}",
        f"/api/v1/allocations/{allocation.id}",
        f"/api/v1/jobs/{allocation.job_id}",
        "/api/v1/events",
        "/api/v1/events?type=quota.changed",
    ]
    seen = {}
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            response = admin_client_api.get(url)
        assert response.status_code == 200, (url, response.content)
        for query in queries.captured_queries:
            sql = query["sql"]
            if sql.lstrip().upper().startswith("SELECT"):
                seen[sql] = url
    assert seen
    full = {
        url: scans for sql, url in seen.items() if (scans := _full_scans(_explain(sql)))
    }
    assert full == {}


@pytest.fixture
def auto_explain():
    """Every statement, nested ones included, explained to this session."""
    plans = []

    def collect(diagnostic):
        text = diagnostic.message_primary or ""
        start = text.find("{")
        if start >= 0:
            plans.append(json.loads(text[start:]))

    with connection.cursor() as cursor:
        try:
            cursor.execute("LOAD 'auto_explain'")
        except Exception:  # not a superuser, or the module is not there
            pytest.skip("auto_explain cannot be loaded on this server")
        for setting, value in (
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_nested_statements", "on"),
            ("auto_explain.log_format", "json"),
            ("auto_explain.log_level", "notice"),
            ("client_min_messages", "notice"),
        ):
            cursor.execute("SELECT set_config(%s, %s, false)", [setting, value])
    connection.connection.add_notice_handler(collect)
    yield plans
    connection.connection.remove_notice_handler(collect)
    with connection.cursor() as cursor:
        cursor.execute("SET auto_explain.log_min_duration = -1")
        cursor.execute("SET client_min_messages = warning")


def test_the_engines_statements_use_indexes(populated, auto_explain):
    user = populated
    common = {"entity_type": "user", "entity_id": user.entity_id}
    services.allocation_check(
        **common, resource_type="concurrent_gpus", requested_value=1
    )
    granted = services.allocation_create(
        **common,
        resource_type="concurrent_gpus",
        job_id=uuid.uuid4(),
        requested_value=1,
    ).allocation
    services.allocation_release(allocation_id=granted.id)
    job_id = uuid.uuid4()
    jobs.job_admit(**common, job_id=job_id, resources={"concurrent_gpus": 1})
    jobs.job_release(job_id=job_id)

    statements = " ".join(plan.get("Query Text", "") for plan in auto_explain)
    for statement in ("INSERT INTO allocations", "UPDATE quotas", "FROM quotas"):
        assert statement in statements
    full = [
        (plan.get("Query Text", "")[:120], scans)
        for plan in auto_explain
        if (scans := _full_scans(plan["Plan"]))
    ]
    assert full == []
