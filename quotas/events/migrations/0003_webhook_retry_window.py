"""Webhook deliveries are retried until ``retry_until``; indexes for pruning old
events and attempts."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0002_event_functions"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookdelivery",
            name="retry_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["occurred_at"], name="events_occurred_at_idx"),
        ),
        migrations.AddIndex(
            model_name="webhookattempt",
            index=models.Index(fields=["at"], name="webhook_attempts_at_idx"),
        ),
    ]
