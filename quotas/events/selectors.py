"""Reading the outbox: the event feed (DESIGN §7a)."""

from django.db.models import QuerySet

from horizon_quota.errors import InvalidInput
from quotas.access.scoping import Scope
from quotas.events.models import Event, EventType

# Events a feed carries: every type but the test event an admin sends to one
# endpoint (stored for its delivery alone, never in the feed).
FEED_TYPES = tuple(value for value in EventType.values if value != EventType.TEST)


def event_types_parse(values: list[str]) -> list[str]:
    """Event types from ``type`` query values (repeated or comma separated, any
    case); an unknown one is a 400 naming the known ones."""
    types = []
    for value in values:
        for item in value.split(","):
            name = item.strip().lower()
            if not name:
                continue
            if name not in FEED_TYPES:
                message = f"Unknown event type {item.strip()!r}; one of: " + ", ".join(
                    FEED_TYPES
                )
                raise InvalidInput(f"type: {message}", fields={"type": [message]})
            types.append(name)
    return sorted(set(types))


def event_after_parse(value: str | None) -> int:
    """The ``after`` query value: an event id (0 or absent: from the start)."""
    if value is None or value == "":
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        message = "Must be an event id (a non-negative integer)."
        raise InvalidInput(f"after: {message}", fields={"after": [message]})
    return int(value)


def event_list(
    *, after: int = 0, types: list[str] | None = None, scope: Scope | None = None
) -> QuerySet[Event]:
    """Committed events after the id ``after``, oldest first: those whose quota lies
    in the key's scope (its path holds one of the scope entity's quotas). Ids are
    given in commit order (quotas.events.services), so a reader that asks again
    with the last id it saw never misses or repeats one."""
    events = Event.objects.filter(id__gt=after).order_by("id")
    events = events.filter(type__in=types or FEED_TYPES)
    if scope is not None:
        events = events.filter(path__overlap=scope.quota_ids())
    return events
