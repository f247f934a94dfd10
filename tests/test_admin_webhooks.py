"""Webhook endpoints, deliveries and their log in the Django admin."""

import pytest
from django.contrib.messages import get_messages
from django.db import connection

from quotas.events.delivery import deliveries_fan_out, webhooks_deliver
from quotas.events.endpoints import endpoint_create
from quotas.events.models import (
    DeliveryStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from quotas.events.services import quota_event, record_events
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/events/webhookendpoint/"
DELIVERIES = "/admin/events/webhookdelivery/"
ATTEMPTS = "/admin/events/webhookattempt/"
PUBLIC_URL = "https://93.184.215.14/hooks"


@pytest.fixture(autouse=True)
def sequenced(db):
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    running = Receiver()
    yield running
    running.stop()


def _form(**fields):
    return {
        "url": PUBLIC_URL,
        "scope": "",
        "enabled": "on",
        "description": "",
        **fields,
    }


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_adding_an_endpoint_shows_its_secret_once(staff_client, tree):
    response = staff_client.post(
        f"{ENDPOINTS}add/",
        _form(event_types=["quota.changed"], scope="team:research"),
        follow=True,
    )

    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["quota.changed"]
    assert (endpoint.scope_entity_type, endpoint.scope_entity_id) == (
        "team",
        "research",
    )
    shown = [text for text in _messages(response) if "whsec_" in text]
    assert len(shown) == 1
    assert endpoint.secret in shown[0]
    page = staff_client.get(f"{ENDPOINTS}{endpoint.pk}/change/")
    assert page.status_code == 200
    assert endpoint.secret not in page.content.decode()
    assert endpoint.secret not in staff_client.get(ENDPOINTS).content.decode()


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"url": "http://10.0.0.7/"}, "url", "a private address"),
        ({"url": "ftp://93.184.215.14/"}, "url", "Only http and https"),
        ({"scope": "team:nobody"}, "scope", "has no quota"),
        ({"event_types": ["quota.full"]}, "event_types", "quota.full"),
    ],
)
def test_invalid_endpoints_are_form_errors_not_500s(
    staff_client, fields, field, message
):
    response = staff_client.post(f"{ENDPOINTS}add/", _form(**fields))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field])
    assert not WebhookEndpoint.objects.exists()


def test_changing_an_endpoint_goes_through_the_service(staff_client, tree):
    endpoint = endpoint_create(url=PUBLIC_URL)

    response = staff_client.post(
        f"{ENDPOINTS}{endpoint.pk}/change/",
        _form(url="http://127.0.0.1/", description="x"),
    )

    assert response.status_code == 200  # refused: a loopback target
    assert "a loopback address" in " ".join(
        response.context["adminform"].form.errors["url"]
    )
    response = staff_client.post(
        f"{ENDPOINTS}{endpoint.pk}/change/",
        _form(description="research", scope="organization:acme"),
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.description == "research"
    assert endpoint.scope_entity_id == "acme"


def test_send_test_event_reaches_that_endpoint_alone(staff_client, receiver):
    target = endpoint_create(url=receiver.url)
    receiver.secret = target.secret
    other_receiver = Receiver()
    try:
        endpoint_create(url=other_receiver.url)
        response = staff_client.post(
            ENDPOINTS,
            {"action": "send_test_event", "_selected_action": [str(target.pk)]},
            follow=True,
        )
        webhooks_deliver()
    finally:
        other_receiver.stop()

    assert any("Queued a test event for 1 endpoint" in m for m in _messages(response))
    test_event = Event.objects.get(type="webhook.test")
    assert receiver.ids() == [str(test_event.id)]
    assert other_receiver.ids() == []
    assert receiver.unverified == []


def test_redeliver_sends_a_delivery_again(staff_client, receiver, tree):
    org, team, user = tree
    endpoint = endpoint_create(url=receiver.url)
    receiver.secret = endpoint.secret
    record_events([quota_event("quota.changed", team)])
    webhooks_deliver()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED

    response = staff_client.post(
        DELIVERIES,
        {"action": "redeliver", "_selected_action": [str(delivery.pk)]},
        follow=True,
    )
    webhooks_deliver()

    assert any("1 delivery(ies) will be sent again" in m for m in _messages(response))
    assert receiver.ids() == [str(delivery.event.id)] * 2


def test_the_delivery_log_is_linked_from_the_endpoint(staff_client, receiver, tree):
    org, team, user = tree
    endpoint = endpoint_create(url=receiver.url)
    receiver.secret = endpoint.secret
    receiver.answers = [500]
    record_events([quota_event("quota.changed", team)])
    deliveries_fan_out()
    webhooks_deliver()

    listing = staff_client.get(ENDPOINTS).content.decode()
    link = f"{ATTEMPTS}?endpoint__id__exact={endpoint.pk}"
    assert link in listing
    log = staff_client.get(link)
    assert log.status_code == 200
    assert "HTTP 500: ok" in log.content.decode()
    assert WebhookAttempt.objects.count() == 1
    assert staff_client.get(DELIVERIES).status_code == 200
    assert staff_client.get("/admin/events/event/").status_code == 200


def test_deleting_an_endpoint_removes_its_deliveries(staff_client, receiver, tree):
    org, team, user = tree
    endpoint = endpoint_create(url=receiver.url)
    record_events([quota_event("quota.changed", team)])
    deliveries_fan_out()

    response = staff_client.post(f"{ENDPOINTS}{endpoint.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()
