"""The domain rules (quotas/rules.py), each tested once, from one table of cases.

The allocation engine does the same arithmetic in SQL; the cases run through
``hq_cap`` and ``hq_fits`` as well, and the ORM filters are checked against the
Python predicates on the same rows.
"""

from decimal import Decimal as D

import pytest
from django.db import connection

from quotas import rules
from quotas.models import Quota
from quotas.rules import UsageState
from tests.factories import QuotaFactory

# limit_value, burst_limit, ratio, allow_burst, carried_over → cap
CAPS = [
    (D("100"), None, D("1"), False, D("0"), D("100")),
    (D("100"), None, D("1"), True, D("0"), D("100")),
    (D("100"), D("150"), D("1"), False, D("0"), D("100")),
    (D("100"), D("150"), D("1"), True, D("0"), D("150")),
    (D("100"), D("150"), D("1.5"), True, D("0"), D("225")),
    (D("100"), None, D("2.25"), False, D("0"), D("225")),
    (D("0"), None, D("1"), False, D("0"), D("0")),
    (D("0.0001"), None, D("999.99"), False, D("0"), D("0.099999")),
    # A budget's carry-over adds to either limit for its period (DESIGN §3a).
    (D("100"), None, D("1"), False, D("30"), D("130")),
    (D("100"), D("150"), D("2"), True, D("30"), D("360")),
    (D("100"), D("150"), D("2"), False, D("30"), D("260")),
]

# used, requested, cap → fits
FITS = [
    (D("0"), D("100"), D("100"), True),
    (D("0"), D("100.0001"), D("100"), False),
    (D("99.9999"), D("0.0001"), D("100"), True),
    (D("100"), D("0.0001"), D("100"), False),
    (D("150"), D("1"), D("100"), False),
    (D("0"), D("0"), D("0"), True),
]

# used, limit_value, soft_limit, ratio → state
STATES = [
    (D("0"), D("100"), None, D("1"), UsageState.OK),
    (D("50"), D("100"), D("50"), D("1"), UsageState.OK),
    (D("50.0001"), D("100"), D("50"), D("1"), UsageState.SOFT),
    (D("99.9999"), D("100"), D("50"), D("1"), UsageState.SOFT),
    (D("100"), D("100"), None, D("1"), UsageState.FULL),
    (D("100"), D("100"), D("50"), D("1"), UsageState.FULL),
    (D("100.0001"), D("100"), None, D("1"), UsageState.OVER),
    (D("120"), D("100"), None, D("1.5"), UsageState.OVERCOMMITTED),
    (D("150"), D("100"), None, D("1.5"), UsageState.FULL),
    (D("151"), D("100"), None, D("1.5"), UsageState.OVER),
    (D("0"), D("0"), None, D("1"), UsageState.FULL),
]


@pytest.mark.parametrize(
    ("limit", "burst", "ratio", "allow", "carried", "expected"), CAPS
)
def test_cap(limit, burst, ratio, allow, carried, expected):
    cap = rules.cap(
        limit_value=limit,
        burst_limit=burst,
        overcommit_ratio=ratio,
        allow_burst=allow,
        carried_over=carried,
    )

    assert cap == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("limit", "burst", "ratio", "allow", "carried", "expected"), CAPS
)
def test_the_engine_computes_the_same_cap(
    limit, burst, ratio, allow, carried, expected
):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT hq_cap(%s::numeric, %s::numeric, %s::numeric, %s, %s::numeric)",
            [limit, burst, ratio, allow, carried],
        )
        assert cursor.fetchone()[0] == expected


# limit_value, carryover_limit, carried_over, consumed → handed on
CARRIES = [
    (D("100"), D("30"), D("0"), D("50"), D("30")),
    (D("100"), D("60"), D("0"), D("45"), D("55")),
    (D("100"), D("60"), D("20"), D("45"), D("60")),
    (D("100"), D("60"), D("0"), D("150"), D("0")),  # overrun: nothing carries
    (D("100"), D("0"), D("0"), D("0"), D("0")),
]


@pytest.mark.parametrize(("limit", "cap", "carried", "consumed", "handed"), CARRIES)
def test_carry_forward(limit, cap, carried, consumed, handed):
    assert (
        rules.carry_forward(
            carryover_limit=cap,
            limit_value=limit,
            carried_over=carried,
            consumed=consumed,
        )
        == handed
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("limit", "cap", "carried", "consumed", "handed"), CARRIES)
def test_the_engine_carries_the_same(limit, cap, carried, consumed, handed):
    quota = QuotaFactory(
        limit_value=limit,
        carryover_limit=cap,
        period="month",
        period_start="2026-11-01T00:00:00Z",
        period_end="2026-12-01T00:00:00Z",
    )
    Quota.objects.filter(id=quota.id).update(carried_over=carried, consumed=consumed)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT handed_on FROM hq_closed_periods("
            "(SELECT q FROM quotas q WHERE id = %s), '2026-12-01T00:00:00Z', 'UTC')",
            [quota.id],
        )
        assert cursor.fetchone()[0] == handed


@pytest.mark.parametrize(
    ("allocated", "reported", "total", "charged", "from_reserve"),
    [
        (D("32"), D("0"), D("10"), D("10"), D("10")),
        (D("32"), D("10"), D("25"), D("15"), D("15")),
        (D("32"), D("25"), D("40"), D("15"), D("7")),  # an overrun past 32
        (D("32"), D("40"), D("50"), D("10"), D("0")),
        (D("32"), D("10"), D("10"), D("0"), D("0")),
    ],
)
def test_consumption_charge(allocated, reported, total, charged, from_reserve):
    assert rules.consumption_charge(
        allocated=allocated, reported=reported, total=total
    ) == (charged, from_reserve)


@pytest.mark.parametrize(("used", "requested", "cap", "expected"), FITS)
def test_fits(used, requested, cap, expected):
    assert rules.fits(used=used, requested=requested, cap=cap) is expected


@pytest.mark.django_db
@pytest.mark.parametrize(("used", "requested", "cap", "expected"), FITS)
def test_the_engine_admits_the_same(used, requested, cap, expected):
    with connection.cursor() as cursor:
        cursor.execute("SELECT hq_fits(%s, %s, %s)", [used, requested, cap])
        assert cursor.fetchone()[0] is expected


@pytest.mark.parametrize(("used", "limit", "soft", "ratio", "state"), STATES)
def test_usage_state(used, limit, soft, ratio, state):
    found = rules.usage_state(
        used=used, limit_value=limit, soft_limit=soft, overcommit_ratio=ratio
    )

    assert found == state
    effective = rules.effective_limit(limit, ratio)
    # "At hard limit" has one meaning: no room left.
    assert rules.at_hard_limit(used=used, effective=effective) is (
        state in (UsageState.FULL, UsageState.OVER)
    )


@pytest.mark.django_db
def test_the_orm_filters_select_what_the_predicates_say():
    quotas = [
        QuotaFactory(limit_value=limit, soft_limit=soft, overcommit_ratio=ratio)
        for _, limit, soft, ratio, _ in STATES
    ]
    for quota, (used, *_ignored) in zip(quotas, STATES, strict=True):
        Quota.objects.filter(id=quota.id).update(reserved=used)
        quota.used = used

    at_hard = set(Quota.objects.filter(rules.at_hard_limit_q()).values_list("id"))
    above_soft = set(Quota.objects.filter(rules.above_soft_limit_q()).values_list("id"))

    for quota in quotas:
        assert ((quota.id,) in at_hard) is rules.at_hard_limit(
            used=quota.used, effective=quota.effective_limit
        )
        assert ((quota.id,) in above_soft) is rules.above_soft_limit(
            used=quota.used, soft_limit=quota.soft_limit
        )


@pytest.mark.parametrize(
    ("used", "effective", "percent"),
    [
        (D("0"), D("100"), D("0.00")),
        (D("20"), D("30"), D("66.67")),
        (D("150"), D("100"), D("150.00")),
        (D("5"), D("0"), D("0.00")),
    ],
)
def test_utilization_percent_is_uncapped_and_zero_without_a_limit(
    used, effective, percent
):
    assert rules.utilization_percent(used=used, effective=effective) == percent


@pytest.mark.parametrize(
    ("limit", "soft", "burst", "fields"),
    [
        (D("100"), None, None, []),
        (D("100"), D("100"), D("100"), []),
        (D("100"), D("100.0001"), None, ["soft_limit"]),
        (D("100"), None, D("99.9999"), ["burst_limit"]),
        (D("100"), D("101"), D("99"), ["soft_limit", "burst_limit"]),
    ],
)
def test_own_limits_keep_soft_below_limit_below_burst(limit, soft, burst, fields):
    breaches = rules.own_limit_breaches(
        limit_value=limit, soft_limit=soft, burst_limit=burst
    )

    assert [breach.field for breach in breaches] == fields


@pytest.mark.parametrize(
    ("entity_type", "parent_type", "allowed"),
    [
        ("organization", None, True),
        ("team", None, True),
        ("user", None, True),
        ("team", "organization", True),
        ("user", "team", True),
        ("organization", "organization", False),
        ("team", "team", False),
        ("user", "organization", False),
        ("user", "user", False),
        ("team", "user", False),
    ],
)
def test_parent_types(entity_type, parent_type, allowed):
    breach = rules.parent_type_breach(entity_type=entity_type, parent_type=parent_type)

    assert (breach is None) is allowed
    if breach is not None:
        assert breach.field == "parent_id"


@pytest.mark.parametrize(
    ("limit", "parent_limit", "siblings", "parent_effective", "fields"),
    [
        (D("60"), D("100"), D("40"), D("100"), []),
        (D("100"), D("100"), D("0"), D("100"), []),
        (D("100.0001"), D("100"), D("0"), D("200"), ["limit_value"]),
        (D("60"), D("100"), D("40.0001"), D("100"), ["limit_value"]),
        # Overcommit: the children may be promised more than the parent's limit.
        (D("100"), D("100"), D("100"), D("200"), []),
    ],
)
def test_a_child_fits_its_parent(
    limit, parent_limit, siblings, parent_effective, fields
):
    breaches = [
        breach
        for breach in (
            rules.child_limit_breach(
                limit_value=limit, parent_limit_value=parent_limit
            ),
            rules.children_sum_breach(
                children_total=siblings + limit, parent_effective=parent_effective
            ),
        )
        if breach is not None
    ]

    assert [breach.field for breach in breaches][:1] == fields


@pytest.mark.parametrize(
    ("limit", "ratio", "largest", "total", "breaks"),
    [
        (D("100"), D("1"), None, D("0"), False),
        (D("100"), D("1"), D("100"), D("100"), False),
        (D("99"), D("1"), D("100"), D("100"), True),
        (D("100"), D("1"), D("60"), D("120"), True),
        (D("100"), D("1.2"), D("60"), D("120"), False),
    ],
)
def test_a_parent_holds_its_children(limit, ratio, largest, total, breaks):
    breaches = rules.family_breaches(
        limit_value=limit,
        overcommit_ratio=ratio,
        largest_child=largest,
        children_total=total,
    )

    assert bool(breaches) is breaks


@pytest.mark.parametrize(
    ("old", "new", "used", "needs_force"),
    [
        (D("100"), D("80"), D("50"), False),
        (D("100"), D("80"), D("90"), True),
        (D("100"), D("80"), D("80"), False),
        # Raising part of the way back after a forced lowering needs no force.
        (D("50"), D("70"), D("90"), False),
    ],
)
def test_lowering_below_usage_needs_force(old, new, used, needs_force):
    assert (
        rules.lowering_needs_force(old_effective=old, new_effective=new, used=used)
        is needs_force
    )
