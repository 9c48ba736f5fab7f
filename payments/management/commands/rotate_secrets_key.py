from django.core.management.base import BaseCommand, CommandError

from payments.encryption import SecretUndecryptable
from payments.webhooks.endpoints import secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored webhook signing secret under the first key of GATEWAY_SECRETS_KEYS. "
        "Rotation: put the new key first (keep the old one after it), run this, then remove the old key."
    )

    def handle(self, *args, **options):
        try:
            count = secrets_reencrypt()
        except SecretUndecryptable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"re-encrypted {count} webhook secrets under the first key of GATEWAY_SECRETS_KEYS")
