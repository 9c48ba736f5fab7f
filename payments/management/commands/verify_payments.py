from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments.models import OutflowTransaction, Refund
from payments.selectors import intent_evaluate, intent_queryset
from payments.services.refunds import refund_difference
from payments.services.settlements import settlement_differences


class Command(BaseCommand):
    help = (
        "Re-evaluate stored payments and refunds from their evidence and re-derive the settlements of every "
        "outflow transaction; report every payment, refund or settlement that differs. "
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
            if verdict.state in ("expired", "failed") and intent.state in ("created", "awaiting_payment"):
                # the window closed since the last sweep (nothing valid arrived: expired, or only funds of
                # the wrong asset or network: failed); the next sweep settles it
                due += 1
                self.stdout.write(f"due {intent.pk}: {intent.state} -> {verdict.state} at the next sweep")
            elif verdict.state != intent.state:
                mismatched += 1
                self.stdout.write(
                    f"MISMATCH {intent.pk}: stored {intent.state}, evidence says {verdict.state} ({verdict.reason})"
                )
        settlements = settlements_differing = 0
        txs = OutflowTransaction.objects.select_related("network").order_by("pk")
        if options["merchant"]:
            txs = txs.filter(settlements__merchant_id=options["merchant"]).distinct()
        if options["intent"]:
            txs = txs.filter(outflows__intent_id__in=options["intent"]).distinct()
        for tx in txs.iterator(chunk_size=500):
            settlements += 1
            differences = settlement_differences(tx)
            settlements_differing += bool(differences)
            for line in differences:
                self.stdout.write(f"MISMATCH {line}")
        refunds = refunds_differing = 0
        rows = Refund.objects.select_related("network_asset__network", "intent").order_by("created_at")
        if options["merchant"]:
            rows = rows.filter(merchant_id=options["merchant"])
        if options["intent"]:
            rows = rows.filter(intent_id__in=options["intent"])
        for refund in rows.iterator(chunk_size=500):
            refunds += 1
            difference = refund_difference(refund, now)
            if difference:
                refunds_differing += 1
                self.stdout.write(f"MISMATCH {difference}")
        self.stdout.write(
            f"checked {checked} payments, {mismatched} differ from their evidence, {due} due to expire; "
            f"checked the settlements of {settlements} outflow transactions, {settlements_differing} differ; "
            f"checked {refunds} refunds, {refunds_differing} differ"
        )
        if mismatched or settlements_differing or refunds_differing:
            raise CommandError(
                f"{mismatched} payments, the settlements of {settlements_differing} outflow transactions and "
                f"{refunds_differing} refunds differ from their evidence"
            )
