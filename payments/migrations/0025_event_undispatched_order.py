"""The undispatched-events index in the dispatch order (created_at, intent, sequence): a burst of events
sharing one created_at is read in index order, not sorted whole at every dispatch batch."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0024_event_dedupe_key_length"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(("position__isnull", True)),
                fields=["created_at", "intent", "sequence"],
                name="event_undispatched_order",
            ),
        ),
        migrations.RemoveIndex(
            model_name="event",
            name="event_undispatched",
        ),
    ]
