"""manage.py verify_usage: promise P2 over the whole database."""

import subprocess
import sys
import uuid

import pytest
from django.db.models import F

from allocations.models import Allocation
from quotas.models import Quota
from tests.helpers import allocate_direct, run_command

pytestmark = pytest.mark.django_db


def _run(*args):
    code, out, _ = run_command("verify_usage", *args)
    return code, out


def test_it_exits_0_when_the_books_are_exact(tree):
    allocate_direct(amount="5")

    code, out = _run()

    assert code == 0
    assert "Books exact" in out


def test_it_reports_every_drifted_level_and_exits_1(tree):
    org, team, user = tree
    allocate_direct(amount="5")
    Quota.objects.filter(id=team.id).update(reserved=F("reserved") + 2)

    code, out = _run()

    assert code == 1
    assert "team research" in out
    assert "stored 7" in out and "actual 5" in out and "delta 2" in out
    assert "alice" not in out  # the user's level is exact


def test_it_reports_an_active_allocation_whose_quota_is_gone(tree):
    org, team, user = tree
    allocation = allocate_direct(amount="5")
    Allocation.objects.filter(id=allocation.id).update(quota_id=uuid.uuid4())

    code, out = _run()

    assert code == 1
    assert "orphan" in out


def test_root_limits_the_check_to_one_subtree(tree):
    org, team, user = tree
    allocate_direct(amount="5")
    Quota.objects.filter(id=org.id).update(reserved=F("reserved") + 1)

    assert _run("--root", str(team.id))[0] == 0
    assert _run("--root", str(org.id))[0] == 1


def test_a_bad_root_id_is_a_usage_error_with_exit_code_2():
    result = subprocess.run(
        [sys.executable, "manage.py", "verify_usage", "--root", "nonsense"],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "invalid UUID" in result.stderr
