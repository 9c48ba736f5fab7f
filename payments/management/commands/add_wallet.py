from django.core.management.base import BaseCommand, CommandError

from payments.accounts import wallet_add
from payments.errors import GatewayError
from payments.models import Merchant


class Command(BaseCommand):
    help = (
        "Register a merchant's watch-only account key. EVM: the account xpub at m/44'/60'/0' (serves every "
        "EVM network). Bitcoin/Litecoin: the BIP84 account key (xpub/zpub, tpub/vpub for test networks; "
        "Litecoin's Ltub/ttub too)."
    )

    def add_arguments(self, parser):
        parser.add_argument("merchant", help="merchant id (mer_...)")
        parser.add_argument("--chain", required=True, choices=["evm", "bitcoin", "litecoin"])
        parser.add_argument("--xpub", required=True, help="account-level extended public key")
        parser.add_argument("--network", help="bitcoin-family network code, e.g. bitcoin, litecoin-regtest")

    def handle(self, *args, **options):
        try:
            merchant = Merchant.objects.get(pk=options["merchant"])
        except Merchant.DoesNotExist:
            raise CommandError(f"unknown merchant {options['merchant']}") from None
        try:
            wallet = wallet_add(
                merchant=merchant,
                chain=options["chain"],
                account_key=options["xpub"],
                network_code=options["network"],
            )
        except GatewayError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        where = wallet.network.code if wallet.network else "all EVM networks"
        self.stdout.write(f"wallet {wallet.pk} ({wallet.chain}, {where})")
