import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from payments.models import ScanCursor, ScannedBlock
from payments.scanning import SCAN_LOCK_NAMESPACE, network_scan

from ._network_option import network_and_backend


class Command(BaseCommand):
    help = (
        "Scan a network again from a height (e.g. after adding a wallet or a node outage). Re-recording what "
        "was already seen changes nothing; payments settle from whatever is new."
    )

    def add_arguments(self, parser):
        parser.add_argument("--network", required=True)
        parser.add_argument("--from-height", type=int, required=True)
        parser.add_argument("--max-blocks", type=int, default=500, help="blocks per batch (one transaction)")

    def handle(self, *args, **options):
        network, backend = network_and_backend(options["network"])
        start = options["from_height"]
        tip = backend.tip().height
        if not 0 <= start <= tip:
            raise CommandError(f"--from-height must be between 0 and the tip ({tip})")
        before = backend.block_ref(max(start - 1, 0))
        with transaction.atomic():
            # The scanners' lock, waited for: a batch running now would save its cursor over this one.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SCAN_LOCK_NAMESPACE, network.pk])
            ScanCursor.objects.update_or_create(
                network=network, defaults={"height": before.height, "block_hash": before.hash}
            )
            ScannedBlock.objects.filter(network=network, height__gte=before.height).delete()
            ScannedBlock.objects.create(network=network, height=before.height, block_hash=before.hash)
        total = max(tip - before.height, 1)
        found = 0
        while True:
            report = network_scan(backend=backend, now=timezone.now(), max_blocks=options["max_blocks"])
            if report.locked_out:
                raise CommandError(f"another scanner holds {network.code}; try again")
            found += report.transfers
            done = min(max(report.end - before.height, 0), total)
            bar = "#" * (30 * done // total)
            sys.stderr.write(f"\r{network.code} [{bar:<30}] {report.end}/{report.tip}  {found} transfers")
            sys.stderr.flush()
            if not report.lag:
                break
        sys.stderr.write("\n")
        self.stdout.write(f"rescanned {network.code} from {start} to {report.end}: {found} transfers")
