"""Fill a database to the size DESIGN §8 names, fast, with set-based SQL (issue #13).

``populate(cursor, ...)`` adds organizations → teams → users on concurrent_gpus,
allocations spread over the users (a share of them active, the rest released) and
their history, and sets every quota's ``reserved`` to what its subtree's active
allocations hold, so P1 and P2 hold afterwards. It writes rows directly, as a
restore would: the numbers matter here, not the path each row took.

Used by ``bench_allocate.py --scale`` (100k quotas, 1M allocations, 5M history
rows) and, much smaller, by ``tests/test_query_plans.py``.
"""

from dataclasses import dataclass

_QUOTA_COLUMNS = """
    id, entity_type, entity_id, depth, limit_value, overcommit_ratio, version,
    parent_id, resource_type, path, carried_over, carryover_limit, consumed, period,
    reserved, alerted_level, soft_alerted
"""

_STEPS = [
    # Organizations, teams and users, numbered so allocations can be dealt out.
    """
    CREATE TEMP TABLE bulk_orgs ON COMMIT DROP AS
    SELECT gen_random_uuid() AS id, format('bulk-org-%%s', o) AS name
      FROM generate_series(1, %(organizations)s) AS o
    """,
    f"""
    INSERT INTO quotas ({_QUOTA_COLUMNS})
    SELECT id, 'organization', name, 0, 1000000000, 1, 1, NULL, 'concurrent_gpus',
           ARRAY[id], 0, 0, 0, 'none', 0, 0, false
      FROM bulk_orgs
    """,
    """
    CREATE TEMP TABLE bulk_teams ON COMMIT DROP AS
    SELECT gen_random_uuid() AS id, o.id AS parent, format('%%s-team-%%s', o.name, t)
           AS name
      FROM bulk_orgs AS o, generate_series(1, %(teams)s) AS t
    """,
    f"""
    INSERT INTO quotas ({_QUOTA_COLUMNS})
    SELECT id, 'team', name, 1, 1000000000 / %(teams)s, 1, 1, parent,
           'concurrent_gpus', ARRAY[id, parent], 0, 0, 0, 'none', 0, 0, false
      FROM bulk_teams
    """,
    """
    CREATE TEMP TABLE bulk_users ON COMMIT DROP AS
    SELECT gen_random_uuid() AS id, t.id AS parent, t.parent AS org,
           format('%%s-user-%%s', t.name, u) AS name,
           row_number() OVER () - 1 AS n
      FROM bulk_teams AS t, generate_series(1, %(users)s) AS u
    """,
    f"""
    INSERT INTO quotas ({_QUOTA_COLUMNS})
    SELECT id, 'user', name, 2, 1000000000 / %(teams)s / %(users)s, 1, 1, parent,
           'concurrent_gpus', ARRAY[id, parent, org], 0, 0, 0, 'none', 0, 0, false
      FROM bulk_users
    """,
    # Allocations over the last 30 days: one in %(active_every)s still active.
    """
    CREATE TEMP TABLE bulk_allocations ON COMMIT DROP AS
    SELECT gen_random_uuid() AS id, u.id AS quota_id, u.name AS entity_id,
           gen_random_uuid() AS job_id, (1 + g %% 4)::numeric AS amount,
           g %% %(active_every)s = 0 AS active,
           now() - interval '30 days' * (g::float / %(allocations)s) AS at
      FROM generate_series(1, %(allocations)s) AS g
      JOIN bulk_users AS u ON u.n = g %% (SELECT count(*) FROM bulk_users)
    """,
    """
    INSERT INTO allocations (id, entity_type, entity_id, job_id, resource_type,
                             allocated_value, status, allocated_at, released_at,
                             expires_at, is_burst, version, metadata, quota_id,
                             budget_started_at, consumed_value, rate)
    SELECT id, 'user', entity_id, job_id, 'concurrent_gpus', amount,
           CASE WHEN active THEN 'active' ELSE 'released' END, at,
           CASE WHEN active THEN NULL ELSE at + interval '1 hour' END,
           NULL, false, 1, '{}', quota_id, at, 0, NULL
      FROM bulk_allocations
    """,
    # History: each allocation's allocate row, then reports, then its release.
    """
    INSERT INTO usage_history (id, entity_type, entity_id, resource_type,
                               allocated_value, operation, job_id, timestamp,
                               metadata, allocation_id, quota_id, consumed_delta)
    SELECT gen_random_uuid(), 'user', a.entity_id, 'concurrent_gpus', a.amount,
           CASE WHEN k = 1 THEN 'allocate'
                WHEN k = %(history_per_allocation)s AND NOT a.active THEN 'release'
                ELSE 'consume' END,
           a.job_id, a.at + interval '1 minute' * k, '{}', a.id, a.quota_id, 0
      FROM bulk_allocations AS a, generate_series(1, %(history_per_allocation)s) k
    """,
    # Every level holds what its subtree's active allocations hold (P2).
    """
    UPDATE quotas AS q SET reserved = held.total
      FROM (SELECT level.id, sum(a.amount) AS total
              FROM bulk_allocations AS a
              JOIN quotas AS leaf ON leaf.id = a.quota_id
             CROSS JOIN unnest(leaf.path) AS level(id)
             WHERE a.active
             GROUP BY level.id) AS held
     WHERE q.id = held.id
    """,
]


@dataclass(frozen=True)
class Size:
    organizations: int
    teams: int  # per organization
    users: int  # per team
    allocations: int
    history_per_allocation: int = 5
    active_every: int = 10

    @property
    def quotas(self) -> int:
        return self.organizations * (1 + self.teams * (1 + self.users))


# 1,000 × (1 + 10 × (1 + 9)) = 101,000 quotas; 1M allocations; 5M history rows.
DESIGN_SCALE = Size(organizations=1000, teams=10, users=9, allocations=1_000_000)


def populate(connection, size: Size, *, vacuum: bool = True) -> None:
    """Add ``size`` worth of rows in one transaction, then refresh the planner's
    statistics (``VACUUM ANALYZE``; ``ANALYZE`` alone inside a transaction, as in a
    test). ``connection`` is a Django connection."""
    from django.db import transaction

    params = {
        "organizations": size.organizations,
        "teams": size.teams,
        "users": size.users,
        "allocations": size.allocations,
        "history_per_allocation": size.history_per_allocation,
        "active_every": size.active_every,
    }
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for step in _STEPS:
            cursor.execute(step, params)
    with connection.cursor() as cursor:
        for table in ("quotas", "allocations", "usage_history"):
            cursor.execute(f"{'VACUUM (ANALYZE)' if vacuum else 'ANALYZE'} {table}")
