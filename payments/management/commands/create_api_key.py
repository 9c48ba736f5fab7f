from django.core.management.base import BaseCommand, CommandError

from payments.accounts import api_key_create
from payments.errors import GatewayError
from payments.models import ApiKey, Merchant


class Command(BaseCommand):
    help = "Create an API key for a merchant and print it. It is shown this once; only a digest is stored."

    def add_arguments(self, parser):
        parser.add_argument("merchant", help="merchant id (mer_...)")
        parser.add_argument(
            "--scopes",
            default="payments:read,payments:write",
            help=f"comma-separated: {', '.join(ApiKey.SCOPES)}",
        )
        parser.add_argument("--name", default="")

    def handle(self, *args, **options):
        try:
            merchant = Merchant.objects.get(pk=options["merchant"])
        except Merchant.DoesNotExist:
            raise CommandError(f"unknown merchant {options['merchant']}") from None
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            _, secret = api_key_create(merchant=merchant, scopes=scopes, name=options["name"])
        except GatewayError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self.stdout.write(secret)
