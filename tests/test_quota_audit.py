"""The audit trail of quota changes: who changed what, when and why
(DESIGN §5 `GET /quotas/{id}/audit`).

Every create, update and delete, through the API or the admin, appends one row in the
transaction that makes the change; refused changes and no-op updates append none.
"""

import json
import re
from decimal import Decimal

import pytest
from django.db import DatabaseError, transaction

from quotas import services
from quotas.access import keys
from quotas.models import REASON_MAX_LENGTH, EntityType, Quota, QuotaChange
from tests.concurrency import outcomes, run_in_threads
from tests.factories import QuotaFactory
from tests.helpers import (
    UNKNOWN_ID,
    admin_limits_form,
    client_with_key,
    next_link,
    quota_row,
    quota_url,
    resolve,
)


def _client_with_key(name: str, role: str):
    key, raw_key = keys.api_key_create(name=name, role=role)
    return client_with_key(raw_key), key


@pytest.fixture
def ops(db):
    """An admin client whose key is named, so the trail can be checked against it."""
    return _client_with_key("ops-console", "admin")


def _audit_url(quota_id) -> str:
    return f"/api/v1/quotas/{quota_id}/audit"


def _reason(text: str) -> dict:
    return {"HTTP_X_CHANGE_REASON": text}


def _team_body(parent, **overrides) -> dict:
    body = {
        "entity_type": "team",
        "entity_id": "research",
        "resource_type": "concurrent_gpus",
        "parent_id": str(parent.id),
        "limit_value": "40",
    }
    body.update(overrides)
    return body


# --- Recording through the API -------------------------------------------------------


def test_creating_a_quota_records_the_key_the_new_values_and_the_reason(ops):
    client, key = ops
    org = QuotaFactory(limit_value=Decimal("100"))

    response = client.post(
        "/api/v1/quotas",
        _team_body(org, soft_limit="30.5"),
        format="json",
        **_reason("New team for OPS-1234"),
    )

    assert response.status_code == 201
    quota_id = response.json()["id"]
    change = QuotaChange.objects.get(quota_id=quota_id)
    assert change.action == "create"
    assert (change.actor_type, change.actor_id, change.actor_name) == (
        "api_key",
        str(key.id),
        "ops-console",
    )
    assert change.reason == "New team for OPS-1234"
    assert (change.entity_type, change.entity_id, change.resource_type) == (
        "team",
        "research",
        "concurrent_gpus",
    )
    assert change.changes == {
        "entity_type": [None, "team"],
        "entity_id": [None, "research"],
        "resource_type": [None, "concurrent_gpus"],
        "parent_id": [None, str(org.id)],
        "limit_value": [None, "40"],
        "soft_limit": [None, "30.5"],
        "overcommit_ratio": [None, "1"],
    }
    # Only real changes: the burst limit it leaves empty is no [null, null].
    assert "burst_limit" not in change.changes
    created_at = Quota.objects.get(id=quota_id).created_at
    assert created_at <= change.created_at


def test_updating_records_each_changed_field_old_and_new_as_exact_strings(ops, tree):
    client, key = ops
    org, team, user = tree
    Quota.objects.filter(id=team.id).update(burst_limit=Decimal("80"))

    response = client.patch(
        quota_url(team.id),
        {"limit_value": "70.25", "burst_limit": None, "soft_limit": None},
        format="json",
        **_reason("Q4 training push"),
    )

    assert response.status_code == 200
    change = QuotaChange.objects.get(quota_id=team.id)
    assert change.action == "update"
    assert change.actor_id == str(key.id)
    assert change.actor_name == "ops-console"
    assert change.reason == "Q4 training push"
    # soft_limit was already empty: it did not change and is not listed.
    assert change.changes == {
        "limit_value": ["60", "70.25"],
        "burst_limit": ["80", None],
    }


def test_put_records_like_patch(ops, tree):
    client, _ = ops
    org, team, user = tree

    response = client.put(
        quota_url(user.id), {"overcommit_ratio": "1.5"}, format="json"
    )

    assert response.status_code == 200
    change = QuotaChange.objects.get(quota_id=user.id)
    assert change.changes == {"overcommit_ratio": ["1", "1.5"]}
    assert change.reason == ""


def test_deleting_records_the_last_values_and_the_trail_is_still_served(ops, tree):
    client, key = ops
    org, team, user = tree

    response = client.delete(quota_url(user.id), **_reason("alice left"))

    assert response.status_code == 204
    assert not Quota.objects.filter(id=user.id).exists()
    audit = client.get(_audit_url(user.id))
    assert audit.status_code == 200
    [entry] = audit.json()
    assert entry["action"] == "delete"
    assert entry["quota_id"] == str(user.id)
    assert (entry["entity_type"], entry["entity_id"]) == ("user", "alice")
    assert entry["resource_type"] == "concurrent_gpus"
    assert (entry["actor_type"], entry["actor_id"], entry["actor_name"]) == (
        "api_key",
        str(key.id),
        "ops-console",
    )
    assert entry["reason"] == "alice left"
    assert entry["changes"]["limit_value"] == ["30", None]
    assert entry["changes"]["parent_id"] == [str(team.id), None]
    assert entry["created_at"].endswith("Z")


def test_the_trail_of_a_deleted_quota_keeps_its_whole_story(ops, db):
    client, _ = ops
    created = client.post(
        "/api/v1/quotas",
        {
            "entity_type": "organization",
            "entity_id": "acme",
            "resource_type": "concurrent_gpus",
            "limit_value": 10,
        },
        format="json",
    )
    quota_id = created.json()["id"]
    client.patch(quota_url(quota_id), {"limit_value": 20}, format="json")
    client.delete(quota_url(quota_id))

    response = client.get(_audit_url(quota_id))

    assert response.status_code == 200
    assert [entry["action"] for entry in response.json()] == [
        "delete",
        "update",
        "create",
    ]


def test_an_update_that_changes_nothing_records_nothing(ops, tree):
    client, _ = ops
    org, team, user = tree

    response = client.patch(
        quota_url(team.id),
        {"limit_value": "60.0000", "overcommit_ratio": 1, "soft_limit": None},
        format="json",
        **_reason("no-op"),
    )

    assert response.status_code == 200
    assert response.json()["version"] == team.version
    assert not QuotaChange.objects.exists()


def test_a_create_refused_by_the_hierarchy_records_nothing(ops, tree):
    client, _ = ops
    org, team, user = tree

    response = client.post(
        "/api/v1/quotas",
        _team_body(org, entity_id="platform", limit_value="150"),
        format="json",
        **_reason("too big"),
    )

    assert response.status_code == 400
    assert not Quota.objects.filter(entity_id="platform").exists()
    assert not QuotaChange.objects.exists()


def test_an_update_refused_by_the_hierarchy_records_nothing(ops, tree):
    client, _ = ops
    org, team, user = tree
    before = quota_row(team)

    raised = client.patch(
        quota_url(user.id), {"limit_value": 65}, format="json", **_reason("x")
    )
    lowered = client.patch(
        quota_url(team.id), {"limit_value": 20}, format="json", **_reason("x")
    )

    assert raised.status_code == 400
    assert lowered.status_code == 400
    assert quota_row(team) == before
    assert not QuotaChange.objects.exists()


def test_a_refused_delete_records_nothing(ops, tree):
    client, _ = ops
    org, team, user = tree

    response = client.delete(quota_url(team.id), **_reason("cleanup"))

    assert response.status_code == 409
    assert Quota.objects.filter(id=team.id).exists()
    assert not QuotaChange.objects.exists()


def test_a_key_without_write_access_changes_and_records_nothing(db, tree):
    org, team, user = tree
    viewer, _ = _client_with_key("dashboards", "viewer")

    response = viewer.patch(
        quota_url(team.id), {"limit_value": 70}, format="json", **_reason("x")
    )

    assert response.status_code == 403
    assert not QuotaChange.objects.exists()


# --- The X-Change-Reason header ------------------------------------------------------


def test_the_reason_is_trimmed_and_may_be_exactly_the_maximum(ops, tree):
    client, _ = ops
    org, team, user = tree
    longest = "r" * REASON_MAX_LENGTH

    trimmed = client.patch(
        quota_url(team.id), {"limit_value": 61}, format="json", **_reason("  why \t")
    )
    full = client.patch(
        quota_url(team.id), {"limit_value": 62}, format="json", **_reason(longest)
    )

    assert trimmed.status_code == 200
    assert full.status_code == 200
    reasons = list(
        QuotaChange.objects.filter(quota_id=team.id)
        .order_by("id")
        .values_list("reason", flat=True)
    )
    assert reasons == ["why", longest]


def test_a_utf8_reason_is_kept_as_sent(ops, tree):
    client, _ = ops
    org, team, user = tree
    # A WSGI server hands the header's UTF-8 bytes over decoded as ISO-8859-1.
    on_the_wire = "Erhöhung für Projekt Ω".encode().decode("latin-1")

    response = client.patch(
        quota_url(team.id), {"limit_value": 61}, format="json", **_reason(on_the_wire)
    )

    assert response.status_code == 200
    assert QuotaChange.objects.get().reason == "Erhöhung für Projekt Ω"


REFUSED_REASONS = {
    "too long": "r" * (REASON_MAX_LENGTH + 1),
    "newline": "line one\nline two",
    "escape": "\x1b[31mred",
    "nul": "a\x00b",
    "inner tab": "a\tb",
    "delete": "a\x7f",
    "c1 control": "a\x85b",
}


def _assert_reason_refused(response) -> None:
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_input"
    assert "X-Change-Reason" in body["message"]
    assert body["fields"]["X-Change-Reason"]


@pytest.mark.parametrize("reason", REFUSED_REASONS.values(), ids=REFUSED_REASONS)
def test_a_bad_reason_refuses_a_create(ops, tree, reason):
    client, _ = ops
    org, team, user = tree

    response = client.post(
        "/api/v1/quotas",
        _team_body(org, entity_id="platform", limit_value="10"),
        format="json",
        **_reason(reason),
    )

    _assert_reason_refused(response)
    assert not Quota.objects.filter(entity_id="platform").exists()
    assert not QuotaChange.objects.exists()


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("reason", REFUSED_REASONS.values(), ids=REFUSED_REASONS)
def test_a_bad_reason_refuses_an_update(ops, tree, reason, method):
    client, _ = ops
    org, team, user = tree
    before = quota_row(team)

    response = getattr(client, method)(
        quota_url(team.id), {"limit_value": 50}, format="json", **_reason(reason)
    )

    _assert_reason_refused(response)
    assert quota_row(team) == before
    assert not QuotaChange.objects.exists()


@pytest.mark.parametrize("reason", REFUSED_REASONS.values(), ids=REFUSED_REASONS)
def test_a_bad_reason_refuses_a_delete(ops, tree, reason):
    client, _ = ops
    org, team, user = tree

    response = client.delete(quota_url(user.id), **_reason(reason))

    _assert_reason_refused(response)
    assert Quota.objects.filter(id=user.id).exists()
    assert not QuotaChange.objects.exists()


def test_the_service_refuses_a_bad_reason_before_writing(tree):
    org, team, user = tree

    with pytest.raises(services.InvalidInput) as refused:
        services.quota_update(
            quota_id=team.id, changes={"limit_value": 50}, reason="a\nb"
        )

    assert "reason" in refused.value.fields
    team.refresh_from_db()
    assert team.limit_value == Decimal("60")
    assert not QuotaChange.objects.exists()


# --- Services called without an actor ------------------------------------------------


def test_services_called_without_an_actor_record_the_system(db):
    quota = services.quota_create(
        entity_type=EntityType.ORGANIZATION,
        entity_id="acme",
        resource_type="concurrent_gpus",
        limit_value=Decimal("10"),
    )
    services.quota_update(
        quota_id=quota.id,
        changes={"limit_value": Decimal("12")},
        actor=services.Actor.system("import_quotas"),
        reason="imported from hierarchy.yaml",
    )
    services.quota_delete(quota_id=quota.id)

    rows = list(
        QuotaChange.objects.filter(quota_id=quota.id)
        .order_by("id")
        .values_list("action", "actor_type", "actor_id", "actor_name", "reason")
    )
    assert rows == [
        ("create", "system", "", "system", ""),
        ("update", "system", "", "import_quotas", "imported from hierarchy.yaml"),
        ("delete", "system", "", "system", ""),
    ]


def test_a_change_rolled_back_takes_its_audit_row_with_it(tree):
    org, team, user = tree

    with pytest.raises(RuntimeError), transaction.atomic():
        services.quota_update(quota_id=team.id, changes={"limit_value": 50})
        raise RuntimeError("the caller's transaction fails after the change")

    team.refresh_from_db()
    assert team.limit_value == Decimal("60")
    assert not QuotaChange.objects.exists()


def test_the_database_refuses_to_rewrite_or_remove_audit_rows(tree):
    org, team, user = tree
    services.quota_update(quota_id=team.id, changes={"limit_value": 50}, reason="x")

    with pytest.raises(DatabaseError), transaction.atomic():
        QuotaChange.objects.update(reason="forged")
    with pytest.raises(DatabaseError), transaction.atomic():
        QuotaChange.objects.all().delete()

    assert QuotaChange.objects.get().reason == "x"


# --- GET /quotas/{id}/audit ----------------------------------------------------------


def test_the_audit_pages_newest_first_through_the_link_header(ops, tree):
    client, _ = ops
    org, team, user = tree
    for limit in range(41, 46):
        services.quota_update(quota_id=team.id, changes={"limit_value": limit})

    pages, url = [], f"{_audit_url(team.id)}?limit=2"
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        pages.append([entry["changes"]["limit_value"] for entry in response.json()])
        url = next_link(response)
        assert len(pages) < 10

    assert pages == [
        [["44", "45"], ["43", "44"]],
        [["42", "43"], ["41", "42"]],
        [["60", "41"]],
    ]


def test_changes_made_in_one_transaction_still_list_newest_first(ops, tree):
    client, _ = ops
    org, team, user = tree
    with transaction.atomic():
        services.quota_update(quota_id=team.id, changes={"limit_value": 50})
        services.quota_update(quota_id=team.id, changes={"limit_value": 55})

    response = client.get(_audit_url(team.id))

    assert [entry["changes"]["limit_value"] for entry in response.json()] == [
        ["50", "55"],
        ["60", "50"],
    ]


def test_the_audit_lists_only_the_quotas_own_changes(ops, tree):
    client, _ = ops
    org, team, user = tree
    services.quota_update(quota_id=user.id, changes={"limit_value": 20})
    services.quota_update(quota_id=team.id, changes={"limit_value": 50})

    response = client.get(_audit_url(team.id))

    assert [entry["quota_id"] for entry in response.json()] == [str(team.id)]


def test_an_unchanged_quota_has_an_empty_audit(ops, tree):
    client, _ = ops
    org, team, user = tree

    response = client.get(_audit_url(org.id))

    assert response.status_code == 200
    assert response.json() == []
    assert "Link" not in response.headers


def test_an_unknown_quota_has_no_audit(ops, db):
    client, _ = ops

    response = client.get(_audit_url(UNKNOWN_ID))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_forged_cursor_is_a_400(ops, tree):
    client, _ = ops
    org, team, user = tree

    response = client.get(_audit_url(team.id), {"cursor": "not-a-cursor!"})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"


def test_viewer_keys_can_read_the_audit(viewer_client, tree):
    org, team, user = tree
    services.quota_update(quota_id=team.id, changes={"limit_value": 50})

    response = viewer_client.get(_audit_url(team.id))

    assert response.status_code == 200
    assert len(response.json()) == 1


def test_the_audit_needs_a_key(api_client, tree):
    org, team, user = tree

    response = api_client.get(_audit_url(team.id))

    assert response.status_code == 401


def test_the_audit_stays_within_a_query_budget(
    viewer_client, tree, django_assert_max_num_queries
):
    org, team, user = tree
    for limit in range(1, 31):
        services.quota_update(quota_id=user.id, changes={"limit_value": limit})

    with django_assert_max_num_queries(4):
        response = viewer_client.get(_audit_url(user.id))

    assert len(response.json()) == 30


def test_the_audit_wire_format(ops, tree):
    client, key = ops
    org, team, user = tree
    client.patch(
        quota_url(team.id), {"limit_value": 61}, format="json", **_reason("why")
    )

    response = client.get(_audit_url(team.id))

    [entry] = json.loads(response.content)
    assert set(entry) == {
        "id",
        "quota_id",
        "entity_type",
        "entity_id",
        "resource_type",
        "action",
        "actor_type",
        "actor_id",
        "actor_name",
        "changes",
        "reason",
        "created_at",
    }
    assert entry["changes"] == {"limit_value": ["60", "61"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["created_at"])


# --- Concurrent changes --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.concurrency
def test_concurrent_updates_leave_a_trail_that_chains_old_to_new():
    """Each entry's old value is the previous entry's new one, even when the
    transactions began together and waited for the quota's lock in turn."""
    quota = QuotaFactory(limit_value=Decimal("1000"))
    threads = 12

    def update(index):
        return services.quota_update(
            quota_id=quota.id, changes={"limit_value": Decimal(index + 1)}
        )

    results = run_in_threads(threads, update)

    updated, _ = outcomes(results)  # every update went through
    assert len(updated) == threads
    assert all(isinstance(r, Quota) for r in updated), updated
    oldest_first = list(
        QuotaChange.objects.filter(quota_id=quota.id).order_by("created_at", "id")
    )
    assert len(oldest_first) == threads
    chain = [entry.changes["limit_value"] for entry in oldest_first]
    assert chain[0][0] == "1000"
    for previous, current in zip(chain, chain[1:], strict=False):
        assert current[0] == previous[1]
    quota.refresh_from_db()
    assert chain[-1][1] == f"{quota.limit_value.normalize():f}"


# --- The admin ------------------------------------------------------------------------


def test_the_admin_form_records_the_staff_user_and_reason_on_create(
    staff_client, staff, db
):
    org = QuotaFactory(limit_value=Decimal("100"))

    response = staff_client.post(
        "/admin/quotas/quota/add/",
        admin_limits_form(
            "40",
            entity_type="team",
            entity_id="research",
            resource_type="concurrent_gpus",
            parent=str(org.id),
            reason="  onboarding the research team  ",
        ),
    )

    assert response.status_code == 302
    team = Quota.objects.get(entity_id="research")
    change = QuotaChange.objects.get(quota_id=team.id)
    assert change.action == "create"
    assert (change.actor_type, change.actor_id, change.actor_name) == (
        "staff_user",
        str(staff.pk),
        "root",
    )
    assert change.reason == "onboarding the research team"
    assert change.changes["limit_value"] == [None, "40"]


def test_the_admin_form_records_the_staff_user_and_reason_on_change(
    staff_client, staff, tree
):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/change/",
        admin_limits_form("70", reason="approved in OPS-77"),
    )

    assert response.status_code == 302
    change = QuotaChange.objects.get(quota_id=team.id)
    assert change.action == "update"
    assert (change.actor_type, change.actor_id, change.actor_name) == (
        "staff_user",
        str(staff.pk),
        "root",
    )
    assert change.reason == "approved in OPS-77"
    assert change.changes == {"limit_value": ["60", "70"]}


def test_the_admin_form_shows_the_reason_field(staff_client, tree):
    org, team, user = tree

    response = staff_client.get(f"/admin/quotas/quota/{team.id}/change/")

    assert response.status_code == 200
    assert 'name="reason"' in response.content.decode()


def test_saving_the_admin_form_unchanged_records_nothing(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/change/",
        admin_limits_form("60", reason="just looking"),
    )

    assert response.status_code == 302
    assert not QuotaChange.objects.exists()


def test_a_bad_reason_in_the_admin_form_is_a_form_error(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/change/",
        admin_limits_form("70", reason="r" * (REASON_MAX_LENGTH + 1)),
    )

    assert response.status_code == 200
    assert "reason" in response.context["adminform"].form.errors
    team.refresh_from_db()
    assert team.limit_value == Decimal("60")
    assert not QuotaChange.objects.exists()


def test_a_refused_admin_change_records_nothing(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/change/",
        admin_limits_form("20", reason="shrink"),
    )

    assert response.status_code == 200
    assert "limit_value" in response.context["adminform"].form.errors
    assert not QuotaChange.objects.exists()


def test_deleting_in_the_admin_records_the_staff_user(staff_client, staff, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{user.id}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    change = QuotaChange.objects.get(quota_id=user.id)
    assert change.action == "delete"
    assert (change.actor_type, change.actor_id, change.actor_name) == (
        "staff_user",
        str(staff.pk),
        "root",
    )


def test_the_audit_admin_lists_and_searches_but_is_read_only(staff_client, tree):
    org, team, user = tree
    services.quota_update(
        quota_id=team.id, changes={"limit_value": 50}, reason="OPS-9 shrink"
    )
    change = QuotaChange.objects.get()
    base = "/admin/quotas/quotachange/"

    listing = staff_client.get(base)
    by_entity = staff_client.get(base, {"q": "research"})
    by_quota_id = staff_client.get(base, {"q": str(team.id)})
    by_nothing = staff_client.get(base, {"q": "nobody-has-this"})
    # The quota's admin page links to its trail with this filter.
    filtered = staff_client.get(base, {"quota__id__exact": str(team.id)})
    filtered_out = staff_client.get(base, {"quota__id__exact": str(user.id)})
    detail = staff_client.get(f"{base}{change.id}/change/")
    edit = staff_client.post(f"{base}{change.id}/change/", {"reason": "forged"})
    add = staff_client.get(f"{base}add/")
    delete = staff_client.post(f"{base}{change.id}/delete/", {"post": "yes"})

    assert listing.status_code == 200
    assert "OPS-9 shrink" in listing.content.decode()
    assert "OPS-9 shrink" in by_entity.content.decode()
    assert "OPS-9 shrink" in by_quota_id.content.decode()
    assert "OPS-9 shrink" not in by_nothing.content.decode()
    assert "OPS-9 shrink" in filtered.content.decode()
    assert filtered_out.status_code == 200
    assert "OPS-9 shrink" not in filtered_out.content.decode()
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert edit.status_code == 403
    assert add.status_code == 403
    assert delete.status_code == 403
    assert QuotaChange.objects.get().reason == "OPS-9 shrink"


# --- The OpenAPI schema --------------------------------------------------------------


def test_the_schema_documents_the_audit_endpoint(schema):
    operation = schema["paths"]["/api/v1/quotas/{quota_id}/audit"]["get"]

    assert operation["tags"] == ["quotas"]
    assert {"200", "400", "401", "404"} <= set(operation["responses"])
    body = operation["responses"]["200"]["content"]["application/json"]
    listing = resolve(schema, body["schema"])
    assert listing["type"] == "array"
    assert listing["items"] == {"$ref": "#/components/schemas/QuotaChange"}
    parameters = {p["name"] for p in operation["parameters"]}
    assert {"quota_id", "limit", "cursor"} <= parameters
    assert body.get("examples")


def test_the_schema_documents_the_reason_header_on_every_quota_write(schema):
    writes = [
        ("/api/v1/quotas", "post"),
        ("/api/v1/quotas/{quota_id}", "put"),
        ("/api/v1/quotas/{quota_id}", "patch"),
        ("/api/v1/quotas/{quota_id}", "delete"),
    ]
    for path, method in writes:
        parameters = schema["paths"][path][method]["parameters"]
        [header] = [p for p in parameters if p["name"] == "X-Change-Reason"]
        assert header["in"] == "header", (method, path)
        # OpenAPI leaves out "required" when it is false.
        assert not header.get("required", False), (method, path)
        assert "400" in schema["paths"][path][method]["responses"], (method, path)
