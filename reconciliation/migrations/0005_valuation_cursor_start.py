"""The paid-valuation reader starts at the newest event when this is deployed: payments paid before were
paid at rates nobody asked for then, and today's rate is not theirs, so they stay unvalued."""

from django.db import migrations
from django.db.models import Max


def start(apps, schema_editor):
    Event = apps.get_model("payments", "Event")
    FeedCursor = apps.get_model("reconciliation", "FeedCursor")
    last = Event.objects.aggregate(last=Max("position"))["last"] or 0
    FeedCursor.objects.update_or_create(name="paid-valuations", defaults={"position": last})


class Migration(migrations.Migration):
    dependencies = [("reconciliation", "0004_daily_close"), ("payments", "0022_intent_amount_refunded")]

    operations = [migrations.RunPython(start, migrations.RunPython.noop)]
