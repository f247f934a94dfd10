"""hq_allocate: a retry whose earlier allocation's lease has run out.

Until now the function replayed any active allocation holding the job's key, even
one whose lease had run out and only waited for the sweeper. Now it answers
``stale`` with that allocation; the service expires it (its own short transaction,
through hq_release) and allocates again. Keeping the expiry out of this function
means it never holds quota rows while waiting on another transaction's key.
"""

import importlib

from django.db import migrations

_v2 = importlib.import_module("allocations.migrations.0003_sql_functions_on_path")

_BEFORE = _v2.FUNCTIONS[
    _v2.FUNCTIONS.index("CREATE FUNCTION hq_allocate(") : _v2.FUNCTIONS.index(
        "-- Release or expire an active allocation"
    )
].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)

_ANCHOR = """        IF FOUND THEN
            IF v_alloc.entity_type = p_entity_type"""
assert _ANCHOR in _BEFORE

_AFTER = _BEFORE.replace(
    _ANCHOR,
    """        IF FOUND THEN
            IF v_alloc.expires_at IS NOT NULL AND v_alloc.expires_at <= now() THEN
                -- Its lease has run out: the caller expires it and comes back.
                RETURN json_build_object('outcome', 'stale',
                                         'allocation', row_to_json(v_alloc));
            END IF;
            IF v_alloc.entity_type = p_entity_type""",
)


class Migration(migrations.Migration):
    dependencies = [("allocations", "0005_usage_repair")]

    operations = [migrations.RunSQL(_AFTER, _BEFORE)]
