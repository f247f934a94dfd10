"""API key scopes become entities: an organization or team across every resource type.

Until now a key was scoped to one quota (one resource tree) by a foreign key, and
deleting that quota deleted the key. A scope is now the entity itself (DESIGN §6):
existing scoped keys keep working, scoped to their quota's entity, and no longer
depend on that quota's row.
"""

from django.db import migrations, models
from django.db.models import Q


def scope_keys_to_entities(apps, schema_editor):
    ApiKey = apps.get_model("quotas", "ApiKey")
    for key in ApiKey.objects.filter(scope__isnull=False).select_related("scope"):
        key.scope_entity_type = key.scope.entity_type
        key.scope_entity_id = key.scope.entity_id
        key.save(update_fields=["scope_entity_type", "scope_entity_id"])


def scope_keys_to_quotas(apps, schema_editor):
    # Back to one quota: the entity's quota with the fewest ancestors (the
    # gpu_hours tree first, then by resource type).
    ApiKey = apps.get_model("quotas", "ApiKey")
    Quota = apps.get_model("quotas", "Quota")
    for key in ApiKey.objects.filter(scope_entity_type__isnull=False):
        key.scope = (
            Quota.objects.filter(
                entity_type=key.scope_entity_type, entity_id=key.scope_entity_id
            )
            .order_by("depth", "resource_type_id")
            .first()
        )
        key.save(update_fields=["scope"])


class Migration(migrations.Migration):
    dependencies = [("quotas", "0007_rate_limits")]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="scope_entity_type",
            field=models.CharField(
                blank=True,
                choices=[
                    ("organization", "organization"),
                    ("team", "team"),
                    ("user", "user"),
                ],
                max_length=12,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="apikey",
            name="scope_entity_id",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.RunPython(scope_keys_to_entities, scope_keys_to_quotas),
        migrations.RemoveField(model_name="apikey", name="scope"),
        migrations.AddConstraint(
            model_name="apikey",
            constraint=models.CheckConstraint(
                condition=Q(
                    scope_entity_type__isnull=True, scope_entity_id__isnull=True
                )
                | Q(
                    scope_entity_type__in=["organization", "team", "user"],
                    scope_entity_id__isnull=False,
                ),
                name="api_keys_scope_is_an_entity",
            ),
        ),
    ]
