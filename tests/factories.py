import uuid
from decimal import Decimal

import factory

from quotas.models import EntityType, Quota, ResourceType


class QuotaFactory(factory.django.DjangoModelFactory):
    """A root organization quota on concurrent_gpus unless told otherwise.

    Builds rows directly (not through the services) to set up test state; tests of
    the rules themselves go through the services or the API.
    """

    class Meta:
        model = Quota

    entity_type = EntityType.ORGANIZATION
    entity_id = factory.Sequence(lambda n: f"entity-{n}")
    resource_type = factory.LazyFunction(
        lambda: ResourceType.objects.get(slug="concurrent_gpus")
    )
    parent = None
    id = factory.LazyFunction(uuid.uuid4)
    depth = factory.LazyAttribute(lambda o: o.parent.depth + 1 if o.parent else 0)
    path = factory.LazyAttribute(lambda o: [o.id, *(o.parent.path if o.parent else [])])
    limit_value = Decimal("100")
    overcommit_ratio = Decimal("1")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        quota = super()._create(model_class, *args, **kwargs)
        quota.refresh_from_db()
        return quota


class ResourceTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ResourceType

    slug = factory.Sequence(lambda n: f"resource_{n}")
    name = factory.LazyAttribute(lambda o: o.slug.replace("_", " "))
    unit = "units"
    kind = ResourceType.Kind.CONCURRENT


class TeamQuotaFactory(QuotaFactory):
    """A team quota under ``parent`` (always given), on the parent's resource type."""

    entity_type = EntityType.TEAM
    resource_type = factory.LazyAttribute(lambda o: o.parent.resource_type)


class UserQuotaFactory(TeamQuotaFactory):
    """A user quota under ``parent`` (always given), on the parent's resource type."""

    entity_type = EntityType.USER
