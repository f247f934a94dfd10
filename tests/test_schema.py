"""OpenAPI schema and Swagger UI (DESIGN §2, §5): complete, valid and offline."""

import json
import re

import pytest
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

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
    "invalid_input": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "already_exists": 409,
    "already_released": 409,
    "conflict": 409,
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
        assert operation.get("security") == [{"ApiKeyAuth": []}], (method, path)
        assert "401" in operation["responses"], (method, path)


def test_writes_document_403_and_json_bodies_document_415(schema):
    for path, method, operation in _operations(schema):
        if not path.startswith("/api/v1/quotas") or method == "get":
            continue
        assert "403" in operation["responses"], (method, path)
        if "requestBody" in operation:
            assert "415" in operation["responses"], (method, path)
            assert "400" in operation["responses"], (method, path)


def test_health_needs_no_key_and_documents_503_with_the_error_schema(schema):
    operation = schema["paths"]["/health"]["get"]

    assert operation.get("security", []) in ([], [{}])
    response = operation["responses"]["503"]
    assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF


def test_every_documented_error_example_has_a_kind_matching_its_status(schema):
    kinds = set(
        schema["components"]["schemas"]["ErrorEnum"]["enum"]
        if "ErrorEnum" in schema["components"]["schemas"]
        else resolve(schema, schema["components"]["schemas"]["Error"])["properties"][
            "error"
        ]["enum"]
    )
    checked = 0
    for path, method, operation in _operations(schema):
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json", {})
            if media.get("schema", {}).get("$ref") != ERROR_REF:
                continue
            for example in media.get("examples", {}).values():
                kind = example["value"]["error"]
                assert kind in kinds, (method, path, status, kind)
                assert STATUS_BY_KIND[kind] == int(status), (method, path, status)
                assert example["value"]["message"]
                checked += 1

    assert checked > 0


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
