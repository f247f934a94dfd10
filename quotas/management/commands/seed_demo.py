from django.core.management.base import BaseCommand

from quotas.demo import seed_demo


class Command(BaseCommand):
    help = (
        "Load the demo hierarchy: one organization, two teams, four users, a quota for "
        "each of the five built-in resource types. Idempotent: existing quotas are "
        "kept."
    )

    def handle(self, *args, **options):
        created, existing = seed_demo()
        self.stdout.write(
            f"Demo hierarchy: {created} quotas created, {existing} already present."
        )
