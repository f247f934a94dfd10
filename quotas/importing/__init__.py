"""Export the quota hierarchy as a YAML or JSON document, and import one back.

The document (``manage.py export_quotas`` writes it, people edit it)::

    version: 1
    quotas:
      gpu_hours:                      # a resource type
        organizations:                # root quotas, by entity type
          acme:                       # entity_id
            limit_value: '10000'
            soft_limit: '8000'        # optional
            burst_limit: '12000'      # optional
            overcommit_ratio: '1'     # optional, 1 when left out
            teams:                    # an organization's children are teams
              acme-research:
                limit_value: '6000'
                users:                # a team's children are users
                  alice: {limit_value: '3000'}

Nesting carries the hierarchy, so a quota's parent and entity type are where it
stands. Amounts are written as strings and read exactly (YAML and JSON numbers are
read as decimals too, never as floats), so nothing is ever rounded. Exporting is
canonical (resource types, entity types and ids sorted), so export → import →
export gives back the same text.

Importing makes the database match the document, in two steps:

1. ``hierarchy_import_plan`` (``plan``) parses the text, builds the whole target
   state and checks every rule of DESIGN §3 on it in memory (plus what depends on
   current usage), collecting *every* problem with where it is in the file; when
   there are none it computes the operations that turn the database into the
   target.
2. ``hierarchy_import_apply`` (``apply``) runs the operations in one transaction
   through the quota services, so their checks and locks still apply, and rolls
   everything back on the first refusal. The order keeps every intermediate state
   valid (see ``plan._order_operations``), and the result is compared with the
   target before the commit.

The package, by step: ``document`` (the model: keys, groups, problems),
``text`` (YAML and JSON, written and read with lines), ``export``, ``reader`` (a
parsed document into the target state, with every problem), ``plan`` and
``apply``. Every rule of DESIGN §3 is asked of ``quotas.rules``.
"""

from quotas.importing.apply import ImportFailed, hierarchy_import_apply
from quotas.importing.document import FORMATS
from quotas.importing.export import hierarchy_export, hierarchy_size
from quotas.importing.plan import hierarchy_import_plan
from quotas.importing.text import detect_format, hierarchy_parse, hierarchy_render

__all__ = [
    "FORMATS",
    "ImportFailed",
    "detect_format",
    "hierarchy_export",
    "hierarchy_import_apply",
    "hierarchy_import_plan",
    "hierarchy_parse",
    "hierarchy_render",
    "hierarchy_size",
]
