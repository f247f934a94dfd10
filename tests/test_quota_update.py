"""PUT and PATCH /api/v1/quotas/{id}: partial updates and the hierarchy rules seen
from both sides, raising a child and lowering a parent (DESIGN §3, §5).

Every refused request also shows that the quota was left exactly as it was.
"""

from decimal import Decimal

import pytest

from horizon_quota.errors import Conflict, InvalidInput, NotFound
from quotas import services
from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory
from tests.helpers import (
    UNKNOWN_ID,
    assert_error,
    assert_invalid,
    exact,
    quota_row,
    quota_url,
    set_used,
)

METHODS = ["put", "patch"]


def _url(quota, query: str = "") -> str:
    return quota_url(quota if isinstance(quota, str) else quota.id) + query


def _send(client, quota, body, method: str = "patch", query: str = ""):
    return getattr(client, method)(_url(quota, query), body, format="json")


def _send_raw(client, quota, text: str, method: str = "patch"):
    return getattr(client, method)(
        _url(quota), data=text, content_type="application/json"
    )


@pytest.fixture
def quota(db):
    """A root organization with every optional limit set."""
    return QuotaFactory(
        entity_id="globex",
        limit_value=Decimal("100"),
        soft_limit=Decimal("80"),
        burst_limit=Decimal("150"),
        overcommit_ratio=Decimal("1.5"),
    )


@pytest.fixture
def bob(tree):
    """A second user beside alice (30) in the team (60): the family sums to 50."""
    _, team, _ = tree
    return QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="bob",
        parent=team,
        limit_value=Decimal("20"),
    )


# --- Partial semantics ----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_it_changes_only_the_fields_that_are_sent(admin_client_api, quota, method):
    response = _send(admin_client_api, quota, {"soft_limit": 40}, method)

    assert response.status_code == 200
    body = response.json()
    assert body["soft_limit"] == 40
    assert body["limit_value"] == 100
    assert body["burst_limit"] == 150
    assert body["overcommit_ratio"] == 1.5
    quota.refresh_from_db()
    assert quota.soft_limit == Decimal("40")
    assert quota.limit_value == Decimal("100")
    assert quota.burst_limit == Decimal("150")
    assert quota.overcommit_ratio == Decimal("1.5")


@pytest.mark.parametrize("method", METHODS)
def test_it_writes_every_field_of_a_multi_field_update(admin_client_api, quota, method):
    response = _send(
        admin_client_api,
        quota,
        {
            "limit_value": 200,
            "soft_limit": "150.5",
            "burst_limit": 250,
            "overcommit_ratio": 2,
        },
        method,
    )

    assert response.status_code == 200
    body = exact(response)
    assert body["limit_value"] == 200
    assert body["soft_limit"] == Decimal("150.5")
    assert body["burst_limit"] == 250
    assert body["overcommit_ratio"] == 2
    assert body["effective_limit"] == 400
    assert body["available"] == 400
    quota.refresh_from_db()
    assert quota.limit_value == Decimal("200")
    assert quota.soft_limit == Decimal("150.5")
    assert quota.burst_limit == Decimal("250")
    assert quota.overcommit_ratio == Decimal("2")


@pytest.mark.parametrize("method", METHODS)
def test_null_clears_the_soft_and_burst_limits(admin_client_api, quota, method):
    response = _send(
        admin_client_api, quota, {"soft_limit": None, "burst_limit": None}, method
    )

    assert response.status_code == 200
    body = response.json()
    assert body["soft_limit"] is None
    assert body["burst_limit"] is None
    assert body["limit_value"] == 100
    quota.refresh_from_db()
    assert quota.soft_limit is None
    assert quota.burst_limit is None


def test_null_clears_only_the_limit_it_is_sent_for(admin_client_api, quota):
    response = _send(admin_client_api, quota, {"burst_limit": None})

    assert response.status_code == 200
    quota.refresh_from_db()
    assert quota.burst_limit is None
    assert quota.soft_limit == Decimal("80")


@pytest.mark.parametrize("field", ["limit_value", "overcommit_ratio"])
def test_null_for_a_field_that_cannot_be_cleared_means_unchanged(
    admin_client_api, quota, field
):
    # The Rust service's clients send absent options as null.
    before = quota_row(quota)

    response = _send(admin_client_api, quota, {field: None})

    assert response.status_code == 200
    assert quota_row(quota) == before


def test_an_empty_body_changes_nothing(admin_client_api, quota):
    before = quota_row(quota)

    response = _send(admin_client_api, quota, {})

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert quota_row(quota) == before


def test_it_ignores_unknown_and_read_only_fields(admin_client_api, quota):
    set_used(quota, 25)

    response = _send(
        admin_client_api,
        quota,
        {
            "colour": "blue",
            "used": 0,
            "available": 1,
            "effective_limit": 5,
            "id": UNKNOWN_ID,
            "created_at": "2000-01-01T00:00:00Z",
            "limit_value": 90,
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(quota.id)
    assert body["used"] == 25
    assert body["limit_value"] == 90
    assert body["effective_limit"] == 135
    quota.refresh_from_db()
    assert quota.used == Decimal("25")
    assert quota.limit_value == Decimal("90")


def test_it_accepts_numeric_strings(admin_client_api, quota):
    response = _send(
        admin_client_api, quota, {"limit_value": "120.25", "overcommit_ratio": "1.25"}
    )

    assert response.status_code == 200
    body = exact(response)
    assert body["limit_value"] == Decimal("120.25")
    assert body["effective_limit"] == Decimal("150.3125")


# --- Versions -----------------------------------------------------------------------


def test_every_change_increments_the_version(admin_client_api, quota):
    first = _send(admin_client_api, quota, {"limit_value": 110})
    second = _send(admin_client_api, quota, {"soft_limit": None}, "put")

    assert first.json()["version"] == 2
    assert second.json()["version"] == 3
    quota.refresh_from_db()
    assert quota.version == 3


def test_a_change_moves_updated_at_but_not_created_at(admin_client_api, quota):
    before = quota_row(quota)

    response = _send(admin_client_api, quota, {"limit_value": 110})

    assert response.status_code == 200
    after = quota_row(quota)
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] >= before["updated_at"]
    assert response.json()["updated_at"].endswith("Z")


def test_an_update_that_sends_the_current_values_keeps_the_version(
    admin_client_api, quota
):
    before = quota_row(quota)

    response = _send(
        admin_client_api,
        quota,
        {"limit_value": "100.0000", "soft_limit": 80, "overcommit_ratio": "1.50"},
    )

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert quota_row(quota) == before


@pytest.mark.parametrize("method", METHODS)
def test_it_applies_an_update_sent_with_the_current_version(
    admin_client_api, quota, method
):
    response = _send(
        admin_client_api, quota, {"limit_value": 110, "version": 1}, method
    )

    assert response.status_code == 200
    assert response.json()["version"] == 2
    quota.refresh_from_db()
    assert quota.limit_value == Decimal("110")


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_an_update_sent_with_a_stale_version(
    admin_client_api, quota, method
):
    Quota.objects.filter(id=quota.id).update(version=3)
    before = quota_row(quota)

    response = _send(
        admin_client_api, quota, {"limit_value": 110, "version": 2}, method
    )

    body = assert_error(response, 409, "conflict")
    assert "3" in body["message"]
    assert quota_row(quota) == before


def test_it_refuses_a_version_from_the_future(admin_client_api, quota):
    before = quota_row(quota)

    response = _send(admin_client_api, quota, {"limit_value": 110, "version": 2})

    assert_error(response, 409, "conflict")
    assert quota_row(quota) == before


@pytest.mark.parametrize("version", [0, -1, "abc", 1.5, True, {}])
def test_it_refuses_a_malformed_version(admin_client_api, quota, version):
    before = quota_row(quota)

    response = _send(admin_client_api, quota, {"limit_value": 110, "version": version})

    assert_invalid(response, "version")
    assert quota_row(quota) == before


# --- Raising a child ----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_raising_a_child_above_its_parents_limit(
    admin_client_api, tree, method
):
    _, _, user = tree  # alice 30 under the team's 60
    before = quota_row(user)

    response = _send(admin_client_api, user, {"limit_value": "60.0001"}, method)

    body = assert_invalid(response, "limit_value")
    assert "60" in body["message"]
    assert quota_row(user) == before


def test_it_allows_raising_a_lone_child_up_to_its_parents_limit(admin_client_api, tree):
    _, _, user = tree

    response = _send(admin_client_api, user, {"limit_value": 60})

    assert response.status_code == 200
    user.refresh_from_db()
    assert user.limit_value == Decimal("60")


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_raising_a_child_so_that_the_family_overfills_the_parent(
    admin_client_api, tree, bob, method
):
    before = quota_row(bob)

    # alice 30 + bob 30.0001 > team 60, though bob alone would fit.
    response = _send(admin_client_api, bob, {"limit_value": "30.0001"}, method)

    body = assert_invalid(response, "limit_value")
    assert "60.0001" in body["message"]
    assert quota_row(bob) == before


def test_it_allows_raising_a_child_until_the_family_exactly_fills_the_parent(
    admin_client_api, tree, bob
):
    response = _send(admin_client_api, bob, {"limit_value": 30})

    assert response.status_code == 200
    bob.refresh_from_db()
    assert bob.limit_value == Decimal("30")


def test_a_child_is_not_counted_twice_against_its_own_parent(admin_client_api, tree):
    org, team, _ = tree  # the team (60) is the org's (100) only child

    response = _send(admin_client_api, team, {"limit_value": 100})

    assert response.status_code == 200
    team.refresh_from_db()
    assert team.limit_value == Decimal("100")


def test_parent_overcommit_lets_siblings_together_exceed_its_limit(
    admin_client_api, tree, bob
):
    _, team, _ = tree
    Quota.objects.filter(id=team.id).update(overcommit_ratio=Decimal("1.5"))

    # alice 30 + bob 60 = 90 = team 60 × 1.5
    response = _send(admin_client_api, bob, {"limit_value": 60})

    assert response.status_code == 200


def test_parent_overcommit_still_caps_the_siblings_sum(admin_client_api, tree, bob):
    _, team, _ = tree
    Quota.objects.filter(id=team.id).update(overcommit_ratio=Decimal("1.5"))
    Quota.objects.filter(id=bob.id).update(limit_value=Decimal("60"))
    _, _, alice = tree
    before = quota_row(alice)

    response = _send(admin_client_api, alice, {"limit_value": "30.0001"})

    assert_invalid(response, "limit_value")
    assert quota_row(alice) == before


def test_parent_overcommit_never_lets_a_child_exceed_the_parents_limit(
    admin_client_api, tree
):
    _, team, alice = tree
    Quota.objects.filter(id=team.id).update(overcommit_ratio=Decimal("3"))
    before = quota_row(alice)

    response = _send(admin_client_api, alice, {"limit_value": 61})

    assert_invalid(response, "limit_value")
    assert quota_row(alice) == before


def test_a_childs_own_overcommit_ratio_does_not_count_against_its_parent(
    admin_client_api, tree, bob
):
    # Siblings are summed by limit_value; a child's ratio only concerns its own
    # children.
    response = _send(admin_client_api, bob, {"overcommit_ratio": 3})

    assert response.status_code == 200
    bob.refresh_from_db()
    assert bob.overcommit_ratio == Decimal("3")


# --- Lowering a parent --------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_lowering_a_parent_below_a_childs_limit(
    admin_client_api, tree, method
):
    _, team, _ = tree  # alice holds 30
    before = quota_row(team)

    response = _send(admin_client_api, team, {"limit_value": "29.9999"}, method)

    body = assert_invalid(response, "limit_value")
    assert "30" in body["message"]
    assert quota_row(team) == before


def test_it_refuses_lowering_a_parent_below_a_child_even_with_overcommit(
    admin_client_api, tree
):
    _, team, _ = tree
    before = quota_row(team)

    # Effective 29 × 2 = 58 still holds alice's 30, but her limit exceeds 29.
    response = _send(admin_client_api, team, {"limit_value": 29, "overcommit_ratio": 2})

    assert_invalid(response, "limit_value")
    assert quota_row(team) == before


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_lowering_a_parent_below_its_childrens_sum(
    admin_client_api, tree, bob, method
):
    _, team, _ = tree  # alice 30 + bob 20 = 50
    before = quota_row(team)

    response = _send(admin_client_api, team, {"limit_value": "49.9999"}, method)

    body = assert_invalid(response, "limit_value")
    assert "50" in body["message"]
    assert quota_row(team) == before


def test_it_allows_lowering_a_parent_to_exactly_its_childrens_sum(
    admin_client_api, tree, bob
):
    _, team, _ = tree

    response = _send(admin_client_api, team, {"limit_value": 50})

    assert response.status_code == 200
    team.refresh_from_db()
    assert team.limit_value == Decimal("50")


def test_it_refuses_lowering_a_parents_overcommit_below_its_childrens_sum(
    admin_client_api, db
):
    org = QuotaFactory(limit_value=Decimal("100"), overcommit_ratio=Decimal("1.5"))
    QuotaFactory(entity_type=EntityType.TEAM, parent=org, limit_value=Decimal("80"))
    QuotaFactory(entity_type=EntityType.TEAM, parent=org, limit_value=Decimal("60"))
    before = quota_row(org)

    response = _send(admin_client_api, org, {"overcommit_ratio": "1.39"})

    body = assert_invalid(response, "limit_value")
    assert "140" in body["message"]
    assert quota_row(org) == before


def test_a_parent_may_lower_its_limit_when_overcommit_still_holds_the_children(
    admin_client_api, tree, bob
):
    _, team, _ = tree  # children sum to 50

    response = _send(
        admin_client_api, team, {"limit_value": 40, "overcommit_ratio": 1.25}
    )

    assert response.status_code == 200
    assert response.json()["effective_limit"] == 50


def test_a_middle_quota_is_checked_against_its_parent_and_its_children_at_once(
    admin_client_api, tree
):
    _, team, _ = tree
    before = quota_row(team)

    above_parent = _send(admin_client_api, team, {"limit_value": 101})
    below_child = _send(admin_client_api, team, {"limit_value": 29})

    assert_invalid(above_parent, "limit_value")
    assert_invalid(below_child, "limit_value")
    assert quota_row(team) == before


# --- Soft and burst limits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"limit_value": "79.9999"}, "soft_limit", id="limit-below-soft"),
        pytest.param(
            {"limit_value": "150.0001"}, "burst_limit", id="limit-above-burst"
        ),
        pytest.param({"soft_limit": "100.0001"}, "soft_limit", id="soft-above-limit"),
        pytest.param({"burst_limit": "99.9999"}, "burst_limit", id="burst-below-limit"),
    ],
)
def test_it_refuses_a_change_that_breaks_soft_under_limit_under_burst(
    admin_client_api, quota, change, field
):
    # quota holds soft 80 <= limit 100 <= burst 150.
    before = quota_row(quota)

    response = _send(admin_client_api, quota, change)

    assert_invalid(response, field)
    assert quota_row(quota) == before


def test_it_accepts_limits_that_move_together(admin_client_api, quota):
    # Each value alone would break soft ≤ limit ≤ burst against the stored ones.
    response = _send(
        admin_client_api,
        quota,
        {"limit_value": 300, "soft_limit": 200, "burst_limit": 400},
    )

    assert response.status_code == 200
    quota.refresh_from_db()
    assert (quota.soft_limit, quota.limit_value, quota.burst_limit) == (
        Decimal("200"),
        Decimal("300"),
        Decimal("400"),
    )


def test_clearing_the_soft_limit_lets_the_limit_drop_below_it(admin_client_api, quota):
    response = _send(admin_client_api, quota, {"limit_value": 50, "soft_limit": None})

    assert response.status_code == 200
    quota.refresh_from_db()
    assert quota.limit_value == Decimal("50")
    assert quota.soft_limit is None


# --- Usage and force ------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_lowering_the_effective_limit_below_usage(
    admin_client_api, tree, method
):
    _, _, alice = tree
    set_used(alice, 25)
    before = quota_row(alice)

    response = _send(admin_client_api, alice, {"limit_value": "24.9999"}, method)

    body = assert_error(response, 409, "conflict")
    assert "force" in body["message"]
    assert "25" in body["message"]
    assert quota_row(alice) == before


def test_it_refuses_lowering_the_overcommit_ratio_below_usage(admin_client_api, quota):
    set_used(quota, 120)  # effective 150
    before = quota_row(quota)

    response = _send(admin_client_api, quota, {"overcommit_ratio": "1.19"})

    assert_error(response, 409, "conflict")
    assert quota_row(quota) == before


def test_it_allows_lowering_the_effective_limit_to_exactly_the_usage(
    admin_client_api, tree
):
    _, _, alice = tree
    set_used(alice, 25)

    response = _send(admin_client_api, alice, {"limit_value": 25})

    assert response.status_code == 200
    body = response.json()
    assert body["limit_value"] == 25
    assert body["used"] == 25
    assert body["available"] == 0


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
@pytest.mark.parametrize("method", METHODS)
def test_force_in_the_query_lowers_the_limit_below_usage(
    admin_client_api, tree, method, value
):
    _, _, alice = tree
    set_used(alice, 25)

    response = _send(
        admin_client_api, alice, {"limit_value": 20}, method, query=f"?force={value}"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["limit_value"] == 20
    assert body["used"] == 25
    assert body["available"] == 0
    assert body["version"] == 2
    alice.refresh_from_db()
    assert alice.limit_value == Decimal("20")
    assert alice.used == Decimal("25")


@pytest.mark.parametrize("method", METHODS)
def test_force_in_the_body_lowers_the_limit_below_usage(admin_client_api, tree, method):
    _, _, alice = tree
    set_used(alice, 25)

    response = _send(
        admin_client_api, alice, {"limit_value": 20, "force": True}, method
    )

    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.limit_value == Decimal("20")
    assert alice.used == Decimal("25")


@pytest.mark.parametrize(
    ("query", "body_force"), [("?force=false", None), ("?force=0", None), ("", False)]
)
def test_force_false_still_refuses_lowering_below_usage(
    admin_client_api, tree, query, body_force
):
    _, _, alice = tree
    set_used(alice, 25)
    before = quota_row(alice)
    body = {"limit_value": 20}
    if body_force is not None:
        body["force"] = body_force

    response = _send(admin_client_api, alice, body, query=query)

    assert_error(response, 409, "conflict")
    assert quota_row(alice) == before


def test_force_does_not_override_the_hierarchy_rules(admin_client_api, tree):
    _, team, _ = tree  # alice holds 30 of the team's limit
    set_used(team, 25)
    before = quota_row(team)

    response = _send(admin_client_api, team, {"limit_value": 20}, query="?force=true")

    assert_invalid(response, "limit_value")
    assert quota_row(team) == before


def test_force_does_not_override_the_version_check(admin_client_api, tree):
    _, _, alice = tree
    set_used(alice, 25)
    before = quota_row(alice)

    response = _send(
        admin_client_api, alice, {"limit_value": 20, "version": 9}, query="?force=true"
    )

    assert_error(response, 409, "conflict")
    assert quota_row(alice) == before


@pytest.mark.parametrize("value", ["maybe", "", "2", "truee", "on"])
def test_it_refuses_a_force_query_value_that_is_not_a_boolean(
    admin_client_api, tree, value
):
    _, _, alice = tree
    set_used(alice, 25)
    before = quota_row(alice)

    response = _send(
        admin_client_api, alice, {"limit_value": 20}, query=f"?force={value}"
    )

    assert_invalid(response, "force")
    assert quota_row(alice) == before


@pytest.mark.parametrize("value", ["maybe", 2, {}, [True]])
def test_it_refuses_a_force_body_value_that_is_not_a_boolean(
    admin_client_api, tree, value
):
    _, _, alice = tree
    set_used(alice, 25)
    before = quota_row(alice)

    response = _send(admin_client_api, alice, {"limit_value": 20, "force": value})

    assert_invalid(response, "force")
    assert quota_row(alice) == before


def test_raising_a_limit_needs_no_force_while_usage_is_above_it(admin_client_api, tree):
    _, _, alice = tree
    set_used(alice, 25)
    forced = _send(admin_client_api, alice, {"limit_value": 10}, query="?force=true")

    response = _send(admin_client_api, alice, {"limit_value": 20})

    assert forced.status_code == 200
    assert response.status_code == 200
    body = response.json()
    assert body["limit_value"] == 20
    assert body["available"] == 0
    alice.refresh_from_db()
    assert alice.limit_value == Decimal("20")


def test_lowering_further_while_usage_is_above_the_limit_still_needs_force(
    admin_client_api, tree
):
    _, _, alice = tree
    set_used(alice, 40)  # above 30, as after an earlier forced lowering
    before = quota_row(alice)

    response = _send(admin_client_api, alice, {"limit_value": 29})

    assert_error(response, 409, "conflict")
    assert quota_row(alice) == before


def test_changing_only_soft_or_burst_needs_no_force_while_over_usage(
    admin_client_api, tree
):
    _, _, alice = tree
    set_used(alice, 40)

    response = _send(admin_client_api, alice, {"soft_limit": 10, "burst_limit": 50})

    assert response.status_code == 200


# --- Fields that never change -------------------------------------------------------


def _other_org(db):
    return QuotaFactory(entity_id="initech")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("parent_id", "other-org"),
        ("parent_id", None),
        ("parent_id", UNKNOWN_ID),
        ("entity_type", "user"),
        ("entity_type", "organization"),
        ("entity_id", "platform"),
        ("entity_id", "RESEARCH"),
        ("resource_type", "cpu_hours"),
        ("resource_type", "widgets"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_to_change_an_identity_field(
    admin_client_api, tree, method, field, value
):
    _, team, _ = tree
    if value == "other-org":
        value = str(_other_org(tree).id)
    before = quota_row(team)

    response = _send(admin_client_api, team, {field: value, "limit_value": 50}, method)

    body = assert_invalid(response, field)
    assert "cannot change" in body["message"]
    assert "cannot change" in " ".join(body["fields"][field])
    assert quota_row(team) == before


def test_it_refuses_to_give_a_root_quota_a_parent(admin_client_api, tree):
    org, _, _ = tree
    other = _other_org(tree)
    before = quota_row(org)

    response = _send(admin_client_api, org, {"parent_id": str(other.id)})

    body = assert_invalid(response, "parent_id")
    assert "cannot change" in body["message"]
    assert quota_row(org) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entity_type", "team"),
        ("entity_type", "TEAM"),
        ("entity_id", "research"),
        ("resource_type", "concurrent_gpus"),
        ("resource_type", "CONCURRENT_GPUS"),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_it_accepts_an_identity_field_sent_with_its_current_value(
    admin_client_api, tree, method, field, value
):
    _, team, _ = tree

    response = _send(admin_client_api, team, {field: value, "limit_value": 50}, method)

    assert response.status_code == 200
    team.refresh_from_db()
    assert team.limit_value == Decimal("50")
    assert team.entity_type == "team"
    assert team.entity_id == "research"
    assert team.resource_type_id == "concurrent_gpus"


def test_it_accepts_the_current_parent_id(admin_client_api, tree):
    org, team, _ = tree

    response = _send(
        admin_client_api, team, {"parent_id": str(org.id), "limit_value": 50}
    )

    assert response.status_code == 200
    team.refresh_from_db()
    assert team.parent_id == org.id
    assert team.limit_value == Decimal("50")


def test_it_accepts_a_null_parent_id_on_a_root_quota(admin_client_api, tree):
    org, _, _ = tree

    response = _send(admin_client_api, org, {"parent_id": None, "limit_value": 90})

    assert response.status_code == 200
    org.refresh_from_db()
    assert org.parent_id is None
    assert org.limit_value == Decimal("90")


def test_it_accepts_the_whole_quota_sent_back_with_a_change(admin_client_api, tree):
    _, team, _ = tree
    current = admin_client_api.get(_url(team)).json()
    current["limit_value"] = 50

    response = _send(admin_client_api, team, current, "put")

    assert response.status_code == 200
    body = response.json()
    assert body["limit_value"] == 50
    assert body["version"] == 2


# --- Malformed input, unknown quotas, credentials -----------------------------------


@pytest.mark.parametrize(
    "fragment",
    [
        pytest.param('"1.00001"', id="five-places-string"),
        pytest.param("1.00001", id="five-places-number"),
        pytest.param('"NaN"', id="nan-string"),
        pytest.param("-1", id="negative"),
        pytest.param("12345678901234567", id="seventeen-integer-digits"),
        pytest.param('"1e3"', id="exponent-string"),
        pytest.param('"\\u0661\\u0662"', id="arabic-indic-digits"),
        pytest.param("true", id="boolean"),
        pytest.param("{}", id="object"),
    ],
)
@pytest.mark.parametrize("field", ["limit_value", "soft_limit", "burst_limit"])
def test_it_refuses_a_malformed_amount(admin_client_api, quota, field, fragment):
    before = quota_row(quota)

    response = _send_raw(admin_client_api, quota, f'{{"{field}": {fragment}}}')

    assert_invalid(response, field)
    assert quota_row(quota) == before


@pytest.mark.parametrize(
    "fragment", ["1.001", "0.99", "0", "1000", '"NaN"', "true", '"abc"']
)
def test_it_refuses_a_bad_overcommit_ratio(admin_client_api, quota, fragment):
    before = quota_row(quota)

    response = _send_raw(admin_client_api, quota, f'{{"overcommit_ratio": {fragment}}}')

    assert_invalid(response, "overcommit_ratio")
    assert quota_row(quota) == before


@pytest.mark.parametrize("text", ['{"limit_value": ', "[]", '"x"'])
def test_it_refuses_a_body_that_is_not_a_json_object(admin_client_api, quota, text):
    before = quota_row(quota)

    response = _send_raw(admin_client_api, quota, text)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert quota_row(quota) == before


@pytest.mark.parametrize("method", METHODS)
def test_it_answers_404_for_an_unknown_quota(admin_client_api, db, method):
    response = _send(admin_client_api, UNKNOWN_ID, {"limit_value": 1}, method)

    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert Quota.objects.count() == 0


@pytest.mark.parametrize("method", METHODS)
def test_it_answers_404_json_for_a_path_that_is_not_a_uuid(
    admin_client_api, db, method
):
    response = _send(admin_client_api, "not-a-uuid", {"limit_value": 1}, method)

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_it_refuses_an_update_without_credentials(api_client, quota):
    before = quota_row(quota)

    response = _send(api_client, quota, {"limit_value": 110})

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert quota_row(quota) == before


@pytest.mark.parametrize("client_fixture", ["viewer_client", "scheduler_client"])
@pytest.mark.parametrize("method", METHODS)
def test_it_refuses_an_update_from_a_key_without_the_admin_role(
    request, quota, client_fixture, method
):
    client = request.getfixturevalue(client_fixture)
    before = quota_row(quota)

    response = _send(client, quota, {"limit_value": 110}, method)

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert quota_row(quota) == before


# --- The service, called directly ---------------------------------------------------


def test_the_service_refuses_a_field_that_cannot_change(tree):
    _, team, _ = tree
    before = quota_row(team)

    with pytest.raises(InvalidInput) as refused:
        services.quota_update(quota_id=team.id, changes={"parent_id": None})

    assert "Cannot change" in refused.value.message
    assert quota_row(team) == before


def test_the_service_refuses_raising_a_child_over_its_family(tree, bob):
    before = quota_row(bob)

    with pytest.raises(InvalidInput):
        services.quota_update(quota_id=bob.id, changes={"limit_value": Decimal("31")})

    assert quota_row(bob) == before


def test_the_service_refuses_lowering_a_parent_under_its_children(tree, bob):
    _, team, _ = tree
    before = quota_row(team)

    with pytest.raises(InvalidInput):
        services.quota_update(quota_id=team.id, changes={"limit_value": Decimal("45")})

    assert quota_row(team) == before


def test_the_service_refuses_a_stale_version(tree):
    _, _, alice = tree
    before = quota_row(alice)

    with pytest.raises(Conflict):
        services.quota_update(
            quota_id=alice.id, changes={"limit_value": Decimal("1")}, expected_version=5
        )

    assert quota_row(alice) == before


def test_the_service_lowers_below_usage_only_with_force(tree):
    _, _, alice = tree
    set_used(alice, 25)

    with pytest.raises(Conflict):
        services.quota_update(quota_id=alice.id, changes={"limit_value": Decimal("20")})
    forced = services.quota_update(
        quota_id=alice.id, changes={"limit_value": Decimal("20")}, force=True
    )

    assert forced.limit_value == Decimal("20")
    assert forced.used == Decimal("25")
    assert forced.version == 2


def test_the_service_answers_not_found_for_an_unknown_quota(db):
    with pytest.raises(NotFound):
        services.quota_update(
            quota_id=UNKNOWN_ID, changes={"limit_value": Decimal("1")}
        )
