"""GET /api/v1/quotas: order, filters and cursor paging (DESIGN §5, "Lists")."""

import base64
import uuid
from datetime import timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from quotas.models import EntityType, Quota, ResourceType
from tests.factories import QuotaFactory
from tests.helpers import LINK_NEXT, QUOTA_WIRE_FIELDS, QUOTAS, next_link, row_ids, walk


def _quotas_created_in_order(count: int) -> list[Quota]:
    """``count`` root quotas with distinct ``created_at``, oldest first.

    Rows created in one test transaction all get the same database ``Now()``, so the
    timestamps are set explicitly to make "newest first" observable.
    """
    start = timezone.now() - timedelta(hours=1)
    return [
        QuotaFactory(
            entity_id=f"org-{index}", created_at=start + timedelta(seconds=index)
        )
        for index in range(count)
    ]


def _bulk_quotas(count: int, prefix: str = "bulk") -> None:
    ids = [uuid.uuid4() for _ in range(count)]
    Quota.objects.bulk_create(
        Quota(
            id=quota_id,
            path=[quota_id],
            entity_type=EntityType.ORGANIZATION,
            entity_id=f"{prefix}-{index}",
            resource_type_id="concurrent_gpus",
            limit_value=Decimal("1"),
        )
        for index, quota_id in enumerate(ids)
    )


# --- Order and shape ---------------------------------------------------------------


def test_it_lists_quotas_newest_first(viewer_client):
    quotas = _quotas_created_in_order(5)

    response = viewer_client.get(QUOTAS)

    assert response.status_code == 200
    assert row_ids(response) == [str(quota.id) for quota in reversed(quotas)]


def test_the_body_is_a_plain_json_array_of_quotas(viewer_client, tree):
    response = viewer_client.get(QUOTAS)

    body = response.json()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert isinstance(body, list)
    assert len(body) == 3
    assert set(body[0]) >= QUOTA_WIRE_FIELDS


def test_an_empty_list_is_an_empty_array_without_a_link_header(viewer_client):
    response = viewer_client.get(QUOTAS)

    assert response.status_code == 200
    assert response.json() == []
    assert "Link" not in response.headers


def test_a_short_list_has_no_link_header(viewer_client, tree):
    response = viewer_client.get(QUOTAS)

    assert len(response.json()) == 3
    assert "Link" not in response.headers


def test_every_role_can_list(admin_client_api, scheduler_client, viewer_client, tree):
    for client in (admin_client_api, scheduler_client, viewer_client):
        response = client.get(QUOTAS)

        assert response.status_code == 200
        assert len(response.json()) == 3


def test_listing_without_a_key_is_refused(api_client, tree):
    response = api_client.get(QUOTAS)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


# --- Filters -----------------------------------------------------------------------


def test_it_filters_by_entity_type(viewer_client, tree):
    org, team, user = tree

    response = viewer_client.get(QUOTAS, {"entity_type": "team"})

    assert response.status_code == 200
    assert row_ids(response) == [str(team.id)]


def test_the_entity_type_filter_ignores_case(viewer_client, tree):
    _, team, _ = tree

    for value in ("TEAM", "Team", " team "):
        response = viewer_client.get(QUOTAS, {"entity_type": value})

        assert response.status_code == 200
        assert row_ids(response) == [str(team.id)], value


@pytest.mark.parametrize(
    ("query", "valid"),
    [
        ({"entity_type": "department"}, "organization, team, user"),
        ({"resource_type": "tpu_hours"}, "concurrent_gpus"),
    ],
    ids=["entity_type", "resource_type"],
)
def test_an_unknown_type_is_a_400_naming_the_valid_ones(
    viewer_client, tree, query, valid
):
    response = viewer_client.get(QUOTAS, query)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert valid in response.json()["message"]


def test_it_filters_by_entity_id(viewer_client, tree):
    _, _, user = tree

    response = viewer_client.get(QUOTAS, {"entity_id": "alice"})

    assert response.status_code == 200
    assert row_ids(response) == [str(user.id)]


def test_it_filters_by_entity_id_across_resource_types(viewer_client, tree):
    _, _, user = tree
    memory = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="alice",
        resource_type=ResourceType.objects.get(slug="memory_gb"),
    )

    response = viewer_client.get(QUOTAS, {"entity_id": "alice"})

    assert sorted(row_ids(response)) == sorted([str(user.id), str(memory.id)])


def test_it_filters_by_resource_type(viewer_client, tree):
    memory = QuotaFactory(resource_type=ResourceType.objects.get(slug="memory_gb"))

    response = viewer_client.get(QUOTAS, {"resource_type": "memory_gb"})

    assert response.status_code == 200
    assert row_ids(response) == [str(memory.id)]


def test_the_resource_type_filter_ignores_case(viewer_client, tree):
    memory = QuotaFactory(resource_type=ResourceType.objects.get(slug="memory_gb"))

    response = viewer_client.get(QUOTAS, {"resource_type": "MEMORY_GB"})

    assert response.status_code == 200
    assert row_ids(response) == [str(memory.id)]


def test_it_filters_by_parent_id(viewer_client, tree):
    org, team, _ = tree
    second_team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="infra",
        parent=org,
        limit_value=Decimal("10"),
    )

    response = viewer_client.get(QUOTAS, {"parent_id": str(org.id)})

    assert response.status_code == 200
    assert sorted(row_ids(response)) == sorted([str(team.id), str(second_team.id)])


def test_filters_combine(viewer_client, tree):
    org, team, _ = tree
    QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="research",
        resource_type=ResourceType.objects.get(slug="memory_gb"),
    )

    response = viewer_client.get(
        QUOTAS,
        {
            "entity_type": "team",
            "entity_id": "research",
            "resource_type": "concurrent_gpus",
        },
    )

    assert row_ids(response) == [str(team.id)]


def test_an_invalid_parent_id_is_refused(viewer_client, tree):
    response = viewer_client.get(QUOTAS, {"parent_id": "not-a-uuid"})

    body = response.json()
    assert response.status_code == 400
    assert body["error"] == "invalid_input"
    assert "parent_id" in body["message"]
    assert "parent_id" in body["fields"]


def test_an_unknown_query_parameter_is_ignored(viewer_client, tree):
    response = viewer_client.get(QUOTAS, {"colour": "blue"})

    assert response.status_code == 200
    assert len(response.json()) == 3


# --- Paging ------------------------------------------------------------------------


def test_the_default_page_holds_100_quotas(viewer_client):
    _bulk_quotas(101)

    response = viewer_client.get(QUOTAS)

    assert response.status_code == 200
    assert len(response.json()) == 100
    assert next_link(response) is not None


def test_a_list_of_exactly_one_page_has_no_link_header(viewer_client):
    _bulk_quotas(100)

    response = viewer_client.get(QUOTAS)

    assert len(response.json()) == 100
    assert "Link" not in response.headers


def test_the_limit_parameter_sets_the_page_size(viewer_client):
    _quotas_created_in_order(5)

    response = viewer_client.get(QUOTAS, {"limit": 2})

    assert len(response.json()) == 2
    assert next_link(response) is not None


def test_the_link_header_follows_rfc_8288(viewer_client):
    _quotas_created_in_order(3)

    response = viewer_client.get(QUOTAS, {"limit": 2})

    header = response.headers["Link"]
    assert LINK_NEXT.match(header)
    next_url = urlsplit(next_link(response))
    assert next_url.path == QUOTAS
    query = parse_qs(next_url.query)
    assert query["limit"] == ["2"]
    assert len(query["cursor"]) == 1


def test_following_the_link_header_walks_every_quota_once_newest_first(viewer_client):
    quotas = _quotas_created_in_order(7)

    pages = walk(viewer_client, f"{QUOTAS}?limit=3")

    assert [len(page) for page in pages] == [3, 3, 1]
    walked = [quota_id for page in pages for quota_id in page]
    assert walked == [str(quota.id) for quota in reversed(quotas)]


def test_paging_is_exact_when_many_quotas_share_a_timestamp(viewer_client):
    # Rows created in one transaction share created_at; the cursor must still step
    # over each of them exactly once.
    _bulk_quotas(25)

    pages = walk(viewer_client, f"{QUOTAS}?limit=4")

    walked = [quota_id for page in pages for quota_id in page]
    assert len(walked) == 25
    assert len(set(walked)) == 25
    assert set(walked) == {str(pk) for pk in Quota.objects.values_list("id", flat=True)}
    assert [len(page) for page in pages] == [4, 4, 4, 4, 4, 4, 1]


def test_paging_ends_when_more_than_1000_quotas_share_a_timestamp(viewer_client):
    # An import creates its whole hierarchy in one transaction. DRF's own cursor
    # counted an offset through such ties, capped it at 1000, and from then on its
    # next link pointed at the same page forever.
    _bulk_quotas(2500)

    pages = walk(viewer_client, f"{QUOTAS}?limit=1000")

    walked = [quota_id for page in pages for quota_id in page]
    assert [len(page) for page in pages] == [1000, 1000, 500]
    assert len(set(walked)) == 2500


def test_paging_keeps_the_filters(viewer_client, tree):
    _, team, _ = tree
    for index in range(5):
        QuotaFactory(
            entity_type=EntityType.TEAM,
            entity_id=f"team-{index}",
            resource_type=ResourceType.objects.get(slug="memory_gb"),
        )

    pages = walk(
        viewer_client, f"{QUOTAS}?entity_type=TEAM&resource_type=memory_gb&limit=2"
    )

    walked = [quota_id for page in pages for quota_id in page]
    assert len(walked) == 5
    assert str(team.id) not in walked
    assert Quota.objects.filter(id__in=walked, resource_type="memory_gb").count() == 5


def test_a_quota_created_while_paging_does_not_shift_later_pages(viewer_client):
    quotas = _quotas_created_in_order(4)

    first = viewer_client.get(QUOTAS, {"limit": 2})
    QuotaFactory(entity_id="latecomer", created_at=timezone.now())
    second = viewer_client.get(next_link(first))

    assert row_ids(first) == [str(quotas[3].id), str(quotas[2].id)]
    assert row_ids(second) == [str(quotas[1].id), str(quotas[0].id)]


def test_a_limit_above_the_maximum_is_clamped_to_1000(viewer_client):
    _bulk_quotas(1005)

    response = viewer_client.get(QUOTAS, {"limit": 5000})

    assert response.status_code == 200
    assert len(response.json()) == 1000
    next_url = next_link(response)
    assert next_url is not None
    rest = viewer_client.get(next_url)
    assert len(rest.json()) == 5
    assert not set(row_ids(rest)) & set(row_ids(response))
    assert "Link" not in rest.headers


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "1e3", "٣", " "])
def test_an_invalid_limit_is_refused(viewer_client, limit):
    response = viewer_client.get(QUOTAS, {"limit": limit})

    body = response.json()
    assert response.status_code == 400
    assert body["error"] == "invalid_input"
    assert "limit" in body["message"]


def test_an_empty_limit_means_the_default(viewer_client, tree):
    response = viewer_client.get(f"{QUOTAS}?limit=")

    assert response.status_code == 200
    assert len(response.json()) == 3


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "%%%",
        "a b",
        "é",
        "x" * 5000,
        # DRF's own cursor format, base64 of a query string.
        "cD0yMDI0",
        "bz0tMQ==",
        # Well-formed base64 holding the wrong JSON.
        _cursor("not json"),
        _cursor("{}"),
        _cursor("[]"),
        _cursor('["2024-01-01T00:00:00+00:00"]'),
        _cursor("[1, 2]"),
        _cursor('["2024", "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"]'),
        _cursor('["2024-01-01T00:00:00", "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"]'),
        _cursor('["2024-01-01T00:00:00+00:00", "not-a-uuid"]'),
        _cursor(
            '["0001-01-01T00:00:00+14:00", "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"]'
        ),
        _cursor('["", "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"]'),
    ],
)
def test_a_garbage_cursor_is_refused(viewer_client, tree, cursor):
    response = viewer_client.get(QUOTAS, {"cursor": cursor})

    body = response.json()
    assert response.status_code == 400
    assert body["error"] == "invalid_input"
    assert body["fields"] == {"cursor": ["Invalid cursor."]}


def test_a_list_request_takes_a_bounded_number_of_queries(
    viewer_client, django_assert_max_num_queries
):
    _bulk_quotas(3, prefix="few")
    with django_assert_max_num_queries(3):
        few = viewer_client.get(QUOTAS)
    _bulk_quotas(200, prefix="many")

    with django_assert_max_num_queries(3):
        many = viewer_client.get(QUOTAS)

    assert len(few.json()) == 3
    assert len(many.json()) == 100


def test_a_child_listing_takes_no_query_per_row(
    viewer_client, tree, django_assert_max_num_queries
):
    org, _, _ = tree
    for index in range(30):
        QuotaFactory(
            entity_type=EntityType.TEAM,
            entity_id=f"team-{index}",
            parent=org,
            limit_value=Decimal("1"),
        )

    with django_assert_max_num_queries(3):
        response = viewer_client.get(QUOTAS, {"parent_id": str(org.id), "limit": 1000})

    assert len(response.json()) == 31
