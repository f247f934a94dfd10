from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from horizon_quota.errors import ServiceError
from quotas.access.keys import api_key_create
from quotas.models import ApiKeyRole


class Command(BaseCommand):
    help = (
        "Create an API key and print it alone on the last line of the output. The key "
        "is shown only once: only a hash of it is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "name", help="A label for the key, e.g. the scheduler's name."
        )
        parser.add_argument(
            "--role", required=True, choices=ApiKeyRole.values, type=str.lower
        )
        parser.add_argument(
            "--scope",
            metavar="organization:ID|team:ID|QUOTA_ID",
            help="Confine the key to an organization's or a team's subtree, across "
            "every resource type (a quota id means that quota's entity).",
        )
        parser.add_argument(
            "--write-rate",
            metavar="RATE",
            default="",
            help="Writes this key may make, e.g. 2000/s or 100000/min, or off "
            "(default: its role's, API_SCHEDULER_WRITE_RATE or API_WRITE_RATE).",
        )
        parser.add_argument(
            "--expires-in",
            metavar="DAYS",
            type=int,
            help="Expire the key after DAYS days.",
        )

    def handle(self, *args, name, role, scope, expires_in, write_rate, **options):
        if expires_in is not None and expires_in < 1:
            raise CommandError("--expires-in must be at least 1 day")
        try:
            expires_at = (
                timezone.now() + timedelta(days=expires_in) if expires_in else None
            )
        except OverflowError:
            raise CommandError(
                "--expires-in is too large: the key would expire after the year 9999"
            ) from None
        try:
            key, raw_key = api_key_create(
                name=name,
                role=role,
                scope=scope,
                expires_at=expires_at,
                write_rate=write_rate,
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"Created API key {key.name!r} (role {key.role}"
            + (f", scope {key.scope}" if key.scope else "")
            + (f", write rate {key.write_rate}" if key.write_rate else "")
            + (
                f", expires {key.expires_at:%Y-%m-%dT%H:%M:%SZ}"
                if key.expires_at
                else ""
            )
            + "). Store it now; it is not shown again:"
        )
        self.stdout.write(raw_key)
