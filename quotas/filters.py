import django_filters

from quotas.models import EntityType, Quota


class LowerCharFilter(django_filters.CharFilter):
    def filter(self, qs, value):
        return super().filter(qs, value.strip().lower() if value else value)


class QuotaFilter(django_filters.FilterSet):
    entity_type = LowerCharFilter(
        field_name="entity_type", help_text=f"One of: {', '.join(EntityType.values)}."
    )
    entity_id = django_filters.CharFilter(field_name="entity_id")
    resource_type = LowerCharFilter(field_name="resource_type_id")
    parent_id = django_filters.UUIDFilter(field_name="parent_id")

    class Meta:
        model = Quota
        fields = ["entity_type", "entity_id", "resource_type", "parent_id"]
