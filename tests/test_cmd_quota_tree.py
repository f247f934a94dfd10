"""``manage.py quota_tree``: the hierarchy as a tree with usage (DESIGN §7)."""

import io
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from quotas.demo import seed_demo
from quotas.models import EntityType, Quota, ResourceType
from quotas.services import quota_update
from quotas.tree import status_marks, utilization
from tests.factories import QuotaFactory
from tests.helpers import allocate_direct

pytestmark = pytest.mark.django_db


def _tree(*args: str) -> str:
    out = io.StringIO()
    call_command("quota_tree", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def demo():
    """The demo hierarchy with some gpu_hours in use: alice above her soft limit,
    carol at her hard limit, dave barely started."""
    seed_demo()
    allocate_direct(entity_id="alice", amount="2500", resource_type="gpu_hours")
    allocate_direct(entity_id="bob", amount="1500", resource_type="gpu_hours")
    allocate_direct(entity_id="carol", amount="2000", resource_type="gpu_hours")
    allocate_direct(entity_id="dave", amount="1", resource_type="gpu_hours")


def test_it_draws_the_demo_gpu_hours_tree_with_bars_and_marks(demo):
    assert _tree("--resource", "gpu_hours") == (
        "gpu_hours (GPU-hours, time based)\n"
        "organization acme       limit 10000  used 6001  available 3999  "
        "[█████████░░░░░░░]  60%\n"
        "├── team acme-platform  limit 4000   used 2001  available 1999  "
        "[████████░░░░░░░░]  50%\n"
        "│   ├── user carol      limit 2000   used 2000  available 0     "
        "[████████████████] 100%  above soft limit 1600; AT HARD LIMIT\n"
        "│   └── user dave       limit 2000   used 1     available 1999  "
        "[█░░░░░░░░░░░░░░░]  <1%\n"
        "└── team acme-research  limit 6000   used 4000  available 2000  "
        "[██████████░░░░░░]  66%\n"
        "    ├── user alice      limit 3000   used 2500  available 500   "
        "[█████████████░░░]  83%  above soft limit 2400\n"
        "    └── user bob        limit 3000   used 1500  available 1500  "
        "[████████░░░░░░░░]  50%\n"
        "\n"
        "7 quotas in 1 resource type.\n"
    )


def test_it_draws_one_tree_per_resource_type_sorted_by_slug(demo):
    output = _tree()

    headers = [
        line for line in output.splitlines() if re.fullmatch(r"[a-z_]+ \(.*\)", line)
    ]
    assert headers == [
        "concurrent_gpus (GPUs, concurrent)",
        "cpu_hours (CPU-hours, time based)",
        "gpu_hours (GPU-hours, time based)",
        "memory_gb (GB, concurrent)",
        "storage_gb (GB, concurrent)",
    ]
    assert output.count("organization acme ") == 5
    assert output.count("    └── user bob ") == 5
    assert output.endswith("\n35 quotas in 5 resource types.\n")


def test_resource_types_without_quotas_are_left_out_unless_asked_for(demo):
    ResourceType.objects.create(
        slug="tpu_hours", name="TPU", unit="TPU-h", kind="concurrent"
    )

    assert "tpu_hours" not in _tree()
    assert _tree("--resource", "tpu_hours") == (
        "tpu_hours (TPU-h, concurrent)\n  (no quotas)\n\nNo quotas.\n"
    )


def test_an_empty_database_prints_no_quotas(db):
    assert _tree() == "No quotas.\n"


def test_siblings_are_ordered_by_entity_type_then_entity_id(db):
    # Roots may be of any type; children are created out of order on purpose.
    QuotaFactory(entity_type=EntityType.USER, entity_id="a-user")
    QuotaFactory(entity_type=EntityType.TEAM, entity_id="b-team")
    org = QuotaFactory(entity_type=EntityType.ORGANIZATION, entity_id="z-org")
    for team_id in ("t3", "t1", "T2", "t10"):
        QuotaFactory(
            entity_type=EntityType.TEAM,
            entity_id=team_id,
            parent=org,
            limit_value=Decimal("10"),
        )

    labels = [line.split("  ")[0] for line in _tree().splitlines()[1:8]]

    assert labels == [
        "organization z-org",
        "├── team T2",
        "├── team t1",
        "├── team t10",
        "└── team t3",
        "team b-team",
        "user a-user",
    ]


def test_the_same_hierarchy_always_prints_the_same_text(demo):
    assert _tree() == _tree()


def test_overcommit_shows_the_effective_limit(demo):
    org = Quota.objects.get(entity_id="acme", resource_type="concurrent_gpus")
    quota_update(quota_id=org.id, changes={"overcommit_ratio": Decimal("1.5")})
    allocate_direct(
        entity_id="alice",
        amount="16",
        resource_type="concurrent_gpus",
        allow_burst=True,
    )

    lines = _tree("--resource", "concurrent_gpus").splitlines()

    assert lines[1].startswith(
        "organization acme       limit 64 ×1.5 = 96 effective  used 16  available 80"
    )
    assert lines[1].endswith("[██░░░░░░░░░░░░░░]  16%")
    # A ratio of 1 shows the limit alone.
    assert "team acme-research  limit 38      " in lines[5]
    assert "effective" not in lines[5]


def test_usage_above_the_hard_limit_is_marked_over_it(tree):
    org, team, user = tree
    allocate_direct(entity_id="alice", amount="30")
    # Lowered below usage with force, as an admin may: running jobs keep theirs.
    quota_update(quota_id=user.id, changes={"limit_value": Decimal("20")}, force=True)

    line = _tree("alice").splitlines()[1]

    assert line.endswith("[████████████████] 150%  OVER HARD LIMIT")


def test_an_entity_id_limits_the_output_to_its_subtrees(demo):
    output = _tree("acme-research")

    assert "acme-platform" not in output
    assert "organization acme" not in output
    assert output.count("team acme-research ") == 5
    assert "├── user alice " in output and "└── user bob " in output
    assert output.endswith("\n15 quotas in 5 resource types.\n")


def test_an_entity_and_a_resource_give_one_subtree(demo):
    lines = _tree("acme-research", "--resource", "gpu_hours").splitlines()

    assert [line.split("  ")[0] for line in lines] == [
        "gpu_hours (GPU-hours, time based)",
        "team acme-research",
        "├── user alice",
        "└── user bob",
        "",
        "3 quotas in 1 resource type.",
    ]


def test_a_user_prints_its_own_line(demo):
    lines = _tree("carol", "--resource", "gpu_hours").splitlines()

    assert lines[1].startswith("user carol  limit 2000  used 2000  available 0")
    assert lines[-1] == "1 quota in 1 resource type."


def test_an_entity_inside_a_subtree_of_the_same_id_is_drawn_once(db):
    org = QuotaFactory(entity_id="acme")
    team = QuotaFactory(
        entity_type=EntityType.TEAM, entity_id="x", parent=org, limit_value=10
    )
    QuotaFactory(entity_type=EntityType.USER, entity_id="x", parent=team, limit_value=5)

    lines = _tree("x").splitlines()

    assert [line.split("  ")[0] for line in lines[1:3]] == ["team x", "└── user x"]
    assert lines[-1] == "2 quotas in 1 resource type."


def test_an_unknown_entity_is_an_error_with_exit_status_1(demo):
    with pytest.raises(CommandError) as error:
        _tree("nobody")

    assert str(error.value) == "No quota for entity 'nobody'."
    assert error.value.returncode == 1


def test_an_entity_without_a_quota_on_the_resource_is_an_error(demo):
    ResourceType.objects.create(
        slug="tpu_hours", name="TPU", unit="TPU-h", kind="concurrent"
    )

    with pytest.raises(CommandError) as error:
        _tree("alice", "--resource", "tpu_hours")

    assert str(error.value) == "No quota for entity 'alice' on tpu_hours."


def test_an_unknown_resource_is_an_error_listing_the_valid_ones(demo):
    with pytest.raises(CommandError) as error:
        _tree("--resource", "bananas")

    assert "Unknown resource_type 'bananas'" in str(error.value)
    assert "gpu_hours" in str(error.value) and "storage_gb" in str(error.value)
    assert error.value.returncode == 1


def test_the_resource_is_matched_without_regard_to_case(demo):
    assert _tree("--resource", "GPU_Hours") == _tree("--resource", "gpu_hours")


def test_an_unknown_option_is_a_usage_error_with_exit_status_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "quota_tree", "--bogus"],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def _add_users(count: int) -> None:
    """More users under each demo team, so a query per node would show."""
    for team in Quota.objects.filter(entity_type=EntityType.TEAM):
        for number in range(count):
            QuotaFactory(
                entity_type=EntityType.USER,
                entity_id=f"{team.entity_id}-user-{number}",
                resource_type=team.resource_type,
                parent=team,
                limit_value=Decimal("0"),
            )


def test_the_whole_tree_is_read_in_a_bounded_number_of_queries(
    demo, django_assert_max_num_queries
):
    _add_users(20)

    with django_assert_max_num_queries(2):
        output = _tree()

    assert output.endswith("\n235 quotas in 5 resource types.\n")


def test_a_subtree_is_read_in_a_bounded_number_of_queries(
    demo, django_assert_max_num_queries
):
    _add_users(20)

    with django_assert_max_num_queries(3):
        output = _tree("acme-research", "--resource", "gpu_hours")

    assert output.endswith("\n23 quotas in 1 resource type.\n")


@pytest.mark.parametrize(
    ("limit", "used", "bar", "percent"),
    [
        ("100", "0", "[░░░░░░░░░░░░░░░░]", "0%"),
        ("100", "0.01", "[█░░░░░░░░░░░░░░░]", "<1%"),
        ("100", "52", "[████████░░░░░░░░]", "52%"),
        ("100", "99.99", "[███████████████░]", "99%"),
        ("100", "100", "[████████████████]", "100%"),
        ("100", "250", "[████████████████]", "250%"),
        ("0", "0", "[░░░░░░░░░░░░░░░░]", "0%"),
        ("0", "5", "[████████████████]", "—"),
    ],
)
def test_the_bar_and_percentage_follow_utilization(limit, used, bar, percent):
    quota = Quota(limit_value=Decimal(limit), used=Decimal(used))

    assert utilization(quota) == (bar, percent)


@pytest.mark.parametrize(
    ("used", "marks"),
    [
        ("80", ""),
        ("80.5", "above soft limit 80"),
        ("100", "above soft limit 80; AT HARD LIMIT"),
        ("120", "above soft limit 80; OVER HARD LIMIT"),
    ],
)
def test_the_marks_name_the_soft_and_hard_limits(used, marks):
    quota = Quota(
        limit_value=Decimal("100"), soft_limit=Decimal("80"), used=Decimal(used)
    )

    assert status_marks(quota) == marks
