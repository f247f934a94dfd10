import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from quotas.importing import (
    FORMATS,
    ImportFailed,
    detect_format,
    hierarchy_import_apply,
    hierarchy_import_plan,
)
from quotas.services import Actor

# Below this many operations an import is quick enough to need no progress line.
PROGRESS_THRESHOLD = 200


class Command(BaseCommand):
    help = (
        "Make the quota hierarchy match FILE (as written by export_quotas, YAML or "
        "JSON): create the quotas it adds, update changed limits, delete the quotas "
        "it leaves out. Every rule is checked on the whole file first and every "
        "problem is reported with its line; then the changes run in one transaction "
        "through the quota services, all or nothing. Importing the same file again "
        "changes nothing. Exit status: 0 imported (or nothing to do), 1 the file is "
        "unreadable or invalid or the import was refused (nothing written), 2 bad "
        "arguments."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "file", metavar="FILE", help="The file to import; - reads standard input."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Check the file and print the plan (old → new values); write nothing.",
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            type=str.lower,
            help="Default: json for a .json file or one starting with {, else yaml.",
        )

    def handle(self, *args, file, dry_run, format, **options):
        text = self._read(file)
        shown = "standard input" if file == "-" else file
        fmt = format or detect_format(name=file, text=text)
        plan = hierarchy_import_plan(text=text, fmt=fmt)
        if plan.problems:
            count = len(plan.problems)
            raise CommandError(
                f"{shown} is not valid ({count} problem{'s' * (count != 1)}); "
                "nothing was written:\n"
                + "\n".join(f"  {problem}" for problem in plan.problems)
            )
        for warning in plan.warnings:
            self.stdout.write(f"warning: {warning}")
        if not plan.operations:
            self.stdout.write(
                f"Nothing to change: the database already matches {shown}."
            )
            return
        if dry_run:
            for operation in plan.operations:
                self.stdout.write(operation.describe())
            self.stdout.write(
                f"Dry run: would {_summary(plan.counts())}; nothing written."
            )
            return
        try:
            counts = hierarchy_import_apply(
                plan=plan,
                actor=Actor.system("import_quotas"),
                reason=_reason(file),
                progress=self._progress(plan),
            )
        except ImportFailed as exc:
            raise CommandError(f"Import refused, nothing was written: {exc}") from None
        for operation in plan.operations:
            self.stdout.write(operation.describe())
        self.stdout.write(f"Imported {shown}: {_summary(counts, past=True)}.")

    def _read(self, file: str) -> str:
        try:
            if file == "-":
                return sys.stdin.read()
            return Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"{file}: no such file.") from None
        except UnicodeDecodeError as exc:
            raise CommandError(
                f"{file} is not UTF-8 text (byte {exc.start})."
            ) from None
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror or exc}") from None

    def _progress(self, plan):
        """A progress line on a terminal for long imports, else nothing."""
        total = len(plan.operations)
        if total < PROGRESS_THRESHOLD or not self.stderr.isatty():
            return None

        def show(done: int, total: int) -> None:
            self.stderr.write(
                f"\rapplying {done}/{total} ({done * 100 // total}%)",
                ending="\n" if done == total else "",
            )
            self.stderr.flush()

        return show


def _reason(file: str) -> str:
    """The audit trail's reason for the import's changes: the file's name, kept to
    what the trail accepts (printable text, at most a few hundred characters)."""
    name = "standard input" if file == "-" else Path(file).name
    name = "".join(char for char in name if char.isprintable())
    return f"imported from {name[:200]}"


def _summary(counts: dict[str, int], *, past: bool = False) -> str:
    words = {"create": "created", "update": "updated", "delete": "deleted"}
    if past:
        return ", ".join(f"{counts[action]} {words[action]}" for action in words)
    return ", ".join(f"{action} {counts[action]}" for action in words)
