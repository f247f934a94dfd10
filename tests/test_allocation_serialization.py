"""The one wire form of an allocation (allocations/records.py) matches the
serializer that documents it in the schema, for engine answers and stored rows."""

import uuid
from decimal import Decimal

import pytest

from allocations import services
from allocations.models import Allocation
from allocations.records import AllocationRecord, render_allocation
from allocations.serializers import AllocationSerializer

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("ttl", [None, 60])
def test_the_rendered_record_equals_the_serializer_output(tree, ttl):
    result = services.allocation_create(
        entity_type="user",
        entity_id="alice",
        resource_type="concurrent_gpus",
        job_id=uuid.uuid4(),
        requested_value=Decimal("2.5000"),
        metadata={"queue": "a100", "n": 3},
        ttl_seconds=ttl,
    )
    stored = Allocation.objects.get(id=result.allocation.id)

    assert render_allocation(result.allocation) == AllocationSerializer(stored).data
    assert AllocationRecord.from_model(stored) == result.allocation
    released = services.allocation_release(allocation_id=stored.id)
    stored.refresh_from_db()
    assert render_allocation(released) == AllocationSerializer(stored).data
    assert AllocationRecord.from_model(stored) == released
