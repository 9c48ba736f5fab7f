from django.core.management.base import BaseCommand, CommandError

from payments.accounts import merchant_create
from payments.errors import GatewayError


class Command(BaseCommand):
    help = "Create a merchant with the default payment policy; prints its id."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--expiry-minutes", type=int)
        parser.add_argument("--underpayment-tolerance-bps", type=int)
        parser.add_argument("--overpayment-tolerance-bps", type=int)
        parser.add_argument("--late-payment-window-minutes", type=int)

    def handle(self, *args, **options):
        policy = {
            name: options[name]
            for name in (
                "expiry_minutes",
                "underpayment_tolerance_bps",
                "overpayment_tolerance_bps",
                "late_payment_window_minutes",
            )
            if options[name] is not None
        }
        try:
            merchant = merchant_create(name=options["name"], **policy)
        except GatewayError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self.stdout.write(merchant.id)
