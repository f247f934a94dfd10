"""The admin as the hierarchy console: what ``QuotaAdmin`` shows beyond a plain list.

* ``tree``: the changelist as the tree (order, indentation, usage bars, filters).
* ``panels``: the change page's read-only panels, extended by other apps through
  ``PANEL_PROVIDERS``.
* ``charts``: inline SVG charts drawn on the server (no script, no external host).
* ``dashboard``: the console's front page, extended through ``DASHBOARD_PROVIDERS``.
* ``export``: CSV of the filtered quota list.

Usage states come from ``quotas.rules``: one meaning of "at hard limit" (used ≥
effective limit) in the filters, the bars, the labels and the dashboard.
"""

from quotas.admin_console.panels import (
    PANEL_PROVIDERS,
    PANEL_ROWS,
    bounded,
    changelist_url,
    moment,
    quota_panels,
    unit_of,
)
from quotas.admin_console.tree import (
    STATE_LABELS,
    TREE_ORDERING,
    HardLimitFilter,
    QuotaTreeChangeList,
    SoftLimitFilter,
    tree_entity,
    usage_bar,
)

__all__ = [
    "PANEL_PROVIDERS",
    "PANEL_ROWS",
    "STATE_LABELS",
    "TREE_ORDERING",
    "HardLimitFilter",
    "QuotaTreeChangeList",
    "SoftLimitFilter",
    "bounded",
    "changelist_url",
    "moment",
    "quota_panels",
    "tree_entity",
    "unit_of",
    "usage_bar",
]
