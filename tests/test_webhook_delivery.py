"""Delivering events to webhook endpoints (DESIGN §7a, P4), to a real receiver.

Every request goes over TCP to ``tests.receiver.Receiver`` on 127.0.0.1, which
verifies each Standard Webhooks signature with the library (so private targets are
allowed here: WEBHOOK_ALLOW_PRIVATE). Time is driven by moving ``next_attempt_at``
and the other timestamps into the past; nothing sleeps.
"""

import shutil
import subprocess
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now

from quotas.access.scoping import Scope
from quotas.events import delivery
from quotas.events.endpoints import endpoint_create, endpoint_send_test
from quotas.events.models import (
    DeliveryStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from quotas.events.sending import webhook_send
from quotas.events.services import quota_event, record_events
from quotas.models import ResourceType
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory
from tests.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sequenced(db, settings):
    """Events get their public id as they are written (nothing commits in these
    tests); private targets are allowed (the receiver is on 127.0.0.1)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 5
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.stop()


def _endpoint(receiver, **fields) -> WebhookEndpoint:
    endpoint = endpoint_create(url=receiver.url, **fields)
    receiver.secret = endpoint.secret
    return endpoint


def _events(quota, *types: str) -> list[int]:
    """New events about ``quota``; their public ids."""
    before = Event.objects.filter(id__isnull=False).order_by("-id").first()
    record_events([quota_event(t, quota, threshold=80) for t in types])
    after = Event.objects.order_by("id")
    if before is not None:
        after = after.filter(id__gt=before.id)
    return list(after.values_list("id", flat=True))


def _deliver():
    return delivery.webhooks_deliver()


def _make_due():
    """Every pending delivery's next attempt is due now."""
    WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).update(
        next_attempt_at=Now() - timedelta(seconds=1)
    )


def _log(endpoint):
    return list(
        WebhookAttempt.objects.filter(endpoint=endpoint)
        .order_by("id")
        .values_list("event_id", "attempt", "status_code")
    )


def test_each_event_arrives_signed_with_its_id_as_the_webhook_id(receiver, tree):
    org, team, user = tree
    endpoint = _endpoint(receiver)
    ids = _events(team, "quota.threshold_crossed", "quota.back_under")

    summary = _deliver()

    assert str(summary) == "delivered 2, failed 0, given up 0 (queued 2)"
    assert receiver.unverified == []
    assert receiver.ids() == [str(i) for i in ids]
    first = receiver.payloads()[0]
    assert first["type"] == "quota.threshold_crossed"
    assert first["timestamp"] == first["data"]["occurred_at"]
    assert first["data"] == {
        "id": ids[0],
        "type": "quota.threshold_crossed",
        "occurred_at": first["data"]["occurred_at"],
        "quota_id": str(team.id),
        "entity_type": "team",
        "entity_id": "research",
        "resource_type": "concurrent_gpus",
        "data": {"threshold": 80},
    }
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {
        DeliveryStatus.DELIVERED
    }
    assert _log(endpoint) == [(ids[0], 1, 200), (ids[1], 1, 200)]
    # Nothing is sent twice.
    assert str(_deliver()) == "delivered 0, failed 0, given up 0 (queued 0)"
    assert len(receiver.ids()) == 2


def test_with_the_receiver_down_it_is_retried_and_arrives_once_it_is_back(
    receiver, tree
):
    org, team, user = tree
    endpoint = _endpoint(receiver)
    receiver.stop()
    (event_id,) = _events(team, "quota.threshold_crossed")

    assert str(_deliver()) == "delivered 0, failed 1, given up 0 (queued 1)"
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None
    assert attempt.error.startswith("cannot connect")
    assert attempt.next_attempt_at is not None
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None
    # Not due yet: nothing is attempted.
    assert str(_deliver()) == "delivered 0, failed 0, given up 0 (queued 0)"

    receiver.start()
    _make_due()
    assert str(_deliver()) == "delivered 1, failed 0, given up 0 (queued 0)"

    assert receiver.ids() == [str(event_id)]
    assert _log(endpoint) == [(event_id, 1, None), (event_id, 2, 200)]
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_a_500_then_a_200_sends_the_same_webhook_id_twice(receiver, tree):
    org, team, user = tree
    endpoint = _endpoint(receiver)
    receiver.answers = [500]
    (event_id,) = _events(team, "quota.threshold_crossed")

    _deliver()
    _make_due()
    _deliver()

    assert receiver.ids() == [str(event_id), str(event_id)]
    assert receiver.ids(status=500) == [str(event_id)]
    assert receiver.unverified == []
    assert WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED
    assert _log(endpoint) == [(event_id, 1, 500), (event_id, 2, 200)]
    assert WebhookAttempt.objects.order_by("id").first().error == "HTTP 500: ok"


def test_backoff_doubles_from_the_base(receiver, tree, settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 10
    org, team, user = tree
    _endpoint(receiver)
    receiver.answers = [503, 503, 503]
    _events(team, "quota.threshold_crossed")

    waits = []
    for _ in range(3):
        _deliver()
        attempt = WebhookAttempt.objects.order_by("-id").first()
        waits.append(round((attempt.next_attempt_at - attempt.at).total_seconds()))
        _make_due()

    assert waits == [10, 20, 40]
    assert [delivery.backoff_seconds(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_it_gives_up_once_the_next_attempt_would_pass_the_retry_window(receiver, tree):
    org, team, user = tree
    endpoint = _endpoint(receiver)
    receiver.answers = [500]
    _events(team, "quota.threshold_crossed")
    delivery.deliveries_fan_out()
    WebhookDelivery.objects.update(retry_until=Now() + timedelta(seconds=5))

    assert str(_deliver()) == "delivered 0, failed 0, given up 1 (queued 0)"

    assert WebhookDelivery.objects.get().status == DeliveryStatus.GIVEN_UP
    assert WebhookAttempt.objects.get().next_attempt_at is None
    _make_due()
    assert str(_deliver()) == "delivered 0, failed 0, given up 0 (queued 0)"
    assert len(receiver.ids()) == 1
    assert _log(endpoint)[0][2] == 500


def test_an_endpoint_failing_for_days_is_disabled(receiver, tree, settings):
    settings.WEBHOOK_DISABLE_AFTER_DAYS = 3
    org, team, user = tree
    endpoint = _endpoint(receiver)
    receiver.stop()
    _events(team, "quota.threshold_crossed")
    _deliver()
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None

    # Every delivery has failed since more than three days ago.
    WebhookEndpoint.objects.update(failing_since=Now() - timedelta(days=3, minutes=1))
    _make_due()
    _deliver()

    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason == "Every delivery failed for 3 days."
    # A disabled endpoint gets no new deliveries and no more attempts.
    receiver.start()
    _events(team, "quota.back_under")
    _make_due()
    assert str(_deliver()) == "delivered 0, failed 0, given up 0 (queued 0)"
    assert receiver.ids() == []


def test_a_new_endpoint_gets_the_events_from_its_creation_on(receiver, tree):
    org, team, user = tree
    _events(team, "quota.threshold_crossed")
    _endpoint(receiver)
    later = _events(team, "quota.back_under")

    _deliver()

    assert receiver.ids() == [str(i) for i in later]


def test_an_endpoint_gets_only_the_types_it_subscribes_to(receiver, tree):
    org, team, user = tree
    _endpoint(receiver, event_types=["quota.back_under"])
    ids = _events(team, "quota.threshold_crossed", "quota.back_under")

    _deliver()

    assert receiver.ids() == [str(ids[1])]


def test_an_org_a_endpoint_never_receives_org_b_events(receiver, db):
    org_a = QuotaFactory(entity_id="org-a")
    team_a = QuotaFactory(entity_type="team", entity_id="team-a", parent=org_a)
    org_b = QuotaFactory(entity_id="org-b")
    team_b = QuotaFactory(entity_type="team", entity_id="team-b", parent=org_b)
    _endpoint(receiver, scope="organization:org-a")
    mixed = []
    for quota in (org_a, team_b, team_a, org_b):
        mixed += [(quota, i) for i in _events(quota, "quota.threshold_crossed")]

    _deliver()

    wanted = [str(i) for quota, i in mixed if quota in (org_a, team_a)]
    assert receiver.ids() == wanted
    assert {p["data"]["entity_id"] for p in receiver.payloads()} == {
        "org-a",
        "team-a",
    }


def test_an_endpoint_made_by_a_scoped_key_gets_only_events_inside_its_scope(
    receiver, db
):
    # The same user id in two organizations: the key of org A's team may name it,
    # and must still get none of org B's events about it.
    org_a = QuotaFactory(entity_id="org-a")
    team_a = QuotaFactory(entity_type="team", entity_id="team-a", parent=org_a)
    gina_a = QuotaFactory(entity_type="user", entity_id="gina", parent=team_a)
    memory = ResourceType.objects.get(slug="memory_gb")
    org_b = QuotaFactory(entity_id="org-b", resource_type=memory)
    team_b = TeamQuotaFactory(entity_id="team-b", parent=org_b)
    gina_b = UserQuotaFactory(entity_id="gina", parent=team_b)
    _endpoint(receiver, scope="user:gina", key_scope=Scope("team", "team-a"))
    unconfined = endpoint_create(url=receiver.url, scope="user:gina")
    events = {
        quota.resource_type_id: _events(quota, "quota.threshold_crossed")[0]
        for quota in (gina_b, gina_a)
    }

    delivery.deliveries_fan_out()

    queued = WebhookDelivery.objects.exclude(endpoint=unconfined)
    assert [d.event.id for d in queued] == [events["concurrent_gpus"]]
    # The same scope given by an unscoped admin means both users named gina.
    assert sorted(
        d.event.id for d in WebhookDelivery.objects.filter(endpoint=unconfined)
    ) == sorted(events.values())


def test_the_test_event_goes_to_that_endpoint_alone(receiver, tree):
    other = Receiver()
    try:
        target = _endpoint(receiver, event_types=["quota.changed"])
        endpoint_create(url=other.url)
        queued = endpoint_send_test(endpoint_id=target.id)

        _deliver()

        assert receiver.ids() == [str(queued.event.id)]
        assert receiver.payloads()[0]["type"] == "webhook.test"
        assert other.ids() == []
    finally:
        other.stop()


def test_a_target_that_turned_private_is_refused_at_send_time(receiver, tree, settings):
    org, team, user = tree
    endpoint = _endpoint(receiver)
    # Saved while private targets were allowed; they are not any more.
    settings.WEBHOOK_ALLOW_PRIVATE = False
    _events(team, "quota.threshold_crossed")

    assert str(_deliver()) == "delivered 0, failed 1, given up 0 (queued 1)"

    attempt = WebhookAttempt.objects.get(endpoint=endpoint)
    assert attempt.status_code is None
    assert attempt.error == (
        "refused: The host '127.0.0.1' resolves to a loopback address (127.0.0.1); "
        "webhooks are only sent to public addresses."
    )
    assert receiver.ids() == []


def test_redirects_are_not_followed(receiver, tree):
    org, team, user = tree
    _endpoint(receiver)
    receiver.answers = [302]
    _events(team, "quota.threshold_crossed")

    _deliver()

    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code == 302
    assert attempt.error.startswith("HTTP 302 (redirects are not followed)")
    assert WebhookDelivery.objects.get().status == DeliveryStatus.PENDING


def test_redelivery_sends_a_delivered_event_again_with_the_same_id(receiver, tree):
    org, team, user = tree
    _endpoint(receiver)
    (event_id,) = _events(team, "quota.threshold_crossed")
    _deliver()

    count = delivery.deliveries_redeliver(
        delivery_ids=list(WebhookDelivery.objects.values_list("id", flat=True))
    )
    _deliver()

    assert count == 1
    assert receiver.ids() == [str(event_id), str(event_id)]
    assert WebhookDelivery.objects.get().status == DeliveryStatus.DELIVERED


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(receiver, tree):
    org, team, user = tree
    _endpoint(receiver)
    _events(team, "quota.threshold_crossed")
    delivery.deliveries_fan_out()

    claim = delivery.delivery_claim()

    assert claim is not None and claim.attempt == 1
    assert delivery.delivery_claim() is None
    # A process that died mid-send: its lease runs out, and the next attempt is
    # made with the same event id.
    WebhookDelivery.objects.update(claimed_until=Now() - timedelta(seconds=1))
    again = delivery.delivery_claim()
    assert again.attempt == 2
    assert again.event.id == claim.event.id


def test_a_slow_receiver_times_out_and_is_retried(receiver, tree, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    org, team, user = tree
    _endpoint(receiver)
    receiver.delay = 1.5
    _events(team, "quota.threshold_crossed")

    assert str(_deliver()) == "delivered 0, failed 1, given up 0 (queued 1)"

    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None
    assert attempt.error == "timed out after 1 s"
    assert 900 <= attempt.duration_ms < 1500
    assert WebhookDelivery.objects.get().status == DeliveryStatus.PENDING


def test_no_more_of_an_answer_than_the_cap_is_read(receiver, tree, settings):
    settings.WEBHOOK_MAX_RESPONSE_BYTES = 100
    org, team, user = tree
    _endpoint(receiver)
    receiver.answers = [(500, b"x" * 5_000_000)]
    _events(team, "quota.threshold_crossed")

    _deliver()

    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code == 500
    assert attempt.error == "HTTP 500: " + "x" * 100


def test_the_connection_goes_to_the_address_that_was_checked(receiver, settings):
    """The name is resolved once, by the guard, and the request goes to that
    address with the name in the Host header: the system resolver is never asked
    again (it does not know this name at all)."""
    receiver.secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw2y/IRpvVq0o="
    body = b'{"type":"webhook.test"}'

    result = webhook_send(
        url=f"http://hooks.invalid:{receiver.port}/in",
        secret=receiver.secret,
        message_id="42",
        body=body,
        resolver=lambda host, port: ["127.0.0.1"],
    )

    assert result.delivered, result
    assert receiver.hosts == [f"hooks.invalid:{receiver.port}"]
    assert receiver.ids() == ["42"]


def test_a_name_rebound_to_a_private_address_is_refused_at_send_time(
    receiver, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE = False

    result = webhook_send(
        url=f"http://hooks.invalid:{receiver.port}/in",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw2y/IRpvVq0o=",
        message_id="42",
        body=b"{}",
        resolver=lambda host, port: ["127.0.0.1"],
    )

    assert result.status_code is None
    assert result.error.startswith(
        "refused: The host 'hooks.invalid' resolves to a loopback address"
    )
    assert receiver.hosts == []


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for hooks.invalid, trusted by this test's TLS
    clients (SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=hooks.invalid",
            "-addext", "subjectAltName=DNS:hooks.invalid",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.mark.parametrize(
    "name, delivered", [("hooks.invalid", True), ("x.invalid", False)]
)
def test_https_checks_the_certificate_against_the_name_not_the_address(
    certificate, monkeypatch, name, delivered
):
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    receiver = Receiver(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw2y/IRpvVq0o=", tls=certificate
    )
    try:
        result = webhook_send(
            url=f"https://{name}:{receiver.port}/in",
            secret=receiver.secret,
            message_id="7",
            body=b"{}",
            resolver=lambda host, port: ["127.0.0.1"],
        )
    finally:
        receiver.stop()

    assert result.delivered is delivered, result
    if delivered:
        assert receiver.ids() == ["7"]
    else:
        assert "x.invalid" in result.error
        assert receiver.ids() == []
