from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from quotas.importing import (
    FORMATS,
    hierarchy_export,
    hierarchy_render,
    hierarchy_size,
)


class Command(BaseCommand):
    help = (
        "Write the whole quota hierarchy as YAML or JSON: per resource type, "
        "organizations → teams → users keyed by entity id, with limit_value, "
        "soft_limit, burst_limit and overcommit_ratio as exact decimal strings. "
        "import_quotas reads it back. Read-only. Exit status: 0 written, 1 the file "
        "cannot be written, 2 bad arguments."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--format",
            choices=FORMATS,
            type=str.lower,
            help="yaml (the default) or json; a --output ending in .json means json.",
        )
        parser.add_argument(
            "--output",
            metavar="FILE",
            help="Write to FILE instead of standard output.",
        )

    def handle(self, *args, format, output, **options):
        fmt = format or ("json" if (output or "").lower().endswith(".json") else "yaml")
        document = hierarchy_export()
        text = hierarchy_render(document=document, fmt=fmt)
        count = hierarchy_size(document=document)
        summary = (
            f"Exported {count} quota{'s' * (count != 1)} in "
            f"{len(document['quotas'])} resource type"
            f"{'s' * (len(document['quotas']) != 1)} ({fmt})"
        )
        if output is None:
            self.stdout.write(text, ending="")
            # The summary goes to stderr so that standard output is the document.
            self.stderr.write(f"{summary}.")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(
                f"cannot write {output}: {exc.strerror or exc}"
            ) from None
        self.stdout.write(f"{summary} to {output}.")
