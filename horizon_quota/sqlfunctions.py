"""SQL functions kept as readable files, one function per file, installed by
migrations.

An app lists its functions in creation order (``SqlFunctions``); a migration installs
them with an operation that drops every function of those names, whatever their
arguments were, and creates them again from the files, in one transaction. A change
to a file comes with a new migration that installs again, carrying the digest of the
files it was written for; ``tests/test_engine_sql.py`` fails while the newest digest
and the files disagree, and compares every live function (``pg_get_functiondef``)
with what its file creates.

Function bodies are not checked at creation (``check_function_bodies = off``, as
``pg_dump`` does): on a fresh database an early migration installs today's files,
which may name columns that later migrations add. Nothing calls these functions
during migrations, and the newest install runs after every schema change.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from django.db.migrations.operations.base import Operation

_DROP_OVERLOADS = """
SELECT format('DROP FUNCTION %%s', p.oid::regprocedure)
  FROM pg_proc p
 WHERE p.proname = ANY (%s) AND p.pronamespace = current_schema()::regnamespace
   AND p.prorettype <> 'trigger'::regtype
"""


@dataclass(frozen=True)
class SqlFunctions:
    """The SQL functions of one app: a directory of ``<name>.sql`` files and the
    names in creation order (each function after the ones it calls)."""

    directory: Path
    names: tuple[str, ...]

    def text(self, name: str) -> str:
        return (self.directory / f"{name}.sql").read_text()

    def digest(self) -> str:
        digest = hashlib.sha256()
        for name in self.names:
            digest.update(name.encode() + b"\0" + self.text(name).encode() + b"\0")
        return digest.hexdigest()[:16]

    def install(self, cursor) -> None:
        """Drop every function of these names (any signature), create each from
        its file. Trigger functions, which take no arguments and which their
        triggers depend on, are replaced in place instead."""
        cursor.execute("SET LOCAL check_function_bodies = off")
        cursor.execute(_DROP_OVERLOADS, [list(self.names)])
        for (statement,) in cursor.fetchall():
            cursor.execute(statement)
        for name in self.names:
            cursor.execute(self.text(name))


class InstallSqlFunctions(Operation):
    """Migration operation: (re)install a set of SQL functions from their files.

    Subclasses name the set (``functions``). ``digest`` records which files the
    migration was written for; it does not change what is installed. Reversing it
    leaves the functions in place: each version runs on the schema before it.
    """

    functions: SqlFunctions
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
            self.functions.install(cursor)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass

    def describe(self):
        return f"Install SQL functions from {self.functions.directory} ({self.digest})"
