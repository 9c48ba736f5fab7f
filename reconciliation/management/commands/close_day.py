from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments.scanning import backend_for
from reconciliation.close import close_day
from reconciliation.moments import day_parse


class Command(BaseCommand):
    help = (
        "Close a UTC day (default yesterday) per merchant, asset and network: the day's figures from the "
        "evidence, and the chain's own balance of the payment addresses beside the evidence's. Exits 1 if "
        "any close differs or could not be checked. The beat runs it every night for yesterday."
    )

    def add_arguments(self, parser):
        parser.add_argument("--day", help="YYYY-MM-DD (UTC); default yesterday")
        parser.add_argument("--merchant", help="only this merchant")

    def handle(self, *args, **options):
        now = timezone.now()
        day = day_parse(options["day"]) if options["day"] else (now - timedelta(days=1)).date()
        if day is None:
            raise CommandError(f"{options['day']!r}: a date, YYYY-MM-DD")
        closes = close_day(day=day, now=now, backend_for=backend_for, merchant_id=options["merchant"])
        bad = 0
        for c in closes:
            na = c.network_asset
            self.stdout.write(
                f"{c.status.upper()} {c.merchant_id} {na.asset.code}/{na.network.code} {c.day}: opening "
                f"{c.opening} + received {c.received} - swept {c.swept} - refunded {c.refunded} - other "
                f"{c.other_out} - fees {c.fees} = closing {c.closing}; at height {c.check_height}: evidence "
                f"{c.evidence_balance}, chain {c.chain_balance}{(' (' + c.detail + ')') if c.detail else ''}"
            )
            for d in c.differences:
                self.stdout.write(f"  {d['address']}: evidence {d['evidence']}, chain {d['chain']}")
            bad += c.status != "balanced"
        if bad:
            raise SystemExit(1)
