from django.core.management.base import BaseCommand, CommandError

from horizon_quota.errors import ServiceError
from quotas.tree import quota_forests, render_forests


class Command(BaseCommand):
    help = (
        "Print the quota hierarchy as a tree per resource type: each quota's limit "
        "(and effective limit under overcommit), used, available and a utilization "
        "bar, marking quotas above their soft limit or at their hard limit. "
        "ENTITY_ID limits it to that entity's subtrees. Read-only. Exit status: 0 "
        "printed, 1 unknown entity or resource type, 2 bad arguments."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "entity_id",
            nargs="?",
            metavar="ENTITY_ID",
            help="Only the subtrees of this entity's quotas (any entity type).",
        )
        parser.add_argument(
            "--resource",
            metavar="SLUG",
            help="Only this resource type, e.g. gpu_hours.",
        )

    def handle(self, *args, entity_id, resource, **options):
        try:
            forests = quota_forests(resource_type=resource, entity_id=entity_id)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        lines = render_forests(forests, keep_empty=resource is not None)
        for line in lines:
            self.stdout.write(line)
        drawn = [forest for forest in forests if len(forest)]
        total = sum(len(forest) for forest in drawn)
        if lines:
            self.stdout.write("")
        self.stdout.write(
            f"{total} quota{'s' * (total != 1)} in {len(drawn)} "
            f"resource type{'s' * (len(drawn) != 1)}."
            if total
            else "No quotas."
        )
