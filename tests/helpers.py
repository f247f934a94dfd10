"""Plain helpers shared by the test modules (fixtures live in ``conftest.py``).

Where modules need different values (an amount, a lease, a limit), the helpers take
them as arguments without a default, so every call site says which it uses; the one
default kept, ``allocation_body``'s 10, is what most modules send, and the others
pass theirs at the call site.
"""

import io
import json
import re
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote
from uuid import uuid4

from django.core.management import call_command
from django.db import connection
from django.db.models import F
from rest_framework.test import APIClient

from allocations import services as allocation_services
from allocations.models import Allocation, UsageHistory
from allocations.records import AllocationRecord
from allocations.selectors import orphan_allocations, usage_drift
from quotas.access.keys import api_key_create
from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory

QUOTAS = "/api/v1/quotas"
ALLOCATIONS = "/api/v1/allocations"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
LINK_NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')

# The fields of a quota on the wire (the API's answers add ``effective_limit``).
QUOTA_WIRE_FIELDS = {
    "id",
    "entity_type",
    "entity_id",
    "parent_id",
    "resource_type",
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
    # Budgets (DESIGN §3a): on every quota, at their defaults on a concurrent one.
    "period",
    "carryover_limit",
    # Alerts (DESIGN §7a): null means the server's ALERT_THRESHOLDS.
    "alert_thresholds",
    "period_start",
    "period_end",
    "reserved",
    "consumed",
    "carried_over",
    "used",
    "available",
    "version",
    "created_at",
    "updated_at",
}
# One level of the path in an allocate or check answer.
LEVEL_FIELDS = {
    "quota_id",
    "entity_type",
    "entity_id",
    "cap",
    "used",
    "available",
    "allowed",
}
# GET /api/v1/quotas/{id}/usage.
USAGE_FIELDS = {
    "quota_id",
    "entity_type",
    "entity_id",
    "resource_type",
    "limit",
    "effective_limit",
    "usage",
    "available",
    "utilization_percent",
    "reserved",
    "consumed",
    "carried_over",
    "period",
    "period_start",
    "period_end",
    "projected_exhaustion",
}


# --- API clients ----------------------------------------------------------------------


def client_with_key(raw_key: str, **options) -> APIClient:
    """An API client that sends ``raw_key``; ``options`` go to ``APIClient``."""
    client = APIClient(**options)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


def client_for_role(
    role: str, *, name: str, scope: Quota | str | None = None, **options
):
    """An API client with a new key of ``role``, scoped to ``scope`` if given: an
    entity (``team:research``) or a quota, meaning that quota's entity."""
    if isinstance(scope, Quota):
        scope = str(scope.id)
    _, raw_key = api_key_create(name=name, role=role, scope=scope)
    return client_with_key(raw_key, **options)


# --- Requests -------------------------------------------------------------------------


def org_body(entity_id: str, limit_value, **fields) -> dict:
    """A request body for a root organization quota on concurrent_gpus."""
    return {
        "entity_type": "organization",
        "entity_id": entity_id,
        "resource_type": "concurrent_gpus",
        "limit_value": limit_value,
        **fields,
    }


def quota_url(quota_id) -> str:
    """The URL of one quota in the API."""
    return f"{QUOTAS}/{quota_id}"


def admin_limits_form(limit_value: str, **fields) -> dict:
    """The limit fields of the admin's quota form, with only ``limit_value`` set
    (and any other ``fields``: a reason, force, the identity of a new quota)."""
    return {
        "limit_value": limit_value,
        "soft_limit": "",
        "burst_limit": "",
        "overcommit_ratio": "1",
        **fields,
    }


# --- Answers --------------------------------------------------------------------------


def exact(response) -> dict:
    """The response body with JSON numbers read exactly (never as binary floats)."""
    return json.loads(response.content, parse_float=Decimal)


def assert_error(response, status: int, kind: str) -> dict:
    """The response is the JSON error body ``{"error": kind, "message": ...}``."""
    assert response.status_code == status, response.content
    body = exact(response)
    assert body["error"] == kind
    assert body["message"]
    return body


def assert_invalid(response, *fields: str) -> dict:
    """A 400 ``invalid_input`` naming each of ``fields``."""
    body = assert_error(response, 400, "invalid_input")
    for field in fields:
        assert field in body["fields"]
        assert body["fields"][field]
    return body


def row_ids(response) -> list[str]:
    """The ids of a 200 list answer, in order."""
    assert response.status_code == 200, response.content
    assert isinstance(response.json(), list)
    return [row["id"] for row in response.json()]


def next_link(response) -> str | None:
    """The URL of the RFC 8288 ``Link: <url>; rel="next"`` header, if any."""
    header = response.headers.get("Link")
    if header is None:
        return None
    match = LINK_NEXT.match(header)
    assert match, f"malformed Link header: {header!r}"
    return match["url"]


def walk(client, url: str) -> list[list[str]]:
    """Follow the ``Link`` headers from ``url``; return the ids of every page."""
    pages = []
    while url is not None:
        response = client.get(url)
        pages.append(row_ids(response))
        url = next_link(response)
        assert len(pages) < 100, "paging does not terminate"
    return pages


def resolve(schema: dict, node: dict) -> dict:
    """Follow ``$ref`` in an OpenAPI document until a schema itself."""
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = schema["components"]["schemas"][name]
    return node


# --- Allocations over HTTP ------------------------------------------------------------


def allocation_body(**overrides) -> dict:
    """An allocate request: 10 concurrent_gpus for user alice, with a new job id."""
    body = {
        "entity_type": "user",
        "entity_id": "alice",
        "job_id": str(uuid4()),
        "resource_type": "concurrent_gpus",
        "requested_value": 10,
    }
    body.update(overrides)
    return body


def allocate(client, **overrides):
    """POST /api/v1/allocations with ``allocation_body(**overrides)``: the answer."""
    return client.post(ALLOCATIONS, allocation_body(**overrides), format="json")


def allocate_ok(client, **overrides) -> dict:
    """An allocation that must be granted (201): its body."""
    response = allocate(client, **overrides)
    assert response.status_code == 201, response.content
    return response.json()


def release(client, allocation_id):
    """DELETE /api/v1/allocations/{id}: the answer."""
    return client.delete(f"{ALLOCATIONS}/{allocation_id}")


def release_ok(client, allocation_id) -> dict:
    """A release that must succeed (200): its body."""
    response = release(client, allocation_id)
    assert response.status_code == 200, response.content
    return response.json()


# --- Allocations through the engine ---------------------------------------------------


def allocate_direct(
    *,
    amount: str | Decimal,
    entity_id: str = "alice",
    entity_type: str = EntityType.USER,
    resource_type: str = "concurrent_gpus",
    **options,
) -> AllocationRecord:
    """Allocate through ``allocations.services``, so every level's books are real;
    ``options`` (``ttl_seconds``, ...) go to ``allocation_create``."""
    return allocation_services.allocation_create(
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type=resource_type,
        job_id=uuid4(),
        requested_value=Decimal(amount),
        **options,
    ).allocation


def allocate_on(quota: Quota, amount: str | Decimal, **options) -> AllocationRecord:
    """``allocate_direct`` on ``quota``'s own entity and resource type."""
    return allocate_direct(
        amount=amount,
        entity_id=quota.entity_id,
        entity_type=quota.entity_type,
        resource_type=quota.resource_type_id,
        **options,
    )


def expire(allocation_id) -> None:
    """Test state: the lease ran out an hour ago; the sweeper's service expires it."""
    Allocation.objects.filter(id=allocation_id).update(
        expires_at=F("allocated_at") - timedelta(hours=1)
    )
    allocation_services.allocation_expire(allocation_id=allocation_id)


# --- Stored state ---------------------------------------------------------------------


def books() -> dict:
    """Every stored row the allocation engine writes, to compare before and after."""
    return {
        "quotas": list(Quota.objects.order_by("id").values()),
        "allocations": list(Allocation.objects.order_by("id").values()),
        "history": list(UsageHistory.objects.order_by("id").values()),
    }


def assert_books_unchanged(before: dict) -> None:
    """No quota, allocation or history row differs from ``before`` (``books()``)."""
    after = books()
    assert [(row["id"], row["used"]) for row in after["quotas"]] == [
        (row["id"], row["used"]) for row in before["quotas"]
    ]
    assert len(after["allocations"]) == len(before["allocations"])
    assert len(after["history"]) == len(before["history"])
    assert after == before


def used_of(*quotas: Quota) -> list[Decimal]:
    """Each quota's stored ``used``, read again."""
    return [Quota.objects.get(id=quota.id).used for quota in quotas]


def quota_row(quota: Quota) -> dict:
    """Every stored column of the quota, to show that a refused change changed none."""
    return Quota.objects.values().get(id=quota.id)


def set_fields(quota: Quota, **values) -> None:
    """Test state: columns set on the row directly, within the model's constraints."""
    Quota.objects.filter(id=quota.id).update(**values)


def set_used(quota: Quota, used) -> None:
    """Test state: usage set on the row directly, without allocations (as held:
    ``used`` is reserved + consumed, kept by the database)."""
    set_fields(quota, reserved=Decimal(used), consumed=Decimal(0))


def database_now():
    """The database clock (in a test's transaction: when the transaction began)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def assert_p1() -> None:
    """P1: no level is above its cap."""
    over = [q for q in Quota.objects.all() if q.used > q.effective_limit]
    assert over == [], f"levels above their cap: {over}"


def assert_p2() -> None:
    """P2: every level's ``used`` equals the active allocations in its subtree."""
    assert usage_drift() == []
    assert orphan_allocations() == []


def mixed_tree() -> tuple[Quota, list[Quota], list[Quota]]:
    """org (100 x 1.5) → two teams (60 x 2) → two users each (30 x 3), concurrent_gpus:
    overcommit at every level, for mixed traffic. Returns (org, teams, users)."""
    org = QuotaFactory(
        entity_id="org", limit_value=Decimal("100"), overcommit_ratio=Decimal("1.5")
    )
    teams, users = [], []
    for t in range(2):
        team = TeamQuotaFactory(
            entity_id=f"team-{t}",
            parent=org,
            limit_value=Decimal("60"),
            overcommit_ratio=Decimal("2"),
        )
        teams.append(team)
        users += [
            UserQuotaFactory(
                entity_id=f"user-{t}-{u}",
                parent=team,
                limit_value=Decimal("30"),
                overcommit_ratio=Decimal("3"),
            )
            for u in range(2)
        ]
    return org, teams, users


# --- Management commands --------------------------------------------------------------


def database_url() -> str:
    """The test database as a DATABASE_URL for a child process (HOST may be a
    socket directory, which goes percent-encoded in the host part)."""
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return (
        f"postgres://{quote(db['USER'] or '', safe='')}{password}"
        f"@{quote(db['HOST'] or '', safe='')}{port}/{quote(db['NAME'], safe='')}"
    )


def run_command(name: str, *args: str, stderr=None) -> tuple[int, str, str]:
    """Run a management command as ``manage.py`` would: its exit code (0, or what it
    gave ``SystemExit``), its stdout and its stderr (written to ``stderr`` if given)."""
    out, err = io.StringIO(), stderr or io.StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()
