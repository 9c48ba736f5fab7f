from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments.selectors import intent_evaluate, intent_queryset


class Command(BaseCommand):
    help = (
        "Re-evaluate stored payments from their evidence and report every one whose stored state differs. "
        "Exits 1 if any does. Read-only."
    )

    def add_arguments(self, parser):
        parser.add_argument("--merchant", help="only this merchant's payments")
        parser.add_argument("--intent", action="append", help="only these intents (repeatable)")

    def handle(self, *args, **options):
        now = timezone.now()
        intents = intent_queryset().order_by("created_at")
        if options["merchant"]:
            intents = intents.filter(merchant_id=options["merchant"])
        if options["intent"]:
            intents = intents.filter(pk__in=options["intent"])
        checked = mismatched = due = 0
        for intent in intents.iterator(chunk_size=500):
            checked += 1
            verdict = intent_evaluate(intent, now)
            if verdict.state == "expired" and intent.state in ("created", "awaiting_payment"):
                due += 1  # the window closed since the last sweep; the next sweep settles it
                self.stdout.write(f"due {intent.pk}: {intent.state} -> expired at the next sweep")
            elif verdict.state != intent.state:
                mismatched += 1
                self.stdout.write(
                    f"MISMATCH {intent.pk}: stored {intent.state}, evidence says {verdict.state} ({verdict.reason})"
                )
        self.stdout.write(
            f"checked {checked} payments, {mismatched} differ from their evidence, {due} due to expire"
        )
        if mismatched:
            raise CommandError(f"{mismatched} payments differ from their evidence")
