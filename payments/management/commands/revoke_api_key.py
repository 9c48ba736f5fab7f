from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments.accounts import api_key_revoke
from payments.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key, given the prefix shown in the admin (gwk_...)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, **options):
        keys = list(ApiKey.objects.filter(prefix=options["prefix"], revoked_at__isnull=True))
        if len(keys) != 1:
            raise CommandError(
                f"{len(keys)} active keys have the prefix {options['prefix']!r}; need exactly one"
            )
        api_key_revoke(api_key=keys[0], now=timezone.now())
        self.stdout.write(f"revoked {keys[0].prefix}")
