"""The engine's SQL files are the one source of truth (allocations/engine.py).

Every live function in the database must be exactly what its file creates, and the
newest migration that installs the engine must have been written for the files as
they are now: a file changed without a new migration would leave existing
databases running the old function while a fresh test database runs the new one.
"""

import importlib
import pkgutil

import pytest
from django.db import connection, transaction

from allocations import engine

pytestmark = pytest.mark.django_db

_DEFINITION = """
SELECT p.proname, pg_get_functiondef(p.oid)
  FROM pg_proc p
 WHERE p.pronamespace = %s::regnamespace AND p.proname = ANY (%s)
 ORDER BY p.proname, p.oid
"""


def _definitions(cursor, schema: str) -> dict[str, list[str]]:
    cursor.execute(_DEFINITION, [schema, list(engine.FUNCTIONS)])
    found: dict[str, list[str]] = {}
    for name, definition in cursor.fetchall():
        found.setdefault(name, []).append(definition)
    return found


def test_every_live_function_is_exactly_what_its_file_creates():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
        live = _definitions(cursor, schema)
        # Create the files' functions in a scratch schema, read PostgreSQL's own
        # rendering of both, then roll the scratch schema back.
        with transaction.atomic():
            cursor.execute("CREATE SCHEMA hq_engine_files")
            cursor.execute(f"SET LOCAL search_path = hq_engine_files, {schema}")
            cursor.execute("SET LOCAL check_function_bodies = off")
            for name in engine.FUNCTIONS:
                cursor.execute(engine.sql_text(name))
            from_files = _definitions(cursor, "hq_engine_files")
            transaction.set_rollback(True)

    assert sorted(live) == sorted(engine.FUNCTIONS), "a function is missing"
    for name in engine.FUNCTIONS:
        assert len(live[name]) == 1, f"{name} has several overloads in the database"
        expected = from_files[name][0].replace("hq_engine_files.", f"{schema}.")
        assert live[name][0] == expected, f"{name} differs from allocations/sql"


def _install_operations():
    package = importlib.import_module("allocations.migrations")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"allocations.migrations.{info.name}")
        for operation in module.Migration.operations:
            if isinstance(operation, engine.InstallEngine):
                yield info.name, operation


def test_the_newest_install_migration_was_written_for_the_files_as_they_are():
    name, newest = list(_install_operations())[-1]

    assert newest.digest == engine.engine_digest(), (
        f"allocations/sql changed after migration {name}: add a migration with "
        f"InstallEngine(digest={engine.engine_digest()!r})"
    )
