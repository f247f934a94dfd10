"""SQL functions kept as files are the one source of truth
(horizon_quota/sqlfunctions.py): the engine's (allocations/sql) and the budget
clock's and periods' (quotas/sql), the outbox's and the alerts'
(quotas/events/sql).

Every live function in the database must be exactly what its file creates, and the
newest migration that installs each set must have been written for the files as
they are now: a file changed without a new migration would leave existing
databases running the old function while a fresh test database runs the new one.
"""

import importlib
import pkgutil

import pytest
from django.db import connection, transaction

from allocations.engine import ENGINE, InstallEngine
from quotas.budgets import QUOTA_FUNCTIONS, InstallQuotaFunctions
from quotas.events.services import EVENT_FUNCTIONS, InstallEventFunctions

pytestmark = pytest.mark.django_db

SETS = {
    "allocations": (ENGINE, InstallEngine),
    "quotas": (QUOTA_FUNCTIONS, InstallQuotaFunctions),
    "quotas.events": (EVENT_FUNCTIONS, InstallEventFunctions),
}

_DEFINITION = """
SELECT p.proname, pg_get_functiondef(p.oid)
  FROM pg_proc p
 WHERE p.pronamespace = %s::regnamespace AND p.proname = ANY (%s)
 ORDER BY p.proname, p.oid
"""


def _definitions(cursor, schema: str, names) -> dict[str, list[str]]:
    cursor.execute(_DEFINITION, [schema, list(names)])
    found: dict[str, list[str]] = {}
    for name, definition in cursor.fetchall():
        found.setdefault(name, []).append(definition)
    return found


@pytest.mark.parametrize("app", SETS)
def test_every_live_function_is_exactly_what_its_file_creates(app):
    functions, _ = SETS[app]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
        live = _definitions(cursor, schema, functions.names)
        # Create the files' functions in a scratch schema, read PostgreSQL's own
        # rendering of both, then roll the scratch schema back.
        with transaction.atomic():
            cursor.execute("CREATE SCHEMA hq_files")
            cursor.execute(f"SET LOCAL search_path = hq_files, {schema}")
            cursor.execute("SET LOCAL check_function_bodies = off")
            for name in functions.names:
                cursor.execute(functions.text(name))
            from_files = _definitions(cursor, "hq_files", functions.names)
            transaction.set_rollback(True)

    assert sorted(live) == sorted(functions.names), "a function is missing"
    for name in functions.names:
        assert len(live[name]) == 1, f"{name} has several overloads in the database"
        expected = from_files[name][0].replace("hq_files.", f"{schema}.")
        assert live[name][0] == expected, f"{name} differs from its file"


def _install_operations(app: str, operation_class):
    package = importlib.import_module(f"{app}.migrations")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{app}.migrations.{info.name}")
        for operation in module.Migration.operations:
            if isinstance(operation, operation_class):
                yield info.name, operation


@pytest.mark.parametrize("app", SETS)
def test_the_newest_install_migration_was_written_for_the_files_as_they_are(app):
    functions, operation_class = SETS[app]
    name, newest = list(_install_operations(app, operation_class))[-1]

    assert newest.digest == functions.digest(), (
        f"{functions.directory} changed after migration {name}: add a migration "
        f"with {operation_class.__name__}(digest={functions.digest()!r})"
    )
