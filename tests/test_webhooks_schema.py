"""The documented examples of the webhook operations are their real answers
(as tests/test_schema.py holds every other operation to)."""

import socket
import uuid

import pytest
from django.db import connection

from quotas.events.delivery import webhooks_deliver
from quotas.events.models import WebhookEndpoint
from tests.factories import QuotaFactory
from tests.receiver import Receiver
from tests.test_schema import _client, _documented, _masked, assert_documented

WEBHOOKS = "/api/v1/webhooks"
WEBHOOK = "/api/v1/webhooks/{endpoint_id}"
DELIVERIES = "/api/v1/webhooks/{endpoint_id}/deliveries"
TEST = "/api/v1/webhooks/{endpoint_id}/test"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sequenced(db):
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


@pytest.fixture
def alerts_dns(monkeypatch):
    """The examples' host, alerts.example.com, resolves to a public address (this
    machine has no DNS for it); every other name resolves as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "alerts.example.com":
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _documented_endpoint(schema):
    example = _documented(
        schema, WEBHOOKS, "post", 201, "A new endpoint with its secret"
    )
    body = {key: example[key] for key in ("url", "event_types", "scope", "description")}
    return example, body


def test_create_list_and_get_answer_as_documented(schema, alerts_dns):
    org = QuotaFactory(entity_id="acme")
    QuotaFactory(entity_type="team", entity_id="acme-research", parent=org)
    admin = _client("admin")
    example, body = _documented_endpoint(schema)

    created = admin.post(WEBHOOKS, body, format="json")

    assert created.status_code == 201, created.content
    real = created.json()
    assert real["secret"].startswith("whsec_")
    assert len(real["secret"]) == len(example["secret"])
    assert _masked({**real, "secret": example["secret"]}) == _masked(example)
    url = f"{WEBHOOKS}/{real['id']}"
    one = _documented(
        schema, WEBHOOK, "get", 200, "An endpoint for one team's threshold alerts"
    )
    assert _masked(admin.get(url).json()) == _masked(one)
    assert _masked(admin.get(WEBHOOKS).json()) == _masked([one])


def test_the_test_event_and_the_delivery_log_answer_as_documented(schema, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    admin = _client("admin")
    receiver = Receiver(answers=[(503, b"busy")])
    try:
        created = admin.post(WEBHOOKS, {"url": receiver.url}, format="json").json()
        receiver.secret = created["secret"]
        url = f"{WEBHOOKS}/{created['id']}"

        queued = admin.post(f"{url}/test")
        assert_documented(
            queued, schema, TEST, "post", "A test event queued", numbers=True
        )
        webhooks_deliver()
        log = admin.get(f"{url}/deliveries")
    finally:
        receiver.stop()

    assert log.status_code == 200
    documented = _documented(schema, DELIVERIES, "get", 200, "A failed attempt")
    assert _masked(log.json(), numbers=True) == _masked(documented, numbers=True)


def test_the_webhook_errors_are_the_documented_answers(schema):
    QuotaFactory(entity_id="acme")
    admin = _client("admin")
    scoped = _client("admin", scope="organization:acme")

    def check(response, path, method, summary):
        assert response.status_code >= 400, response.content
        assert_documented(response, schema, path, method, summary)

    for method in ("post", "patch"):
        path = WEBHOOKS if method == "post" else WEBHOOK
        target = WEBHOOKS
        if method == "patch":
            endpoint = WebhookEndpoint.objects.create(
                url="https://93.184.215.14/", secret="whsec_x"
            )
            target = f"{WEBHOOKS}/{endpoint.id}"
        send = getattr(admin, method)
        check(
            send(target, {"url": "http://10.0.0.7/hook"}, format="json"),
            path,
            method,
            "A private target",
        )
        check(
            send(target, {"url": "ftp://93.184.215.14/"}, format="json"),
            path,
            method,
            "Not http or https",
        )
        url = {"url": "https://93.184.215.14/"}
        check(
            send(target, {**url, "event_types": ["quota.full"]}, format="json"),
            path,
            method,
            "Unknown event type",
        )
        check(
            send(target, {**url, "scope": "team:nobody"}, format="json"),
            path,
            method,
            "A scope entity without a quota",
        )
    check(
        scoped.post(WEBHOOKS, {"url": "https://93.184.215.14/"}, format="json"),
        WEBHOOKS,
        "post",
        "A scoped key making an endpoint without a scope",
    )
    check(
        _client("viewer").get(WEBHOOKS),
        WEBHOOKS,
        "get",
        "The key's role does not allow this",
    )
    for path, method in (
        (WEBHOOK, "get"),
        (WEBHOOK, "patch"),
        (WEBHOOK, "delete"),
        (DELIVERIES, "get"),
        (TEST, "post"),
    ):
        url = path.format(endpoint_id=uuid.uuid4())
        check(
            getattr(admin, method)(url, {}, format="json"),
            path,
            method,
            "No such endpoint",
        )
