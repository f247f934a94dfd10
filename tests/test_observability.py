"""Request ids, structured request logs and the /metrics endpoint."""

import json
import logging
import uuid
from decimal import Decimal

import pytest

from allocations import services
from allocations.exceptions import QuotaExceeded
from horizon_quota.observability import JsonFormatter, RequestIdFilter

pytestmark = pytest.mark.django_db


def test_a_request_id_is_made_and_returned(api_client):
    response = api_client.get("/health")

    assert len(response["X-Request-ID"]) == 32


def test_a_sane_client_request_id_is_kept(api_client):
    response = api_client.get("/health", HTTP_X_REQUEST_ID="scheduler-42.abc")

    assert response["X-Request-ID"] == "scheduler-42.abc"


@pytest.mark.parametrize("sent", ["", "has space", "x" * 200, "<script>", "é"])
def test_an_odd_client_request_id_is_replaced(api_client, sent):
    response = api_client.get("/health", HTTP_X_REQUEST_ID=sent)

    assert response["X-Request-ID"] != sent
    assert len(response["X-Request-ID"]) == 32


def test_each_request_is_logged_as_one_json_line(viewer_client, caplog):
    caplog.set_level(logging.INFO, logger="horizon_quota.requests")

    viewer_client.get("/api/v1/quotas", HTTP_X_REQUEST_ID="trace-1")

    records = [r for r in caplog.records if r.name == "horizon_quota.requests"]
    assert len(records) == 1
    RequestIdFilter().filter(records[0])
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "trace-1"
    assert line["method"] == "GET"
    assert line["path"] == "/api/v1/quotas"
    assert line["route"] == "quota-list"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["api_key"]  # the key's public prefix, never the secret


def test_metrics_are_served_to_localhost_in_prometheus_format(
    api_client, scheduler_client, tree
):
    scheduler_client.post(
        "/api/v1/allocations",
        {
            "entity_type": "user",
            "entity_id": "alice",
            "resource_type": "concurrent_gpus",
            "job_id": str(uuid.uuid4()),
            "requested_value": 1,
        },
        format="json",
    )

    response = api_client.get("/metrics", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/plain")
    assert (
        'hq_http_requests_total{endpoint="allocation-list",method="POST",status="201"}'
        in text
    )
    assert "hq_http_request_duration_seconds_bucket" in text
    assert 'hq_allocation_outcomes_total{outcome="granted"}' in text
    assert (
        'hq_quota_used{entity_id="research",entity_type="team",'
        'resource_type="concurrent_gpus"} 1.0' in text
    )
    assert 'entity_id="alice"' not in text  # users are not exported: bounded labels


def test_metrics_refuse_other_addresses(api_client):
    response = api_client.get("/metrics", REMOTE_ADDR="203.0.113.9")

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_metrics_accept_the_token_from_anywhere(api_client, settings):
    settings.METRICS_TOKEN = "s3cret-token"

    denied = api_client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong"
    )
    allowed = api_client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-token"
    )

    assert denied.status_code == 403
    assert allowed.status_code == 200


def test_outcomes_are_counted_by_kind(tree):
    from horizon_quota.observability import ALLOCATION_OUTCOMES

    def value(outcome):
        return ALLOCATION_OUTCOMES.labels(outcome)._value.get()

    before = {k: value(k) for k in ("granted", "denied", "replayed", "released")}
    job = uuid.uuid4()
    kwargs = dict(
        entity_type="user", entity_id="alice", resource_type="concurrent_gpus"
    )
    granted = services.allocation_create(
        job_id=job, requested_value=Decimal(1), **kwargs
    )
    services.allocation_create(job_id=job, requested_value=Decimal(1), **kwargs)
    with pytest.raises(QuotaExceeded):
        services.allocation_create(
            job_id=uuid.uuid4(), requested_value=Decimal(1000), **kwargs
        )
    services.allocation_release(allocation_id=granted.allocation.id)

    assert value("granted") == before["granted"] + 1
    assert value("replayed") == before["replayed"] + 1
    assert value("denied") == before["denied"] + 1
    assert value("released") == before["released"] + 1
