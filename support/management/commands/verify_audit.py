import re

from django.core.management.base import BaseCommand, CommandError

from support.audit import audit_verify
from support.models import AuditEntry

HEAD = re.compile(r"^(\d+):([0-9a-f]{64})$")


class Command(BaseCommand):
    help = (
        "Recompute every link of the audit log's hash chain and check every signed checkpoint; exits non-zero "
        "naming the first entry or checkpoint that fails. --head SEQUENCE:HASH (from an announced "
        "audit.checkpoint log event, kept outside the database) also checks the log still holds that entry: "
        "a log emptied or cut back together with its checkpoints fails it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--head",
            action="append",
            default=[],
            metavar="SEQUENCE:HASH",
            help="an announced checkpoint's sequence and entry_hash; repeatable",
        )

    def handle(self, *args, **options):
        heads = []
        for text in options["head"]:
            match = HEAD.match(text.strip().lower())
            if match is None:
                raise CommandError(f"--head {text!r}: give SEQUENCE:HASH (a number, a colon, 64 hex digits)")
            heads.append((int(match[1]), match[2]))
        result = audit_verify()
        if not result.ok:
            raise CommandError(f"audit log NOT verified: {result.problem}")
        for sequence, entry_hash in heads:
            stored = AuditEntry.objects.filter(sequence=sequence).values_list("entry_hash", flat=True).first()
            if stored is None:
                raise CommandError(
                    f"audit log NOT verified: announced entry #{sequence} is gone (the log ends at "
                    f"{'#' + str(result.head) if result.head else 'nothing'})"
                )
            if stored != entry_hash:
                raise CommandError(
                    f"audit log NOT verified: entry #{sequence} differs from the one announced"
                )
        head = f"#{result.head}" if result.head else "empty"
        self.stdout.write(
            f"audit log verified: {result.entries} entries (head {head}), {result.checkpoints} checkpoints"
            + (f", {len(heads)} announced head(s) present" if heads else "")
        )
