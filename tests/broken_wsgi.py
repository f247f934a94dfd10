"""The service with deliberately broken allocate and release paths (tests/broken.py)
behind the real HTTP stack: the broken twins of tests/test_http_concurrency.py run
their scenarios against it and must fail. Never used by the service."""

from horizon_quota.wsgi import application


def _install_broken_paths() -> None:
    # Imported once the WSGI module has set Django up.
    from allocations import services
    from allocations.records import AllocationRecord
    from allocations.services.allocations import AllocationResult
    from tests import broken

    def allocate(*, scope=None, **request):
        allocation = broken.allocate_check_then_write(**request)
        return AllocationResult(
            allocation=AllocationRecord.from_model(allocation), replayed=False
        )

    def release(*, allocation_id, consumed_value=None, scope=None):
        # The pause covers the spread of requests arriving over HTTP.
        allocation = broken.release_check_then_write(
            allocation_id=allocation_id, pause=0.1
        )
        return AllocationRecord.from_model(allocation)

    services.allocation_create = allocate
    services.allocation_release = release


_install_broken_paths()
__all__ = ["application"]
