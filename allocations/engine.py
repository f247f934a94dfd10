"""The allocation engine's SQL: where it lives, how it is installed, how it is called.

Every write to ``quotas.used`` happens inside one of the PL/pgSQL functions in
``allocations/sql/`` (one readable file per function, the one source of truth),
called from ``allocations.services`` as a single statement. Outside an atomic block
that statement is its own transaction: PostgreSQL commits it as it ends, with no
extra round trip, so the rows near the root stay locked only from their update to
that commit. The lock order they follow is documented in ``quotas/locking.py``.

Installing
----------
A migration installs the functions with ``InstallEngine``: it drops every function
of those names (whatever their arguments were) and creates them again from the
files, in one transaction. A change to a file therefore comes with a new migration
that runs ``InstallEngine`` again, carrying the digest of the files it was written
for; ``tests/test_engine_sql.py`` fails while the newest digest and the files
disagree, and compares every live function (``pg_get_functiondef``) with its file.

Function bodies are not checked at creation (``check_function_bodies = off``, as
``pg_dump`` does): on a fresh database an early migration installs today's files,
which may name columns that later migrations add. Nothing calls the engine during
migrations, and the newest ``InstallEngine`` runs after every schema change.
"""

import hashlib
import json
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.migrations.operations.base import Operation

SQL_DIR = Path(__file__).resolve().parent / "sql"

# Creation order: each function after the ones it calls.
FUNCTIONS = (
    "hq_cap",
    "hq_fits",
    "hq_in_scope",
    "hq_deadline",
    "hq_lock_budget",
    "hq_level",
    "hq_levels",
    "hq_check",
    "hq_allocate",
    "hq_release",
)


class Outcome(StrEnum):
    """What an engine function answers in its ``outcome`` member."""

    CHECKED = "checked"
    GRANTED = "granted"
    REPLAYED = "replayed"
    CONFLICT = "conflict"
    STALE = "stale"
    DENIED = "denied"
    NO_QUOTA = "no_quota"
    RELEASED = "released"
    NOT_FOUND = "not_found"
    NOT_EXPIRED = "not_expired"
    ALREADY_RELEASED = "already_released"


def sql_text(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def engine_digest() -> str:
    """A digest of every function file, in creation order."""
    digest = hashlib.sha256()
    for name in FUNCTIONS:
        digest.update(name.encode() + b"\0" + sql_text(name).encode() + b"\0")
    return digest.hexdigest()[:16]


_DROP_OVERLOADS = """
SELECT format('DROP FUNCTION %%s', p.oid::regprocedure)
  FROM pg_proc p
 WHERE p.proname = ANY (%s) AND p.pronamespace = current_schema()::regnamespace
"""


def install_engine(cursor) -> None:
    """Drop every engine function (any signature) and create it from its file."""
    cursor.execute("SET LOCAL check_function_bodies = off")
    cursor.execute(_DROP_OVERLOADS, [list(FUNCTIONS)])
    for (statement,) in cursor.fetchall():
        cursor.execute(statement)
    for name in FUNCTIONS:
        cursor.execute(sql_text(name))


class InstallEngine(Operation):
    """Migration operation: (re)install the engine's functions from their files.

    ``digest`` records which files the migration was written for (see the module
    docstring); it does not change what is installed. Reversing it leaves the
    functions in place: each version of the engine runs on the schema before it.
    """

    reduces_to_sql = False
    reversible = True

    def __init__(self, digest: str):
        self.digest = digest

    def deconstruct(self):
        return self.__class__.__name__, [], {"digest": self.digest}

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        with schema_editor.connection.cursor() as cursor:
            install_engine(cursor)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass

    def describe(self):
        return f"Install the allocation engine from allocations/sql ({self.digest})"


def lock_budget_ms() -> int:
    """The budget every lock wait of one engine call shares (0: no limit)."""
    return settings.DATABASE_LOCK_TIMEOUT_MS


def call(function: str, *params) -> dict[str, Any]:
    """Call one engine function as one statement; its JSON answer, amounts exact."""
    placeholders = ", ".join(["%s"] * len(params))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}({placeholders})::text", params)
        raw = cursor.fetchone()[0]
    return json.loads(raw, parse_float=Decimal)
