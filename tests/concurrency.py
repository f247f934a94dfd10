"""Helpers for tests that hammer the real server from many threads."""

import threading
from collections.abc import Callable

from django.db import connection


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
