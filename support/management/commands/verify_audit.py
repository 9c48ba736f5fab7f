from django.core.management.base import BaseCommand, CommandError

from support.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Recompute every link of the audit log's hash chain and check every signed checkpoint; exits non-zero "
        "naming the first entry or checkpoint that fails."
    )

    def handle(self, *args, **options):
        result = audit_verify()
        if not result.ok:
            raise CommandError(f"audit log NOT verified: {result.problem}")
        head = f"#{result.head}" if result.head else "empty"
        self.stdout.write(
            f"audit log verified: {result.entries} entries (head {head}), {result.checkpoints} checkpoints"
        )
