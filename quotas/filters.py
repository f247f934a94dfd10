import django_filters
from rest_framework.exceptions import ValidationError

from quotas.models import EntityType, Quota
from quotas.selectors import resource_type_get


class LowerChoiceFilter(django_filters.CharFilter):
    """A case-insensitive choice; an unknown value is a 400 naming the valid ones."""

    def __init__(self, *args, choices, every: str | None = None, **kwargs):
        self.valid = list(choices)
        # A value that filters nothing out (e.g. status=all).
        self.every = every
        kwargs.setdefault("help_text", f"One of: {', '.join(self.valid)}.")
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if value in (None, ""):
            return qs
        value = value.strip().lower()
        if value not in self.valid:
            raise ValidationError(
                {self.field_name: [f"Must be one of: {', '.join(self.valid)}."]}
            )
        if value == self.every:
            return qs
        return super().filter(qs, value)


class ResourceTypeFilter(django_filters.CharFilter):
    """A resource type slug, case-insensitive; an unknown one is a 400 that lists
    the valid ones (DESIGN §3)."""

    def filter(self, qs, value):
        if value in (None, ""):
            return qs
        return super().filter(qs, resource_type_get(slug=value).slug)


class QuotaFilter(django_filters.FilterSet):
    entity_type = LowerChoiceFilter(field_name="entity_type", choices=EntityType.values)
    entity_id = django_filters.CharFilter(field_name="entity_id")
    resource_type = ResourceTypeFilter(field_name="resource_type_id")
    parent_id = django_filters.UUIDFilter(field_name="parent_id")

    class Meta:
        model = Quota
        fields = ["entity_type", "entity_id", "resource_type", "parent_id"]
