"""Helpers for tests that hammer the real server from many threads."""

import threading
from collections.abc import Callable

from django.db import connection, transaction

from quotas.models import Quota
from tests.helpers import run_command


def run_in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released together by a barrier.

    Each thread gets its own database connection (Django's are per thread) and
    closes it when done. Returns each thread's result, or the exception it raised.
    """
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def target(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # report it to the test
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results


def outcomes(
    results: list[object], *expected: type[BaseException]
) -> tuple[list[object], list[BaseException]]:
    """Split ``run_in_threads``' results into what the threads returned and what
    they raised. A thread that raised anything but one of ``expected`` fails the
    test."""
    raised = [r for r in results if isinstance(r, BaseException)]
    unexpected = [r for r in raised if not isinstance(r, expected)]
    assert unexpected == [], f"threads raised {unexpected!r}"
    returned = [r for r in results if not isinstance(r, BaseException)]
    return returned, raised


def run_command_while_quota_locked(quota: Quota, name: str, *args: str):
    """Run a management command in another thread, with a 200 ms ``lock_timeout``,
    while this thread holds ``quota``'s row lock, as an allocation in flight would.
    Returns the command's ``(code, out, err)``; the thread must not have raised."""

    def command(_):
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        return run_command(name, *args)

    with transaction.atomic():
        Quota.objects.select_for_update().get(id=quota.id)
        [result] = run_in_threads(1, command)
    [returned], _ = outcomes([result])
    return returned
