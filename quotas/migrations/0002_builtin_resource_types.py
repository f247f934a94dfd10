from django.db import migrations

BUILTIN = [
    ("gpu_hours", "GPU hours", "GPU-hours", "time_based"),
    ("concurrent_gpus", "Concurrent GPUs", "GPUs", "concurrent"),
    ("storage_gb", "Storage", "GB", "concurrent"),
    ("cpu_hours", "CPU hours", "CPU-hours", "time_based"),
    ("memory_gb", "Memory", "GB", "concurrent"),
]


def create_builtin(apps, schema_editor):
    ResourceType = apps.get_model("quotas", "ResourceType")
    for slug, name, unit, kind in BUILTIN:
        ResourceType.objects.get_or_create(
            slug=slug, defaults={"name": name, "unit": unit, "kind": kind}
        )


def remove_builtin(apps, schema_editor):
    ResourceType = apps.get_model("quotas", "ResourceType")
    ResourceType.objects.filter(
        slug__in=[b[0] for b in BUILTIN], quotas__isnull=True
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("quotas", "0001_initial")]

    operations = [migrations.RunPython(create_builtin, remove_builtin)]
