from django.core.management.base import BaseCommand, CommandError

from horizon_quota.errors import ServiceError
from quotas.access.keys import api_key_revoke
from quotas.audit import Actor


class Command(BaseCommand):
    help = (
        "Revoke an API key by its prefix (as list_api_keys shows it) or its id. The "
        "key is refused at once by this process and within API_KEY_CACHE_SECONDS by "
        "running servers. Exit status: 0 revoked, 1 unknown or already revoked key."
    )

    def add_arguments(self, parser):
        parser.add_argument("key", metavar="PREFIX_OR_ID")

    def handle(self, *args, key, **options):
        try:
            revoked = api_key_revoke(
                key_id_or_prefix=key, actor=Actor.system("revoke_api_key")
            )
        except ServiceError as exc:
            raise CommandError(exc.message, returncode=1) from None
        self.stdout.write(
            f"Revoked API key {revoked.prefix} ({revoked.name!r}, role "
            f"{revoked.role}) at {revoked.revoked_at:%Y-%m-%dT%H:%M:%SZ}."
        )
