"""Prometheus metrics of webhook delivery (DESIGN §7a), read from the tables at
scrape time."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now

from quotas.events.delivery import deliveries_fan_out, webhooks_deliver
from quotas.events.endpoints import endpoint_create
from quotas.events.models import Event, WebhookEndpoint
from quotas.events.services import quota_event, record_events
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sequenced(db, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


def _metrics(api_client) -> dict[str, float]:
    response = api_client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    values = {}
    for line in response.content.decode().splitlines():
        match = re.fullmatch(r"(hq_webhook_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match:
            values[match[1]] = float(match[2])
    return values


def test_an_empty_outbox_reports_zeros(api_client):
    assert _metrics(api_client) == {
        'hq_webhook_deliveries{status="pending"}': 0.0,
        'hq_webhook_deliveries{status="delivered"}': 0.0,
        'hq_webhook_deliveries{status="given_up"}': 0.0,
        "hq_webhook_events_pending": 0.0,
        "hq_webhook_oldest_undelivered_age_seconds": 0.0,
    }


def test_pending_events_deliveries_by_outcome_and_the_oldest_age(api_client, tree):
    org, team, user = tree
    receiver = Receiver(answers=[500])
    try:
        endpoint = endpoint_create(url=receiver.url)
        receiver.secret = endpoint.secret
        record_events([quota_event("quota.changed", team, n=n) for n in range(3)])
        Event.objects.update(occurred_at=Now() - timedelta(hours=1))

        # Not yet queued: pending all the same.
        before = _metrics(api_client)
        assert before["hq_webhook_events_pending"] == 3
        assert 3590 < before["hq_webhook_oldest_undelivered_age_seconds"] < 3700
        assert deliveries_fan_out() == 3
        assert _metrics(api_client)['hq_webhook_deliveries{status="pending"}'] == 3

        webhooks_deliver()  # one answered 500, two delivered
    finally:
        receiver.stop()

    after = _metrics(api_client)
    assert after['hq_webhook_deliveries{status="delivered"}'] == 2
    assert after['hq_webhook_deliveries{status="pending"}'] == 1
    assert after["hq_webhook_events_pending"] == 1
    assert after["hq_webhook_oldest_undelivered_age_seconds"] > 3590

    # A disabled endpoint's backlog is not waiting on anyone.
    WebhookEndpoint.objects.update(enabled=False)
    assert _metrics(api_client)["hq_webhook_events_pending"] == 0
