from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.utils.urls import remove_query_param, replace_query_param

from horizon_quota.api import LinkHeaderCursorPagination
from horizon_quota.schema import INVALID_LIMIT, error_responses, invalid_input_example
from quotas.access.scoping import scope_of
from quotas.events import selectors
from quotas.events.models import Event
from quotas.events.serializers import EventSerializer


class EventFeedPagination(LinkHeaderCursorPagination):
    """Pages of the feed: oldest first, the next page starting after the last id
    of this one (``after=<id>``), which is also what a consumer remembers."""

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        rows = list(queryset[: self.page_size + 1])
        self.has_next = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        return self.page

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        url = remove_query_param(self.request.build_absolute_uri(), "cursor")
        return replace_query_param(url, "after", self.page[-1].id)

    def get_schema_operation_parameters(self, view):
        return [
            parameter
            for parameter in super().get_schema_operation_parameters(view)
            if parameter["name"] != "cursor"
        ]


INVALID_AFTER = invalid_input_example(
    "Invalid after",
    "after",
    "Must be an event id (a non-negative integer).",
)


class EventListView(generics.GenericAPIView):
    serializer_class = EventSerializer
    pagination_class = EventFeedPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Event.objects.none()
        params = self.request.query_params
        return selectors.event_list(
            after=selectors.event_after_parse(params.get("after")),
            types=selectors.event_types_parse(params.getlist("type")),
            scope=scope_of(getattr(self.request, "auth", None)),
        )

    @extend_schema(
        tags=["events"],
        summary="The event feed, oldest first",
        description="Threshold crossings, soft limits exceeded, overruns, expired "
        "leases, closed budget periods, quota changes and usage repairs (DESIGN "
        "§7a), each written in the transaction that caused it. Remember the last "
        "`id` you read and ask again with `after=<id>`: ids are given in commit "
        "order, so nothing is ever missed or repeated. A scoped key sees the events "
        "of quotas in its scope only.",
        parameters=[
            OpenApiParameter(
                "after",
                OpenApiTypes.INT,
                description="The last event id already read (default 0: from the "
                "oldest kept).",
            ),
            OpenApiParameter(
                "type",
                OpenApiTypes.STR,
                many=True,
                explode=True,
                description="Only these event types (repeat it, or separate them "
                "with commas).",
                enum=list(selectors.FEED_TYPES),
            ),
        ],
        responses={
            200: EventSerializer(many=True),
            **error_responses(
                invalid=[
                    INVALID_AFTER,
                    invalid_input_example(
                        "Unknown event type",
                        "type",
                        "Unknown event type 'quota.full'; one of: "
                        + ", ".join(selectors.FEED_TYPES),
                    ),
                    INVALID_LIMIT,
                ]
            ),
        },
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(EventSerializer(page, many=True).data)
