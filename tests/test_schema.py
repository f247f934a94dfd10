"""OpenAPI schema and Swagger UI (DESIGN §2, §5): complete, valid and offline."""

import json
import re
import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from drf_spectacular.validation import validate_schema
from jsonschema import Draft4Validator
from rest_framework.test import APIClient

from allocations.models import Allocation
from allocations.services import allocation_create, allocation_expire
from quotas.access.keys import api_key_create
from quotas.models import EntityType, Quota, ResourceType
from tests.factories import QuotaFactory
from tests.helpers import QUOTA_WIRE_FIELDS, USAGE_FIELDS, resolve

SCHEMA_URLS = ["/api/schema/?format=json", "/api-docs/openapi.json"]

# Every path of the API and the methods each answers.
EXPECTED_OPERATIONS = {
    "/api/v1/quotas": {"get", "post"},
    "/api/v1/quotas/{quota_id}": {"get", "put", "patch", "delete"},
    "/api/v1/quotas/{quota_id}/usage": {"get"},
    "/health": {"get"},
}

# The status of each error kind (DESIGN §5).
STATUS_BY_KIND = {
    "rate_limited": 429,
    "invalid_input": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "already_exists": 409,
    "already_released": 409,
    "conflict": 409,
    "length_required": 411,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "resource_exhausted": 429,
    "internal_error": 500,
    "unavailable": 503,
}

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ERROR_REF = "#/components/schemas/Error"
CDN = re.compile(r"unpkg\.com|jsdelivr|cdnjs|googleapis|cloudflare", re.IGNORECASE)


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


# --- Serving -----------------------------------------------------------------------


@pytest.mark.parametrize("url", SCHEMA_URLS)
def test_the_schema_is_served_as_openapi_3_json_without_a_key(api_client, db, url):
    response = api_client.get(url)

    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "horizon-quota API"
    assert "/api/v1/quotas" in document["paths"]


def test_both_schema_urls_serve_the_same_document(api_client, db):
    documents = [json.loads(api_client.get(url).content) for url in SCHEMA_URLS]

    assert documents[0] == documents[1]


def test_the_schema_is_served_as_yaml_by_default(api_client, db):
    response = api_client.get("/api/schema/")

    assert response.status_code == 200
    assert "openapi" in response["Content-Type"]
    assert response.content.startswith(b"openapi: 3.")


def test_the_schema_ignores_a_bad_key(api_client, db):
    api_client.credentials(HTTP_AUTHORIZATION="Api-Key not-a-key")

    response = api_client.get("/api/schema/?format=json")

    assert response.status_code == 200


# --- Content -----------------------------------------------------------------------


def test_every_path_of_the_api_is_documented_with_each_method(schema):
    for path, methods in EXPECTED_OPERATIONS.items():
        assert path in schema["paths"], path
        documented = set(schema["paths"][path]) & HTTP_METHODS
        assert methods <= documented, (path, methods - documented)


def test_the_quota_id_path_parameter_is_a_uuid(schema):
    for path in ("/api/v1/quotas/{quota_id}", "/api/v1/quotas/{quota_id}/usage"):
        for _, operation in schema["paths"][path].items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = {p["name"]: p for p in operation["parameters"]}
            assert parameters["quota_id"]["in"] == "path"
            assert parameters["quota_id"]["schema"]["format"] == "uuid"


def test_operation_ids_are_unique(schema):
    ids = [operation["operationId"] for _, _, operation in _operations(schema)]

    assert len(ids) == len(set(ids))


def test_every_api_operation_documents_a_4xx_error_with_the_error_schema(schema):
    for path, method, operation in _operations(schema):
        if not path.startswith("/api/v1/"):
            continue
        error_statuses = [
            status
            for status, response in operation["responses"].items()
            if status.startswith("4")
            and response.get("content", {})
            .get("application/json", {})
            .get("schema", {})
            .get("$ref")
            == ERROR_REF
        ]
        assert error_statuses, f"{method.upper()} {path} documents no 4xx Error"


def test_every_api_operation_requires_the_api_key_and_documents_401(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Send `Authorization: Api-Key <key>`.",
    }
    for path, method, operation in _operations(schema):
        if not path.startswith("/api/v1/"):
            continue
        # Either form of the key will do (OR): Api-Key, or Bearer as generated
        # clients send it.
        assert operation.get("security") == [{"ApiKeyAuth": []}, {"BearerAuth": []}], (
            method,
            path,
        )
        assert "401" in operation["responses"], (method, path)


def test_writes_document_403_and_json_bodies_document_415(schema):
    for path, method, operation in _operations(schema):
        if not path.startswith("/api/v1/quotas") or method == "get":
            continue
        assert "403" in operation["responses"], (method, path)
        if "requestBody" in operation:
            assert "415" in operation["responses"], (method, path)
            assert "400" in operation["responses"], (method, path)


def test_health_needs_no_key_and_documents_503_with_its_error_body(schema):
    operation = schema["paths"]["/health"]["get"]

    assert operation.get("security", []) in ([], [{}])
    response = operation["responses"]["503"]
    body = resolve(schema, response["content"]["application/json"]["schema"])
    assert set(body["required"]) == {"error", "message", "status", "database"}


def test_every_documented_error_example_has_a_kind_matching_its_status(schema):
    kinds = set(schema["components"]["schemas"]["ErrorEnum"]["enum"])
    checked = 0
    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            media = response["content"]["application/json"]
            assert media.get("examples"), (method, path, status)
            for example in media["examples"].values():
                kind = example["value"]["error"]
                assert kind in kinds, (method, path, status, kind)
                assert STATUS_BY_KIND[kind] == int(status), (method, path, status)
                assert example["value"]["message"]
                checked += 1

    assert checked > 100


def test_the_error_schema_lists_every_kind_of_the_contract(schema):
    error = schema["components"]["schemas"]["Error"]
    kinds = set(resolve(schema, error["properties"]["error"])["enum"])

    assert set(STATUS_BY_KIND) <= kinds
    assert set(error["required"]) == {"error", "message"}
    assert error["properties"]["message"]["type"] == "string"
    assert error["properties"]["fields"]["type"] == "object"


def _request_bodies_without_example(schema: dict, prefix: str) -> list[str]:
    missing = []
    for path, method, operation in _operations(schema):
        if not path.startswith(prefix) or "requestBody" not in operation:
            continue
        media = operation["requestBody"]["content"]["application/json"]
        if not (media.get("examples") or "example" in media):
            missing.append(f"{method.upper()} {path}")
    return missing


def test_every_quota_request_body_has_an_example(schema):
    bodies = [
        (path, method)
        for path, method, operation in _operations(schema)
        if path.startswith("/api/v1/quotas") and "requestBody" in operation
    ]

    assert len(bodies) == 3
    assert _request_bodies_without_example(schema, "/api/v1/quotas") == []


def test_every_request_body_has_an_example(schema):
    assert _request_bodies_without_example(schema, "/") == []


def test_request_bodies_are_json_only(schema):
    for path, method, operation in _operations(schema):
        if "requestBody" in operation:
            assert set(operation["requestBody"]["content"]) == {"application/json"}, (
                method,
                path,
            )


def test_the_quota_list_documents_a_plain_array_and_its_paging_parameters(schema):
    operation = schema["paths"]["/api/v1/quotas"]["get"]

    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert resolve(schema, body)["type"] == "array"
    assert resolve(schema, body)["items"] == {"$ref": "#/components/schemas/Quota"}
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert {"limit", "cursor", "entity_type", "entity_id", "resource_type"} <= set(
        parameters
    )
    assert "parent_id" in parameters
    assert parameters["limit"]["schema"]["minimum"] == 1
    assert "1000" in parameters["limit"]["description"]


def test_the_quota_schema_has_the_wire_fields_with_amounts_as_numbers(schema):
    quota = schema["components"]["schemas"]["Quota"]["properties"]

    assert set(quota) >= QUOTA_WIRE_FIELDS
    for name in ("limit_value", "soft_limit", "burst_limit", "used", "available"):
        assert quota[name]["type"] == "number", name
    assert quota["soft_limit"]["nullable"] is True


def test_amount_inputs_accept_numbers_and_numeric_strings(schema):
    create = schema["components"]["schemas"]["QuotaCreateRequest"]["properties"]

    types = {option["type"] for option in create["limit_value"]["oneOf"]}
    assert types == {"number", "string"}


def test_usage_documents_the_wire_fields(schema):
    usage = schema["components"]["schemas"]["Usage"]["properties"]

    assert set(usage) >= USAGE_FIELDS


# --- Every answer an operation can give is documented -------------------------------

SCHEMAS = "#/components/schemas/"
# The one POST that writes nothing and locks nothing (it is still throttled).
# The POSTs that write nothing and lock nothing (they are still throttled).
CHECKS = {("/api/v1/allocations/check", "post"), ("/api/v1/jobs/check", "post")}
# Writes that insert new rows only: no row lock to time out on, so no 409.
LOCK_FREE_WRITES = {("/api/v1/webhooks", "post")}
# Reads that need an admin key: they document 403 too.
ADMIN_ONLY_READS = {
    "/api/v1/webhooks",
    "/api/v1/webhooks/{endpoint_id}",
    "/api/v1/webhooks/{endpoint_id}/deliveries",
}
WRITE_STATUSES = {"403", "409", "413", "415", "429"}


def _api_operations(schema: dict):
    for path, method, operation in _operations(schema):
        if path.startswith("/api/v1/"):
            yield path, method, operation


def _examples_of(operation: dict, status: str) -> list[dict]:
    media = operation["responses"][status]["content"]["application/json"]
    return [example["value"] for example in media["examples"].values()]


def test_every_api_operation_documents_401_and_503(schema):
    for path, method, operation in _api_operations(schema):
        assert {"401", "503"} <= set(operation["responses"]), (method, path)


def test_every_write_documents_403_409_and_429(schema):
    writes = 0
    for path, method, operation in _api_operations(schema):
        if method == "get":
            continue
        statuses = set(operation["responses"])
        # Every POST, PUT, PATCH and DELETE needs a role and counts against the
        # key's write rate.
        assert {"403", "429"} <= statuses, (method, path)
        assert "rate_limited" in [
            example["error"] for example in _examples_of(operation, "429")
        ], (method, path)
        if (path, method) in CHECKS | LOCK_FREE_WRITES:
            assert "409" not in statuses  # it takes no lock
            continue
        writes += 1
        assert "409" in statuses, (method, path)
        busy = [
            example
            for example in _examples_of(operation, "409")
            if example.get("retry_after") == 1
        ]
        assert [example["error"] for example in busy] == ["conflict"], (method, path)

    # quotas create, put, patch, delete; allocate, release, renew, consume; admit,
    # release (DELETE and POST) and renew a job; change, delete and test a webhook.
    assert writes == 15


def test_operations_with_a_body_document_400_413_and_415(schema):
    bodies = 0
    for path, method, operation in _api_operations(schema):
        if "requestBody" in operation:
            bodies += 1
            assert {"400", "413", "415"} <= set(operation["responses"]), (method, path)

    # quotas create/update x2, check, allocate, renew, consume; the four of jobs;
    # webhook create and change.
    assert bodies == 13


def test_reads_document_no_answer_only_writes_give(schema):
    for path, method, operation in _api_operations(schema):
        if method == "get":
            answers = WRITE_STATUSES - ({"403"} if path in ADMIN_ONLY_READS else set())
            assert not answers & set(operation["responses"]), (method, path)


def test_the_error_components_declare_every_extra_member(schema):
    components = schema["components"]["schemas"]
    error = components["Error"]
    assert error["properties"]["retry_after"]["type"] == "integer"
    assert set(error["required"]) == {"error", "message"}

    rate_limited = components["RateLimitedError"]
    assert set(rate_limited["required"]) == {"error", "message", "retry_after"}
    assert rate_limited["properties"]["retry_after"]["type"] == "integer"

    exceeded = components["QuotaExceededError"]
    members = exceeded["properties"]
    assert set(exceeded["required"]) == {
        "error",
        "message",
        "blocking_quota_id",
        "requested",
        "available",
        "levels",
    }
    assert members["blocking_quota_id"]["format"] == "uuid"
    assert members["blocking_quota_id"]["nullable"] is True
    assert members["requested"]["type"] == "number"
    assert members["available"]["type"] == "number"
    assert members["available"]["nullable"] is True
    assert members["levels"]["items"] == {"$ref": f"{SCHEMAS}PathLevel"}

    conflict = components["AllocationConflictError"]
    assert set(conflict["required"]) == {"error", "message"}
    assert conflict["properties"]["allocation_id"]["format"] == "uuid"
    assert conflict["properties"]["retry_after"]["type"] == "integer"

    health = components["HealthUnavailable"]
    assert set(health["required"]) == {"error", "message", "status", "database"}


def test_a_level_is_a_full_level_or_one_outside_the_scope(schema):
    components = schema["components"]["schemas"]

    assert components["PathLevel"]["oneOf"] == [
        {"$ref": f"{SCHEMAS}Level"},
        {"$ref": f"{SCHEMAS}OutsideLevel"},
    ]
    assert "discriminator" not in components["PathLevel"]
    assert set(components["Level"]["required"]) == {
        "quota_id",
        "entity_type",
        "entity_id",
        "cap",
        "used",
        "available",
        "allowed",
    }
    outside = components["OutsideLevel"]
    assert set(outside["required"]) == {"scope", "allowed"}
    assert resolve(schema, outside["properties"]["scope"])["enum"] == ["outside"]
    for name in ("CheckResult", "AllocationGrant", "QuotaExceededError"):
        levels = components[name]["properties"]["levels"]
        assert levels["items"] == {"$ref": f"{SCHEMAS}PathLevel"}, name
    check = components["CheckResult"]["properties"]
    assert check["available"]["nullable"] is True
    assert check["blocking_quota_id"]["nullable"] is True


def test_allocate_documents_its_job_conflict_and_both_of_its_429s(schema):
    operation = schema["paths"]["/api/v1/allocations"]["post"]
    conflict = operation["responses"]["409"]["content"]["application/json"]
    assert conflict["schema"] == {"$ref": f"{SCHEMAS}AllocationConflictError"}
    first = _examples_of(operation, "409")[0]
    assert first["error"] == "conflict"
    assert "already holds an active gpu_hours allocation" in first["message"]
    assert first["allocation_id"] in first["message"]
    for example in _examples_of(operation, "409"):
        assert "version" not in example["message"]

    too_many = operation["responses"]["429"]["content"]["application/json"]
    assert resolve(schema, too_many["schema"])["oneOf"] == [
        {"$ref": f"{SCHEMAS}QuotaExceededError"},
        {"$ref": f"{SCHEMAS}RateLimitedError"},
    ]
    assert [example["error"] for example in _examples_of(operation, "429")] == [
        "resource_exhausted",
        "rate_limited",
    ]


def _json_schema(node):
    """An OpenAPI 3.0 schema as JSON Schema (draft 4): ``nullable`` becomes a null
    alternative."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _documented_examples(schema: dict):
    """(where, JSON schema, example value) of every example of every operation."""
    for path, method, operation in _operations(schema):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += list(operation["responses"].items())
        for status, body in bodies:
            media = body.get("content", {}).get("application/json", {})
            for name, example in media.get("examples", {}).items():
                yield (method, path, status, name), media["schema"], example["value"]


def test_every_documented_example_fits_its_schema(schema):
    components = _json_schema(schema["components"])
    checked = 0
    for where, body_schema, value in _documented_examples(schema):
        validator = Draft4Validator(
            {"components": components, "allOf": [_json_schema(body_schema)]}
        )
        errors = [error.message for error in validator.iter_errors(value)]
        assert not errors, (where, errors)
        checked += 1

    assert checked > 100


# Implementation words that must never become API documentation.
INTERNAL = re.compile(
    r"deep-cop|per process|\bDRF\b|serializer|to_internal_value|``", re.IGNORECASE
)


def _descriptions(node, where="schema"):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield where, value
            elif key not in ("examples", "example"):
                yield from _descriptions(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _descriptions(item, f"{where}/{index}")


def test_every_component_has_a_public_description(schema):
    for name, component in schema["components"]["schemas"].items():
        if name.endswith("Enum"):
            continue  # drf-spectacular lists the values
        assert component.get("description", "").strip(), name
    for where, description in _descriptions(schema):
        assert not INTERNAL.search(description), (where, description)


# --- The documented examples are the real answers ------------------------------------

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _masked(value, *, numbers: bool = False):
    """The answer with what differs between runs (ids, timestamps, and with
    ``numbers`` every number) replaced by placeholders."""
    if isinstance(value, dict):
        return {key: _masked(item, numbers=numbers) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, numbers=numbers) for item in value]
    if isinstance(value, str):
        value = TIMESTAMP.sub("<time>", UUID_TEXT.sub("<uuid>", value))
        return re.sub(r"\d+", "<n>", value) if numbers else value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return "<n>"
    return value


def _shape(value):
    """The members of an answer and the JSON type of each, recursively."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(_shape(item), sort_keys=True) for item in value})
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    assert value is None, value
    return "null"


def _documented(schema, path, method, status, summary) -> dict:
    media = schema["paths"][path][method]["responses"][str(status)]["content"][
        "application/json"
    ]
    for key, example in media["examples"].items():
        # drf-spectacular leaves the summary out when it equals the key.
        if example.get("summary", key) == summary:
            return example["value"]
    raise AssertionError(f"{method.upper()} {path} documents no {status} {summary!r}")


def assert_documented(response, schema, path, method, summary, *, numbers=False):
    """The real answer has the documented example's status, members and JSON types,
    and equals it but for ids and timestamps (and numbers, when they vary)."""
    documented = _documented(schema, path, method, response.status_code, summary)
    real = json.loads(response.content)
    assert _shape(real) == _shape(documented)
    assert _masked(real, numbers=numbers) == _masked(documented, numbers=numbers)


def _client(role="admin", scope=None) -> APIClient:
    _, raw_key = api_key_create(name=f"schema {role}", role=role, scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


@pytest.fixture
def acme(db):
    """The path of the examples: organization acme (10000) → team acme-research
    (4000) → user alice (1000), on gpu_hours (a lifetime budget), all empty."""
    gpu_hours = ResourceType.objects.get(slug="gpu_hours")
    org = QuotaFactory(
        entity_id="acme", limit_value=Decimal("10000"), resource_type=gpu_hours
    )
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="acme-research",
        parent=org,
        limit_value=Decimal("4000"),
        resource_type=gpu_hours,
    )
    user = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="alice",
        parent=team,
        limit_value=Decimal("1000"),
        resource_type=gpu_hours,
    )
    return org, team, user


def _hold(entity_type: str, entity_id: str, amount: str) -> None:
    allocation_create(
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type="gpu_hours",
        job_id=uuid.uuid4(),
        requested_value=Decimal(amount),
    )


ALLOCATIONS = "/api/v1/allocations"
QUOTAS = "/api/v1/quotas"
QUOTA = "/api/v1/quotas/{quota_id}"
ALLOCATION = "/api/v1/allocations/{allocation_id}"


def _allocate(client, amount, *, job_id=None, ttl=None, metadata=None):
    body = {
        "entity_type": "user",
        "entity_id": "alice",
        "job_id": str(job_id or uuid.uuid4()),
        "resource_type": "gpu_hours",
        "requested_value": amount,
    }
    if ttl is not None:
        body["ttl_seconds"] = ttl
    if metadata is not None:
        body["metadata"] = metadata
    return client.post(ALLOCATIONS, body, format="json")


def test_the_grant_the_refusal_and_the_check_are_the_documented_ones(schema, acme):
    """The examples' path: the organization holds 5392 itself, the team 3560, alice
    40; she is granted 8, then refused 500 at the team."""
    _hold("organization", "acme", "5392")
    _hold("team", "acme-research", "3560")
    _hold("user", "alice", "40")
    client = _client("scheduler")

    granted = _allocate(client, 8, ttl=3600, metadata={"queue": "a100"})
    assert granted.status_code == 201
    assert_documented(granted, schema, ALLOCATIONS, "post", "Granted")

    refused = _allocate(client, 500)
    assert refused.status_code == 429
    assert_documented(
        refused, schema, ALLOCATIONS, "post", "Quota exceeded at the team level"
    )

    check = {
        "entity_type": "user",
        "entity_id": "alice",
        "resource_type": "gpu_hours",
        "requested_value": 500,
    }
    checked = client.post(f"{ALLOCATIONS}/check", check, format="json")
    assert_documented(
        checked, schema, f"{ALLOCATIONS}/check", "post", "Refused at the team level"
    )


def test_a_refusal_above_a_scoped_keys_scope_is_the_documented_one(schema, acme):
    _hold("organization", "acme", "9000")
    _hold("team", "acme-research", "560")
    _hold("user", "alice", "48")
    client = _client("scheduler", scope="team:acme-research")

    checked = client.post(
        f"{ALLOCATIONS}/check",
        {
            "entity_type": "user",
            "entity_id": "alice",
            "resource_type": "gpu_hours",
            "requested_value": 500,
        },
        format="json",
    )

    assert checked.json()["levels"][-1] == {"scope": "outside", "allowed": False}
    assert_documented(
        checked,
        schema,
        f"{ALLOCATIONS}/check",
        "post",
        "Refused above a scoped key's scope",
    )


def test_the_job_conflict_is_the_documented_one(schema, acme):
    client = _client("scheduler")
    job_id = uuid.uuid4()
    assert _allocate(client, 8, job_id=job_id).status_code == 201

    conflict = _allocate(client, 16, job_id=job_id)

    assert conflict.status_code == 409
    assert conflict.json()["allocation_id"] in conflict.json()["message"]
    assert_documented(
        conflict, schema, ALLOCATIONS, "post", "The job holds another allocation"
    )


def test_releasing_twice_is_the_documented_already_released(schema, acme):
    client = _client("scheduler")
    allocation_id = _allocate(client, 8).json()["id"]
    assert client.delete(f"{ALLOCATIONS}/{allocation_id}").status_code == 200

    again = client.delete(f"{ALLOCATIONS}/{allocation_id}")

    assert again.status_code == 409
    assert_documented(again, schema, ALLOCATION, "delete", "Already released")


def test_a_release_body_that_is_not_an_object_is_the_documented_answer(schema, acme):
    client = _client("scheduler")
    allocation_id = _allocate(client, 8).json()["id"]

    response = client.delete(
        f"{ALLOCATIONS}/{allocation_id}", "[1]", content_type="application/json"
    )

    assert_documented(
        response, schema, ALLOCATION, "delete", "The body is not a JSON object"
    )


def test_no_key_and_unknown_objects_are_the_documented_answers(schema, api_client):
    assert_documented(api_client.get(QUOTAS), schema, QUOTAS, "get", "No API key")
    api_client.credentials(HTTP_AUTHORIZATION="Bearer hq_0123_not-a-key")
    unknown = api_client.get(QUOTAS)
    assert_documented(unknown, schema, QUOTAS, "get", "Unknown API key")

    client = _client("scheduler")
    missing = client.get(f"{QUOTAS}/{uuid.uuid4()}")
    assert_documented(missing, schema, QUOTA, "get", "No such quota")
    missing = client.get(f"{ALLOCATIONS}/{uuid.uuid4()}")
    assert_documented(missing, schema, ALLOCATION, "get", "No such allocation")
    no_quota = _allocate(client, 8)
    assert_documented(no_quota, schema, ALLOCATIONS, "post", "No quota for the entity")


def test_invalid_input_is_the_documented_answer(schema, acme):
    client = _client("admin")
    quota = {
        "entity_type": "organization",
        "entity_id": "initech",
        "resource_type": "gpu_hours",
        "limit_value": "1.23456",
    }
    created = client.post(QUOTAS, quota, format="json")
    assert_documented(created, schema, QUOTAS, "post", "Too many decimal places")

    malformed = client.post(QUOTAS, "limit_value", content_type="application/json")
    assert_documented(malformed, schema, QUOTAS, "post", "Malformed JSON")

    not_positive = _allocate(client, 0)
    assert_documented(
        not_positive, schema, ALLOCATIONS, "post", "Not a positive amount"
    )

    cursor = client.get(QUOTAS, {"cursor": "!"})
    assert_documented(cursor, schema, QUOTAS, "get", "Invalid cursor")
    limit = client.get(QUOTAS, {"limit": "0"})
    assert_documented(limit, schema, QUOTAS, "get", "Invalid limit")


def test_a_body_that_is_not_json_or_too_large_is_the_documented_answer(
    schema, admin_client_api, settings
):
    plain = admin_client_api.post(QUOTAS, "limit_value=1", content_type="text/plain")
    assert_documented(plain, schema, QUOTAS, "post", "Not JSON")

    padding = "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    large = admin_client_api.post(
        QUOTAS, json.dumps({"padding": padding}), content_type="application/json"
    )
    assert_documented(large, schema, QUOTAS, "post", "Body too large")


def test_a_body_without_a_length_is_the_documented_answer(schema, admin_client_api):
    chunked = admin_client_api.generic(
        "POST",
        QUOTAS,
        "{}",
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert_documented(chunked, schema, QUOTAS, "post", "Body without Content-Length")


def test_the_write_rate_limit_is_the_documented_answer(schema, acme, settings):
    # One write per window of about 31 years: no boundary falls inside the test.
    settings.API_WRITE_RATE = f"1/{10**9}s"
    client = _client("admin")
    assert _allocate(client, 8).status_code == 201

    for path, method, response in [
        (ALLOCATIONS, "post", _allocate(client, 8)),
        (QUOTAS, "post", client.post(QUOTAS, {}, format="json")),
    ]:
        assert response.status_code == 429
        assert response.json()["retry_after"] == int(response["Retry-After"])
        assert_documented(
            response,
            schema,
            path,
            method,
            "Too many writes with this key",
            numbers=True,
        )


def test_the_quota_errors_are_the_documented_answers(schema, acme):
    org, team, user = acme
    _hold("user", "alice", "12")
    admin = _client("admin")
    team_url, user_url = f"{QUOTAS}/{team.id}", f"{QUOTAS}/{user.id}"
    new_team = {
        "entity_type": "team",
        "entity_id": "acme-research",
        "resource_type": "gpu_hours",
        "limit_value": 1,
        "parent_id": str(org.id),
    }

    def check(response, path, method, summary, *, numbers=False):
        assert response.status_code >= 400, response.content
        assert_documented(response, schema, path, method, summary, numbers=numbers)

    check(
        _client("viewer").post(QUOTAS, new_team, format="json"),
        QUOTAS,
        "post",
        "The key's role does not allow this",
    )
    check(admin.post(QUOTAS, new_team, format="json"), QUOTAS, "post", "Already exists")
    scoped = _client("admin", scope="team:acme-research")
    root = {**new_team, "parent_id": None}
    check(
        scoped.post(QUOTAS, root, format="json"),
        QUOTAS,
        "post",
        "A scoped key creating a root quota",
    )
    check(
        scoped.post(QUOTAS, {**new_team, "entity_id": "x"}, format="json"),
        QUOTAS,
        "post",
        "A parent outside the key's scope",
    )
    check(
        admin.get(QUOTAS, {"entity_type": "planet"}),
        QUOTAS,
        "get",
        "Unknown entity_type",
    )
    check(
        admin.patch(team_url, {"parent_id": str(uuid.uuid4())}, format="json"),
        QUOTA,
        "patch",
        "Changing the parent",
    )
    check(
        admin.put(f"{team_url}?force=maybe", {"limit_value": 3000}, format="json"),
        QUOTA,
        "put",
        "Invalid force",
    )
    check(
        admin.patch(
            team_url,
            {"limit_value": 3000},
            format="json",
            HTTP_X_CHANGE_REASON="ring\x07",
        ),
        QUOTA,
        "patch",
        "Invalid X-Change-Reason",
    )
    check(
        admin.patch(team_url, {"limit_value": 3000, "version": 3}, format="json"),
        QUOTA,
        "patch",
        "Version mismatch",
        numbers=True,
    )
    check(
        admin.patch(user_url, {"limit_value": 10}, format="json"),
        QUOTA,
        "patch",
        "Below current usage",
    )
    check(
        scoped.patch(team_url, {"limit_value": 3000}, format="json"),
        QUOTA,
        "patch",
        "A scoped key changing its own entity's quota",
    )
    check(admin.delete(team_url), QUOTA, "delete", "Has children")
    check(admin.delete(user_url), QUOTA, "delete", "Has active allocations")
    check(admin.delete(f"{QUOTAS}/{uuid.uuid4()}"), QUOTA, "delete", "No such quota")


def test_the_allocation_errors_are_the_documented_answers(schema, acme):
    _, _, user = acme
    client = _client("scheduler")

    def check(response, path, method, summary):
        assert response.status_code >= 400, response.content
        assert_documented(response, schema, path, method, summary)

    bad_job = {
        "entity_type": "user",
        "entity_id": "alice",
        "job_id": "job-42",
        "resource_type": "gpu_hours",
        "requested_value": 8,
    }
    check(
        client.post(ALLOCATIONS, bad_job, format="json"),
        ALLOCATIONS,
        "post",
        "job_id is not a UUID",
    )
    missing = {
        "entity_type": "user",
        "entity_id": "alice",
        "resource_type": "cpu_hours",
        "requested_value": 8,
    }
    no_quota = client.post(f"{ALLOCATIONS}/check", missing, format="json")
    assert no_quota.json()["message"] == "No cpu_hours quota for user 'alice'."
    assert _shape(no_quota.json()) == _shape(
        _documented(
            schema, f"{ALLOCATIONS}/check", "post", 404, "No quota for the entity"
        )
    )
    check(
        client.get(ALLOCATIONS, {"status": "nope"}),
        ALLOCATIONS,
        "get",
        "Unknown status",
    )
    check(
        client.get(f"{QUOTAS}/{user.id}/allocations", {"status": "nope"}),
        f"{QUOTA}/allocations",
        "get",
        "Unknown status",
    )
    check(
        client.get(f"{QUOTAS}/{user.id}/history", {"operation": "nope"}),
        f"{QUOTA}/history",
        "get",
        "Unknown operation",
    )

    renewed = _allocate(client, 8, ttl=60).json()["id"]
    renew = f"{ALLOCATIONS}/{renewed}/renew"
    check(
        client.post(renew, {"ttl_seconds": 0}, format="json"),
        f"{ALLOCATION}/renew",
        "post",
        "ttl_seconds out of range",
    )
    Allocation.objects.filter(id=renewed).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    check(
        client.post(renew, {"ttl_seconds": 60}, format="json"),
        f"{ALLOCATION}/renew",
        "post",
        "The lease has run out",
    )
    allocation_expire(allocation_id=renewed)
    check(
        client.delete(f"{ALLOCATIONS}/{renewed}"),
        ALLOCATION,
        "delete",
        "Already expired",
    )
    released = _allocate(client, 8).json()["id"]
    assert client.delete(f"{ALLOCATIONS}/{released}").status_code == 200
    check(
        client.post(f"{ALLOCATIONS}/{released}/renew", {"ttl_seconds": 60}, "json"),
        f"{ALLOCATION}/renew",
        "post",
        "Released",
    )


@pytest.mark.django_db(transaction=True)
def test_a_row_lock_timeout_is_the_documented_answer(schema):
    org = QuotaFactory(limit_value=Decimal("100"))
    client = _client("admin")
    locked, release = threading.Event(), threading.Event()

    def hold_the_row():
        try:
            with transaction.atomic():
                Quota.objects.select_for_update().get(id=org.id)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        response = client.patch(
            f"{QUOTAS}/{org.id}", {"limit_value": 90}, format="json"
        )
    finally:
        release.set()
        holder.join()

    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert_documented(response, schema, QUOTA, "patch", "Busy: a row lock timed out")


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_the_documented_answer(schema, api_client):
    client = _client("admin")
    original = dict(connection.settings_dict)
    connection.close()
    # A socket directory where no server listens: a real connection failure.
    connection.settings_dict["HOST"] = "/nonexistent-socket-dir"
    try:
        api = client.get(QUOTAS)
        health = api_client.get("/health")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)

    assert api.status_code == 503
    assert_documented(api, schema, QUOTAS, "get", "Database unavailable")
    assert_documented(health, schema, "/health", "get", "Database unreachable")


# --- Validation --------------------------------------------------------------------


def test_the_schema_passes_the_openapi_validator(schema):
    validate_schema(schema)


def test_schema_generation_gives_no_warnings(db, tmp_path):
    target = tmp_path / "openapi.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert target.read_text().startswith("openapi: 3.")


# --- Swagger UI --------------------------------------------------------------------


def test_swagger_ui_is_served_without_a_key(api_client, db):
    response = api_client.get("/swagger-ui/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_swagger_ui_loads_its_assets_from_the_app_not_a_cdn(api_client, db):
    html = api_client.get("/swagger-ui/").content.decode()

    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    assert any(a.endswith("swagger-ui.css") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
    assert not CDN.search(html)
    assert 'url: "/api/schema/"' in html


def test_swagger_ui_static_files_are_served(api_client, db):
    html = api_client.get("/swagger-ui/").content.decode()
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)

    assert len(assets) >= 3
    for asset in assets:
        response = api_client.get(asset)
        content = b"".join(response.streaming_content)
        response.close()

        assert response.status_code == 200, asset
        assert len(content) > 0, asset
    bundle = next(a for a in assets if a.endswith("swagger-ui-bundle.js"))
    assert "javascript" in api_client.get(bundle)["Content-Type"]


def test_a_missing_static_file_answers_404(api_client, db):
    response = api_client.get("/static/drf_spectacular_sidecar/nope.js")

    assert response.status_code == 404
