"""The fast wire form of an allocation matches the documented serializer."""

import uuid
from decimal import Decimal

import pytest

from allocations import services
from allocations.models import Allocation
from allocations.serializers import AllocationSerializer, allocation_body

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("ttl", [None, 60])
def test_the_fast_body_equals_the_serializer_output(tree, ttl):
    result = services.allocation_create(
        entity_type="user",
        entity_id="alice",
        resource_type="gpu_hours",
        job_id=uuid.uuid4(),
        requested_value=Decimal("2.5000"),
        metadata={"queue": "a100", "n": 3},
        ttl_seconds=ttl,
    )
    stored = Allocation.objects.get(id=result.allocation["id"])

    fast = allocation_body(result.allocation)

    assert fast == AllocationSerializer(stored).data
    released = services.allocation_release(allocation_id=stored.id)
    stored.refresh_from_db()
    assert allocation_body(released) == AllocationSerializer(stored).data
