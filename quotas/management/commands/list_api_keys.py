from django.core.management.base import BaseCommand
from django.db.models.functions import Now

from quotas.access.keys import api_key_list, api_key_state

COLUMNS = (
    "prefix",
    "name",
    "role",
    "scope",
    "created",
    "expires",
    "last used",
    "state",
)


def _time(value) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}" if value else "-"


class Command(BaseCommand):
    help = (
        "List API keys: prefix, name, role, scope, created, expires, last used and "
        "state (active, expired or revoked). Revoked and expired keys only with "
        "--all. Never prints a key or its hash. Read-only."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all",
            action="store_true",
            dest="include_inactive",
            help="Include revoked and expired keys.",
        )

    def handle(self, *args, include_inactive, **options):
        # State by the database clock, as the listing's own filter.
        keys = list(
            api_key_list(include_inactive=include_inactive).annotate(db_now=Now())
        )
        rows = [
            (
                key.prefix,
                key.name,
                key.role,
                str(key.scope) if key.scope else "-",
                _time(key.created_at),
                _time(key.expires_at),
                _time(key.last_used_at),
                api_key_state(key, now=key.db_now),
            )
            for key in keys
        ]
        if not rows:
            self.stdout.write(
                "No API keys." if include_inactive else "No active API keys."
            )
            return
        widths = [
            max(len(COLUMNS[i]), *(len(row[i]) for row in rows))
            for i in range(len(COLUMNS))
        ]

        def line(cells) -> str:
            return "  ".join(
                cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
            ).rstrip()

        self.stdout.write(line(COLUMNS))
        self.stdout.write(line(["-" * width for width in widths]))
        for row in rows:
            self.stdout.write(line(row))
