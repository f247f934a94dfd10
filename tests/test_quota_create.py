"""POST /api/v1/quotas: quota shape, input rules and hierarchy rules (DESIGN §3, §5).

Every refused request also shows that nothing was written.
"""

import json
import re
from decimal import Decimal

import pytest

from horizon_quota.errors import AlreadyExists, InvalidInput
from quotas import services
from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory, ResourceTypeFactory
from tests.helpers import QUOTA_WIRE_FIELDS, QUOTAS, assert_invalid, exact, org_body

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
BUILTIN_RESOURCE_TYPES = [
    "concurrent_gpus",
    "memory_gb",
    "storage_gb",
    "concurrent_gpus",
    "cpu_hours",
]
QUOTA_FIELDS = QUOTA_WIRE_FIELDS | {"effective_limit"}


def _post(client, body: dict):
    return client.post(QUOTAS, body, format="json")


def _post_raw(client, text: str):
    return client.post(QUOTAS, data=text, content_type="application/json")


def _org_body(**overrides) -> dict:
    """globex's root quota with a limit of 100, unless ``overrides`` say otherwise."""
    return org_body(**{"entity_id": "globex", "limit_value": 100, **overrides})


def _raw_org_body(field: str, fragment: str, **overrides) -> str:
    """An organization body as JSON text, with ``field`` set to a raw JSON fragment."""
    base = json.dumps(_org_body(**overrides, **{field: "__FRAGMENT__"}))
    return base.replace('"__FRAGMENT__"', fragment)


# --- Success and the quota's shape -------------------------------------------------


def test_it_creates_a_root_organization_quota(admin_client_api, db):
    response = _post(
        admin_client_api,
        _org_body(limit_value=1000, soft_limit=800, burst_limit=1200),
    )

    assert response.status_code == 201
    body = exact(response)
    assert set(body) == QUOTA_FIELDS
    assert body["entity_type"] == "organization"
    assert body["entity_id"] == "globex"
    assert body["resource_type"] == "concurrent_gpus"
    assert body["parent_id"] is None
    assert body["limit_value"] == 1000
    assert body["soft_limit"] == 800
    assert body["burst_limit"] == 1200
    assert body["overcommit_ratio"] == 1
    assert body["effective_limit"] == 1000
    assert body["used"] == 0
    assert body["available"] == 1000
    assert body["version"] == 1
    quota = Quota.objects.get(id=body["id"])
    assert quota.entity_type == EntityType.ORGANIZATION
    assert quota.limit_value == Decimal("1000")
    assert quota.soft_limit == Decimal("800")
    assert quota.burst_limit == Decimal("1200")
    assert quota.parent_id is None
    assert quota.depth == 0


def test_it_renders_amounts_as_exact_json_numbers(admin_client_api, db):
    response = _post_raw(
        admin_client_api,
        '{"entity_type": "organization", "entity_id": "globex", '
        '"resource_type": "concurrent_gpus", "limit_value": 100.5, "soft_limit": 0.1, '
        '"overcommit_ratio": 1.5}',
    )

    assert response.status_code == 201
    body = exact(response)
    for field in ("limit_value", "soft_limit", "effective_limit", "available"):
        assert isinstance(body[field], Decimal), field
    for field in ("used", "overcommit_ratio", "version"):
        assert not isinstance(body[field], str), field
    assert body["limit_value"] == Decimal("100.5")
    assert body["soft_limit"] == Decimal("0.1")
    assert body["overcommit_ratio"] == Decimal("1.5")
    assert body["effective_limit"] == Decimal("150.75")
    assert body["available"] == Decimal("150.75")
    assert body["used"] == 0
    assert b'"limit_value":100.5' in response.content
    assert b'"effective_limit":150.75' in response.content
    assert b'"used":0' in response.content


def test_it_renders_timestamps_as_rfc3339_utc(admin_client_api, db):
    response = _post(admin_client_api, _org_body())

    assert response.status_code == 201
    body = response.json()
    assert RFC3339_UTC.match(body["created_at"]), body["created_at"]
    assert RFC3339_UTC.match(body["updated_at"]), body["updated_at"]


def test_it_keeps_the_largest_amount_with_four_decimal_places_exactly(
    admin_client_api, db
):
    response = _post_raw(
        admin_client_api, _raw_org_body("limit_value", "9999999999999999.9999")
    )

    assert response.status_code == 201
    assert exact(response)["limit_value"] == Decimal("9999999999999999.9999")
    quota = Quota.objects.get(entity_id="globex")
    assert quota.limit_value == Decimal("9999999999999999.9999")


def test_it_accepts_the_smallest_positive_amount(admin_client_api, db):
    response = _post_raw(admin_client_api, _raw_org_body("limit_value", "0.0001"))

    assert response.status_code == 201
    assert exact(response)["limit_value"] == Decimal("0.0001")


def test_it_accepts_a_zero_limit(admin_client_api, db):
    response = _post(admin_client_api, _org_body(limit_value=0))

    assert response.status_code == 201
    body = response.json()
    assert body["limit_value"] == 0
    assert body["available"] == 0


def test_it_matches_enum_values_case_insensitively(admin_client_api, tree):
    org, _, _ = tree

    response = _post(
        admin_client_api,
        {
            "entity_type": "TEAM",
            "entity_id": "platform",
            "resource_type": "CONCURRENT_GPUS",
            "parent_id": str(org.id),
            "limit_value": 10,
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["entity_type"] == "team"
    assert body["resource_type"] == "concurrent_gpus"
    quota = Quota.objects.get(id=body["id"])
    assert quota.entity_type == "team"
    assert quota.resource_type_id == "concurrent_gpus"
    assert quota.parent_id == org.id
    assert quota.depth == 1


def test_it_accepts_numeric_strings_for_every_amount(admin_client_api, db):
    response = _post(
        admin_client_api,
        _org_body(
            limit_value="250.5",
            soft_limit="200",
            burst_limit="300.25",
            overcommit_ratio="1.25",
        ),
    )

    assert response.status_code == 201
    body = exact(response)
    assert body["limit_value"] == Decimal("250.5")
    assert body["soft_limit"] == Decimal("200")
    assert body["burst_limit"] == Decimal("300.25")
    assert body["overcommit_ratio"] == Decimal("1.25")
    assert body["effective_limit"] == Decimal("313.125")


def test_it_accepts_a_json_number_in_exponent_notation(admin_client_api, db):
    response = _post_raw(admin_client_api, _raw_org_body("limit_value", "1e3"))

    assert response.status_code == 201
    assert response.json()["limit_value"] == 1000


def test_it_ignores_unknown_and_read_only_fields(admin_client_api, db):
    response = _post(
        admin_client_api,
        _org_body(
            colour="blue",
            used=50,
            available=1,
            version=7,
            effective_limit=5,
            id="5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b",
        ),
    )

    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"
    assert body["used"] == 0
    assert body["available"] == 100
    assert body["version"] == 1
    assert body["effective_limit"] == 100
    quota = Quota.objects.get(id=body["id"])
    assert quota.used == 0
    assert quota.version == 1


def test_it_creates_a_whole_organization_team_user_path(admin_client_api, db):
    org = _post(admin_client_api, _org_body(limit_value=100)).json()
    team = _post(
        admin_client_api,
        {
            "entity_type": "team",
            "entity_id": "research",
            "resource_type": "concurrent_gpus",
            "parent_id": org["id"],
            "limit_value": 60,
        },
    ).json()
    response = _post(
        admin_client_api,
        {
            "entity_type": "user",
            "entity_id": "alice",
            "resource_type": "concurrent_gpus",
            "parent_id": team["id"],
            "limit_value": 30,
        },
    )

    assert response.status_code == 201
    user = response.json()
    assert user["parent_id"] == team["id"]
    assert team["parent_id"] == org["id"]
    assert Quota.objects.get(id=user["id"]).depth == 2


@pytest.mark.parametrize("entity_type", ["organization", "team", "user"])
def test_it_allows_a_root_quota_of_any_entity_type(admin_client_api, db, entity_type):
    response = _post(admin_client_api, _org_body(entity_type=entity_type))

    assert response.status_code == 201
    body = response.json()
    assert body["entity_type"] == entity_type
    assert body["parent_id"] is None
    assert Quota.objects.get(id=body["id"]).depth == 0


def test_it_accepts_an_explicit_null_parent(admin_client_api, db):
    response = _post(admin_client_api, _org_body(parent_id=None))

    assert response.status_code == 201
    assert response.json()["parent_id"] is None


def test_it_accepts_a_resource_type_registered_by_an_admin(admin_client_api, db):
    ResourceTypeFactory(slug="tpu_hours")

    response = _post(admin_client_api, _org_body(resource_type="tpu_hours"))

    assert response.status_code == 201
    assert response.json()["resource_type"] == "tpu_hours"


def test_it_allows_the_same_entity_on_another_resource_type(admin_client_api, db):
    QuotaFactory(entity_id="globex")

    response = _post(admin_client_api, _org_body(resource_type="cpu_hours"))

    assert response.status_code == 201
    assert Quota.objects.filter(entity_id="globex").count() == 2


def test_it_allows_the_same_entity_id_for_another_entity_type(admin_client_api, db):
    QuotaFactory(entity_id="globex")

    response = _post(admin_client_api, _org_body(entity_type="user"))

    assert response.status_code == 201


@pytest.mark.parametrize("entity_id", ["x", "x" * 255, "Alice Smith", "ünïcødé-名前"])
def test_it_accepts_entity_ids_from_one_to_255_characters(
    admin_client_api, db, entity_id
):
    response = _post(admin_client_api, _org_body(entity_id=entity_id))

    assert response.status_code == 201
    assert response.json()["entity_id"] == entity_id
    assert Quota.objects.get(entity_id=entity_id)


# --- Hierarchy rules ----------------------------------------------------------------


def _child_body(parent: Quota, entity_type: str, **overrides) -> dict:
    body = {
        "entity_type": entity_type,
        "entity_id": "newcomer",
        "resource_type": "concurrent_gpus",
        "parent_id": str(parent.id),
        "limit_value": 1,
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("entity_type", "parent_level", "expected_words"),
    [
        ("team", 1, "parent must be an organization"),
        ("team", 2, "parent must be an organization"),
        ("user", 0, "parent must be a team"),
        ("user", 2, "parent must be a team"),
        ("organization", 0, "an organization has no parent"),
        ("organization", 1, "an organization has no parent"),
        ("organization", 2, "an organization has no parent"),
    ],
)
def test_it_refuses_a_parent_of_the_wrong_entity_type(
    admin_client_api, tree, entity_type, parent_level, expected_words
):
    parent = tree[parent_level]
    before = Quota.objects.count()

    response = _post(admin_client_api, _child_body(parent, entity_type))

    body = assert_invalid(response, "parent_id")
    assert expected_words in body["message"]
    assert Quota.objects.count() == before


def test_it_refuses_a_child_with_another_resource_type_than_its_parent(
    admin_client_api, tree
):
    org, _, _ = tree
    before = Quota.objects.count()

    response = _post(
        admin_client_api, _child_body(org, "team", resource_type="cpu_hours")
    )

    body = assert_invalid(response, "resource_type")
    assert "concurrent_gpus" in body["message"]
    assert Quota.objects.count() == before


def test_it_refuses_a_child_above_its_parents_limit(admin_client_api, db):
    org = QuotaFactory(limit_value=Decimal("100"))
    before = Quota.objects.count()

    response = _post(admin_client_api, _child_body(org, "team", limit_value="100.0001"))

    body = assert_invalid(response, "limit_value")
    assert "100.0001" in body["message"]
    assert Quota.objects.count() == before


def test_it_refuses_a_child_above_its_parents_limit_even_with_overcommit(
    admin_client_api, db
):
    org = QuotaFactory(limit_value=Decimal("100"), overcommit_ratio=Decimal("3"))
    before = Quota.objects.count()

    response = _post(admin_client_api, _child_body(org, "team", limit_value=101))

    assert_invalid(response, "limit_value")
    assert Quota.objects.count() == before


def test_it_accepts_a_child_equal_to_its_parents_limit(admin_client_api, db):
    org = QuotaFactory(limit_value=Decimal("100"))

    response = _post(admin_client_api, _child_body(org, "team", limit_value=100))

    assert response.status_code == 201


def test_it_refuses_a_child_that_would_overfill_its_parent(admin_client_api, tree):
    org, _, _ = tree  # org 100 already promises 60 to its team
    before = Quota.objects.count()

    response = _post(admin_client_api, _child_body(org, "team", limit_value=41))

    body = assert_invalid(response, "limit_value")
    assert "101" in body["message"]
    assert "100" in body["message"]
    assert Quota.objects.count() == before


def test_it_refuses_a_child_that_overfills_its_parent_by_the_smallest_amount(
    admin_client_api, tree
):
    org, _, _ = tree
    before = Quota.objects.count()

    response = _post(admin_client_api, _child_body(org, "team", limit_value="40.0001"))

    assert_invalid(response, "limit_value")
    assert Quota.objects.count() == before


def test_it_accepts_children_that_exactly_fill_their_parent(admin_client_api, tree):
    org, team, _ = tree

    new_team = _post(admin_client_api, _child_body(org, "team", limit_value=40))
    new_user = _post(admin_client_api, _child_body(team, "user", limit_value=30))

    assert new_team.status_code == 201
    assert new_user.status_code == 201


def test_overcommit_lets_children_be_promised_more_than_the_parents_limit(
    admin_client_api, db
):
    org = QuotaFactory(limit_value=Decimal("100"), overcommit_ratio=Decimal("1.5"))

    first = _post(
        admin_client_api, _child_body(org, "team", entity_id="a", limit_value=80)
    )
    second = _post(
        admin_client_api, _child_body(org, "team", entity_id="b", limit_value=70)
    )

    assert first.status_code == 201
    assert second.status_code == 201
    assert sum(q.limit_value for q in org.children.all()) == Decimal("150")


def test_overcommit_still_caps_the_childrens_sum_at_the_effective_limit(
    admin_client_api, db
):
    org = QuotaFactory(limit_value=Decimal("100"), overcommit_ratio=Decimal("1.5"))
    QuotaFactory(entity_type=EntityType.TEAM, parent=org, limit_value=Decimal("80"))
    QuotaFactory(entity_type=EntityType.TEAM, parent=org, limit_value=Decimal("70"))
    before = Quota.objects.count()

    response = _post(admin_client_api, _child_body(org, "team", limit_value="0.0001"))

    body = assert_invalid(response, "limit_value")
    assert "150" in body["message"]
    assert Quota.objects.count() == before


def test_it_refuses_an_unknown_parent(admin_client_api, db):
    before = Quota.objects.count()

    response = _post(
        admin_client_api,
        _org_body(entity_type="team", parent_id="00000000-0000-4000-8000-000000000000"),
    )

    body = assert_invalid(response, "parent_id")
    assert "00000000-0000-4000-8000-000000000000" in body["message"]
    assert Quota.objects.count() == before


@pytest.mark.parametrize("parent_id", ["not-a-uuid", "", 12.5, True, {}, [1]])
def test_it_refuses_a_parent_id_that_is_not_a_uuid(admin_client_api, db, parent_id):
    before = Quota.objects.count()

    response = _post(
        admin_client_api, _org_body(entity_type="team", parent_id=parent_id)
    )

    assert_invalid(response, "parent_id")
    assert Quota.objects.count() == before


# --- Soft and burst limits ----------------------------------------------------------


def test_it_accepts_soft_limit_limit_and_burst_limit_all_equal(admin_client_api, db):
    response = _post(
        admin_client_api, _org_body(limit_value=100, soft_limit=100, burst_limit=100)
    )

    assert response.status_code == 201


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        pytest.param({"soft_limit": "100.0001"}, "soft_limit", id="soft-above-limit"),
        pytest.param({"burst_limit": "99.9999"}, "burst_limit", id="burst-below-limit"),
    ],
)
def test_it_refuses_a_soft_limit_above_or_a_burst_limit_below_the_limit(
    admin_client_api, db, limits, field
):
    before = Quota.objects.count()

    response = _post(admin_client_api, _org_body(limit_value=100, **limits))

    assert_invalid(response, field)
    assert Quota.objects.count() == before


def test_it_reports_both_a_bad_soft_and_a_bad_burst_limit(admin_client_api, db):
    before = Quota.objects.count()

    response = _post(
        admin_client_api, _org_body(limit_value=100, soft_limit=101, burst_limit=99)
    )

    assert_invalid(response, "soft_limit", "burst_limit")
    assert Quota.objects.count() == before


def test_it_checks_soft_and_burst_limits_on_a_child_too(admin_client_api, tree):
    org, _, _ = tree
    before = Quota.objects.count()

    response = _post(
        admin_client_api, _child_body(org, "team", limit_value=10, soft_limit=11)
    )

    assert_invalid(response, "soft_limit")
    assert Quota.objects.count() == before


# --- Resource types, duplicates -----------------------------------------------------


def test_it_refuses_an_unknown_resource_type_and_lists_the_valid_ones(
    admin_client_api, db
):
    ResourceTypeFactory(slug="tpu_hours")
    before = Quota.objects.count()

    response = _post(admin_client_api, _org_body(resource_type="widgets"))

    body = assert_invalid(response, "resource_type")
    for slug in [*BUILTIN_RESOURCE_TYPES, "tpu_hours"]:
        assert slug in body["message"]
        assert slug in " ".join(body["fields"]["resource_type"])
    assert Quota.objects.count() == before


@pytest.mark.parametrize("resource_type", ["", "   ", None, 5, ["concurrent_gpus"]])
def test_it_refuses_a_resource_type_that_is_not_a_slug(
    admin_client_api, db, resource_type
):
    before = Quota.objects.count()

    response = _post(admin_client_api, _org_body(resource_type=resource_type))

    assert_invalid(response, "resource_type")
    assert Quota.objects.count() == before


def test_it_refuses_a_duplicate_quota_with_already_exists(admin_client_api, db):
    QuotaFactory(entity_id="globex", limit_value=Decimal("5"))
    before = Quota.objects.count()

    response = _post(admin_client_api, _org_body())

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "already_exists"
    assert "globex" in body["message"]
    assert Quota.objects.count() == before
    assert Quota.objects.get(entity_id="globex").limit_value == Decimal("5")


def test_it_refuses_a_duplicate_spelled_in_upper_case(admin_client_api, db):
    QuotaFactory(entity_id="globex")
    before = Quota.objects.count()

    response = _post(
        admin_client_api,
        _org_body(entity_type="ORGANIZATION", resource_type="CONCURRENT_GPUS"),
    )

    assert response.status_code == 409
    assert response.json()["error"] == "already_exists"
    assert Quota.objects.count() == before


def test_it_refuses_a_duplicate_child_with_already_exists(admin_client_api, tree):
    org, _, _ = tree
    before = Quota.objects.count()

    response = _post(
        admin_client_api, _child_body(org, "team", entity_id="research", limit_value=1)
    )

    assert response.status_code == 409
    assert response.json()["error"] == "already_exists"
    assert Quota.objects.count() == before


# --- Malformed amounts --------------------------------------------------------------

BAD_AMOUNTS = [
    pytest.param('"1.00001"', id="five-places-string"),
    pytest.param("1.00001", id="five-places-number"),
    pytest.param("0.00001", id="five-places-below-one"),
    pytest.param("1e-5", id="five-places-exponent"),
    pytest.param('"NaN"', id="nan-string"),
    pytest.param('"nan"', id="nan-lower-string"),
    pytest.param('"Infinity"', id="infinity-string"),
    pytest.param('"-Infinity"', id="minus-infinity-string"),
    pytest.param('"inf"', id="inf-string"),
    pytest.param("-1", id="negative-number"),
    pytest.param('"-1"', id="negative-string"),
    pytest.param("-0.0001", id="smallest-negative"),
    pytest.param("12345678901234567", id="seventeen-integer-digits"),
    pytest.param('"12345678901234567"', id="seventeen-integer-digits-string"),
    pytest.param("10000000000000000", id="ten-to-the-sixteen"),
    pytest.param("1e400", id="huge-exponent-number"),
    pytest.param('"1e3"', id="exponent-string"),
    pytest.param('"1E3"', id="upper-exponent-string"),
    pytest.param('"\\u0661\\u0662"', id="arabic-indic-digits"),
    pytest.param('"\\uff11\\uff12"', id="fullwidth-digits"),
    pytest.param('"\\u0967"', id="devanagari-digit"),
    pytest.param('"0x10"', id="hex-string"),
    pytest.param('"1,000"', id="thousands-separator"),
    pytest.param('"1.2.3"', id="two-points"),
    pytest.param('"abc"', id="letters"),
    pytest.param('""', id="empty-string"),
    pytest.param('"   "', id="blank-string"),
    pytest.param("true", id="true"),
    pytest.param("false", id="false"),
    pytest.param("{}", id="empty-object"),
    pytest.param('{"value": 1}', id="object"),
    pytest.param("[]", id="empty-list"),
    pytest.param("[1]", id="list"),
]


@pytest.mark.parametrize("fragment", BAD_AMOUNTS)
@pytest.mark.parametrize("field", ["limit_value", "soft_limit", "burst_limit"])
def test_it_refuses_a_malformed_amount(admin_client_api, db, field, fragment):
    before = Quota.objects.count()

    # A limit that any number the fragment might be read as would satisfy, so only
    # the amount's format can be refused.
    limit = (
        {}
        if field == "limit_value"
        else {"limit_value": 100 if field == "soft_limit" else 0}
    )

    response = _post_raw(admin_client_api, _raw_org_body(field, fragment, **limit))

    body = assert_invalid(response, field)
    assert "limit_value (" not in body["message"]
    assert Quota.objects.count() == before


def test_it_refuses_a_null_limit_value(admin_client_api, db):
    response = _post(admin_client_api, _org_body(limit_value=None))

    assert_invalid(response, "limit_value")
    assert Quota.objects.count() == 0


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_it_refuses_non_finite_json_constants(admin_client_api, db, constant):
    response = _post_raw(admin_client_api, _raw_org_body("limit_value", constant))

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert Quota.objects.count() == 0


def test_it_never_rounds_an_amount_it_refuses(admin_client_api, db):
    response = _post_raw(admin_client_api, _raw_org_body("limit_value", "99.99995"))

    body = assert_invalid(response, "limit_value")
    assert "decimal places" in " ".join(body["fields"]["limit_value"])
    assert Quota.objects.count() == 0


# --- Overcommit ratio ---------------------------------------------------------------


@pytest.mark.parametrize("ratio", ["1", "1.01", "2.5", "999.99", '"999.99"', '"1.5"'])
def test_it_accepts_an_overcommit_ratio_from_one_to_999_99(admin_client_api, db, ratio):
    response = _post_raw(admin_client_api, _raw_org_body("overcommit_ratio", ratio))

    assert response.status_code == 201
    expected = Decimal(ratio.strip('"'))
    assert exact(response)["overcommit_ratio"] == expected
    assert Quota.objects.get(entity_id="globex").overcommit_ratio == expected


@pytest.mark.parametrize(
    "ratio",
    [
        pytest.param("1.001", id="three-places"),
        pytest.param('"1.001"', id="three-places-string"),
        pytest.param("1.255", id="three-places-above-one"),
        pytest.param("0.99", id="below-one"),
        pytest.param("0", id="zero"),
        pytest.param("-2", id="negative"),
        pytest.param("999.991", id="three-places-at-the-top"),
        pytest.param("1000", id="one-thousand"),
        pytest.param("1000.00", id="one-thousand-with-places"),
        pytest.param("99999", id="far-above"),
        pytest.param('"NaN"', id="nan-string"),
        pytest.param("true", id="boolean"),
        pytest.param('"1e2"', id="exponent-string"),
    ],
)
def test_it_refuses_an_overcommit_ratio_out_of_range(admin_client_api, db, ratio):
    response = _post_raw(admin_client_api, _raw_org_body("overcommit_ratio", ratio))

    assert_invalid(response, "overcommit_ratio")
    assert Quota.objects.count() == 0


# --- Identity fields and required fields --------------------------------------------


@pytest.mark.parametrize(
    "entity_id",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("x" * 256, id="256-characters"),
        pytest.param(None, id="null"),
        pytest.param(["a"], id="list"),
        pytest.param({"id": "a"}, id="object"),
        pytest.param("nul\x00byte", id="nul-character"),
    ],
)
def test_it_refuses_a_bad_entity_id(admin_client_api, db, entity_id):
    response = _post(admin_client_api, _org_body(entity_id=entity_id))

    assert_invalid(response, "entity_id")
    assert Quota.objects.count() == 0


@pytest.mark.parametrize("entity_type", ["project", "", None, 1, "organisation"])
def test_it_refuses_an_unknown_entity_type(admin_client_api, db, entity_type):
    response = _post(admin_client_api, _org_body(entity_type=entity_type))

    assert_invalid(response, "entity_type")
    assert Quota.objects.count() == 0


@pytest.mark.parametrize(
    "missing", ["entity_type", "entity_id", "resource_type", "limit_value"]
)
def test_it_refuses_a_body_without_a_required_field(admin_client_api, db, missing):
    body = _org_body()
    del body[missing]

    response = _post(admin_client_api, body)

    assert_invalid(response, missing)
    assert Quota.objects.count() == 0


def test_it_lists_every_missing_field_at_once(admin_client_api, db):
    response = _post(admin_client_api, {})

    assert_invalid(response, "entity_type", "entity_id", "resource_type", "limit_value")
    assert Quota.objects.count() == 0


def test_it_refuses_an_empty_body(admin_client_api, db):
    response = _post_raw(admin_client_api, "")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert Quota.objects.count() == 0


@pytest.mark.parametrize("text", ["[]", '"quota"', "42", "null"])
def test_it_refuses_a_body_that_is_not_an_object(admin_client_api, db, text):
    response = _post_raw(admin_client_api, text)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert Quota.objects.count() == 0


def test_it_refuses_malformed_json(admin_client_api, db):
    response = _post_raw(admin_client_api, '{"entity_type": "organization",')

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_input"
    assert "Traceback" not in body["message"]
    assert Quota.objects.count() == 0


def test_it_refuses_a_body_that_is_not_json(admin_client_api, db):
    response = admin_client_api.post(
        QUOTAS,
        data="entity_type=organization&entity_id=globex&resource_type=concurrent_gpus"
        "&limit_value=100",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert Quota.objects.count() == 0


# --- Who may create ------------------------------------------------------------------


def test_it_refuses_a_request_without_credentials(api_client, db):
    response = _post(api_client, _org_body())

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert Quota.objects.count() == 0


@pytest.mark.parametrize("client_fixture", ["viewer_client", "scheduler_client"])
def test_it_refuses_a_key_without_the_admin_role(request, db, client_fixture):
    client = request.getfixturevalue(client_fixture)

    response = _post(client, _org_body())

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert Quota.objects.count() == 0


# --- The service, called directly (as the admin and the commands do) -----------------


@pytest.mark.parametrize(
    ("parent_level", "limit", "field"),
    [
        # A user directly under the organization.
        pytest.param(0, "1", "parent_id", id="user-under-an-organization"),
        # The team (60) already promises 30 to alice.
        pytest.param(1, "30.0001", "limit_value", id="child-overfilling-its-parent"),
    ],
)
def test_the_service_refuses_a_user_quota_the_hierarchy_does_not_allow(
    tree, parent_level, limit, field
):
    parent = tree[parent_level]
    before = Quota.objects.count()

    with pytest.raises(InvalidInput) as refused:
        services.quota_create(
            entity_type=EntityType.USER,
            entity_id="bob",
            resource_type="concurrent_gpus",
            parent_id=parent.id,
            limit_value=Decimal(limit),
        )

    assert field in refused.value.fields
    assert Quota.objects.count() == before


def test_the_service_refuses_a_duplicate(tree):
    org, _, _ = tree
    before = Quota.objects.count()

    with pytest.raises(AlreadyExists):
        services.quota_create(
            entity_type=EntityType.TEAM,
            entity_id="research",
            resource_type="concurrent_gpus",
            parent_id=org.id,
            limit_value=Decimal("1"),
        )

    assert Quota.objects.count() == before


def test_the_service_sets_depth_from_the_parent(tree):
    _, team, _ = tree

    quota = services.quota_create(
        entity_type=EntityType.USER,
        entity_id="bob",
        resource_type="concurrent_gpus",
        parent_id=team.id,
        limit_value=Decimal("30"),
    )

    assert quota.depth == 2
    assert quota.version == 1
    assert quota.used == 0


def test_a_null_overcommit_ratio_means_the_default(admin_client_api, db):
    response = admin_client_api.post(
        "/api/v1/quotas",
        {
            "entity_type": "organization",
            "entity_id": "nullratio",
            "resource_type": "concurrent_gpus",
            "limit_value": 10,
            "overcommit_ratio": None,
        },
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["overcommit_ratio"] == 1
