"""A paginator for admin changelists over tables that grow to millions of rows.

Django's admin paginator runs ``SELECT COUNT(*)`` over the filtered queryset on every
page; over a million usage-history rows that scan costs more than everything else on
the page. ``EstimatedCountPaginator`` counts exactly while that is cheap and
estimates otherwise:

1. It counts the matching rows, but stops after ``count_cap`` + 1 of them (Django
   counts a sliced queryset as ``COUNT(*)`` over the ``LIMIT``ed subquery). Up to the
   cap, that is the exact count, in one query, as before.
2. Past the cap, the count is PostgreSQL's planner estimate for the query
   (``EXPLAIN``: ``pg_class.reltuples`` scaled to the table's current size, and the
   column statistics for the filters; no rows are read), and never less than the
   rows already seen, so every page up to the cap stays reachable.

``count_is_estimate`` tells a template whether the count is a guess. Admin classes
using it also set ``show_full_result_count = False``, or Django counts the unfiltered
table once more for the "N total" hint.
"""

import json

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property


def planner_row_estimate(queryset: QuerySet) -> int:
    """PostgreSQL's estimate of how many rows ``queryset`` returns; reads no rows."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # psycopg returns json already decoded; be tolerant
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    # Counts stop after this many rows; past it the count is an estimate.
    count_cap = 10_000

    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        seen = queryset.order_by()[: self.count_cap + 1].count()
        if seen <= self.count_cap:
            return seen
        self.count_is_estimate = True
        return max(seen, planner_row_estimate(queryset))
