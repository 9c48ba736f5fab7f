from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments.scanning import backend_for
from reconciliation.moments import MOMENT_HELP, moment_parse
from reconciliation.verification import reverify


def _moment(text: str):
    moment = moment_parse(text)
    if moment is None:
        raise CommandError(f"{text!r}: {MOMENT_HELP}")
    return moment


class Command(BaseCommand):
    help = (
        "Fetch the counted transactions of every paid, overpaid, refunded or confirming payment created "
        "since --since again from the chain, re-evaluate, and record every mismatch (a case and an event "
        "each). Exits 1 if any is found. The nightly beat runs the same."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since", help=f"payments created from (default: {settings.GATEWAY_REVERIFY_DAYS} days ago)"
        )
        parser.add_argument("--until", help="payments created before (default: now)")
        parser.add_argument("--merchant", help="only this merchant's payments")

    def handle(self, *args, **options):
        now = timezone.now()
        since = (
            _moment(options["since"])
            if options["since"]
            else now - timedelta(days=settings.GATEWAY_REVERIFY_DAYS)
        )
        until = _moment(options["until"]) if options["until"] else None
        run = reverify(
            since=since, until=until, now=now, backend_for=backend_for, merchant_id=options["merchant"]
        )
        for mismatch in run.found.order_by("pk"):
            self.stdout.write(f"MISMATCH {mismatch.intent_id} {mismatch.problem}: {mismatch.detail}")
        for line in filter(None, run.errors.splitlines()):
            self.stdout.write(f"ERROR {line}")
        self.stdout.write(
            f"run {run.pk}: {run.payments} payments, {run.transactions} transactions fetched again, "
            f"{run.mismatches} mismatch(es)"
        )
        if run.mismatches or run.errors:
            raise SystemExit(1)
