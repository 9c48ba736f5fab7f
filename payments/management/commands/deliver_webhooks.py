"""Send due webhooks from this process (what the Celery task does), once or in a loop.

python manage.py deliver_webhooks            # until interrupted
python manage.py deliver_webhooks --once     # until nothing is due
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from payments.webhooks.delivery import deliveries_drain


class Command(BaseCommand):
    help = "Dispatch events and send due webhook attempts."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="stop when nothing is due")
        parser.add_argument("--idle-sleep", type=float, default=0.5, help="seconds to wait when idle")

    def handle(self, *args, once: bool, idle_sleep: float, **options):
        if not once:
            self.stdout.write("delivering webhooks until interrupted")
            self.stdout.flush()
        while True:
            report = deliveries_drain(budget_s=60)
            if report.attempts or report.dispatched:
                self.stdout.write(
                    f"dispatched {report.dispatched}, attempts {report.attempts}, "
                    f"delivered {report.delivered}"
                )
            if once and not report.attempts:
                return
            if not report.attempts:
                time.sleep(idle_sleep)
