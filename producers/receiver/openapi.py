"""/openapi.json: an OpenAPI 3.1 document of every route, its request bodies generated from the same
msgspec Structs that validate requests (so they cannot drift from the code), its credentials one
security scheme per vendor scheme, and every reply in the vendor's documented shape."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from pipeline.formats.base import VendorFormat
from producers.receiver import cors

# One scheme per credential, so that a client (or a test tool) can hold one value for each: the bearer
# API key of Topsort and DFINERY is not the Impression API's JWT.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "apiKeyBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Topsort and DFINERY: the tenant's API key as a bearer token",
    },
    "jwtBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Impression API: an HS256 JWT whose sub claim names the tenant",
    },
    "jwtQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "the same JWT, in the query",
    },
    "retailRocketApiKey": {"type": "apiKey", "in": "query", "name": "apiKey"},
    "retailRocketPartnerId": {
        "type": "apiKey",
        "in": "query",
        "name": "partnerId",
        "description": "the partner the apiKey must belong to (403 otherwise); without it, or without "
        "apiKey, 400 naming the missing parameter",
    },
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "topsort": [{"apiKeyBearer": []}],
    "dfinery": [{"apiKeyBearer": []}],
    "retailrocket": [{"retailRocketApiKey": [], "retailRocketPartnerId": []}],
    "impression": [{"jwtBearer": []}, {"jwtQuery": []}],
}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


_TEXT = {"type": "string"}
# The vendors' reply bodies, as their documents show them.
REPLY_SCHEMAS: dict[str, dict[str, Any]] = {
    "TopsortError": _object(
        {"errCode": _TEXT, "docUrl": _TEXT, "message": {**_TEXT, "description": "names the field path"}}
    ),
    "RetailRocketError": _object(
        {
            "error": _object(
                {"code": _TEXT, "message": _TEXT, "path": {"type": ["string", "null"]}},
            )
        }
    ),
    "DfineryResult": _object(
        {
            "result_code": {"type": "integer", "description": "2000 accepted; 4001, 4002, 4006, 4007, 5001"},
            "result_msg": {"type": ["string", "null"]},
            "result_data": {"type": ["object", "null"], "properties": {"event_id": _TEXT}},
        }
    ),
    "ImpressionOk": _object({"status": {"const": "OK"}, "result": {"const": 1}}),
    "ImpressionError": _object(
        {
            "errors": _object(
                {
                    "message": _TEXT,
                    "error": {
                        "type": "object",
                        "description": "{} for a schema error, else express-jwt's error object",
                        "properties": {
                            "status": {"type": "integer"},
                            "name": _TEXT,
                            "message": _TEXT,
                            "code": _TEXT,
                        },
                    },
                }
            )
        }
    ),
}

_REQUEST_ID = {"X-Request-Id": {"description": "the request's id, also in the logs", "schema": _TEXT}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": _TEXT}}
# DFINERY's error bodies are fixed by its document; the field path travels in a header.
_DETAIL = {"X-Eventpipe-Error": {"description": "what was refused and where", "schema": _TEXT}}
_WHY = {
    400: "invalid request: not JSON, a field's type or constraint, a duplicate key",
    401: "missing or invalid credentials",
    403: "credentials valid, not for this partner; or (browser-facing routes) an Origin the tenant's "
    "allowed_origins does not list, X-Eventpipe-Error then says so",
    408: "the body was not received in time",
    413: "body above the limit (after decompression)",
    415: "content type or content encoding not accepted",
    429: "too many requests; retry after Retry-After",
    503: "Kafka did not acknowledge in time, or shutting down; retry after Retry-After",
}
_ERROR_STATUSES = (400, 401, 403, 408, 413, 415, 429, 503)
# vendor -> (success status, success body schema, error body schema)
_REPLIES: dict[str, tuple[int, str | None, str]] = {
    "topsort": (204, None, "TopsortError"),
    "retailrocket": (200, None, "RetailRocketError"),
    "dfinery": (200, "DfineryResult", "DfineryResult"),
    "impression": (200, "ImpressionOk", "ImpressionError"),
}


def _reply(description: str, schema: str | None, headers: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {"description": description, "headers": headers}
    if schema is not None:
        reply["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return reply


# Where a vendor's reason for a status differs from _WHY's.
_WHY_BY_SOURCE: dict[tuple[str, int], str] = {
    ("retailrocket", 400): _WHY[400] + "; or the apiKey or partnerId query parameter missing (its path is "
    "`query.<name>`)",
}


# CORS on the browser-facing routes (producers/receiver/cors.py).
_CORS_REPLY = {
    "Access-Control-Allow-Origin": {
        "description": "the request's Origin, echoed on every reply (errors too), so a page can read it",
        "schema": _TEXT,
    },
    "Access-Control-Expose-Headers": {"description": cors.EXPOSE_HEADERS, "schema": _TEXT},
    "Vary": {"description": "Origin", "schema": _TEXT},
}
_PREFLIGHT_REPLY = {
    "Access-Control-Allow-Origin": {"description": "the preflight's Origin", "schema": _TEXT},
    "Access-Control-Allow-Methods": {"description": cors.ALLOW_METHODS, "schema": _TEXT},
    "Access-Control-Allow-Headers": {"description": cors.ALLOW_HEADERS, "schema": _TEXT},
    "Access-Control-Max-Age": {"description": f"{cors.MAX_AGE_SECONDS} seconds", "schema": _TEXT},
    "Vary": {"description": "Origin", "schema": _TEXT},
    "Allow": {"description": "OPTIONS, POST (an OPTIONS without Origin, not a preflight)", "schema": _TEXT},
}
_BROWSER_NOTE = (
    "Browser-facing: answers CORS (OPTIONS preflight; Access-Control-Allow-Origin on every reply). A "
    "text/plain body, with or without charset=UTF-8 (what navigator.sendBeacon sends with a string), is "
    "taken as the route's JSON. A request whose Origin its tenant's allowed_origins does not list is "
    "refused with 403 in the vendor's shape and never stored."
)
_TEXT_BODY = {
    "type": "string",
    "contentMediaType": "application/json",
    "description": "the same JSON document, sent as text/plain (a beacon)",
}
_PREFLIGHT_QUERY: dict[str, list[tuple[str, str]]] = {
    "retailrocket": [("apiKey", "the apiKey"), ("partnerId", "the partnerId")],
    "impression": [("token", "the JWT")],
}


def _preflight(source: str, operation_id: str) -> dict[str, Any]:
    """OPTIONS on a browser-facing route: no credentials but those in the query."""
    headers = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "header", "required": False, "schema": _TEXT} for name in headers
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": _TEXT,
            "description": f"{what}, as the request carries it: a valid one names the tenant, whose "
            "allowed_origins then decide the preflight",
        }
        for name, what in _PREFLIGHT_QUERY.get(source, [])
    ]
    replies = {"204": {"description": "CORS allowed; no Kafka write", "headers": _PREFLIGHT_REPLY}}
    if source in _PREFLIGHT_QUERY:
        error_schema = _REPLIES[source][2]
        replies["403"] = _reply(
            "the query names a tenant that does not allow this Origin: no Access-Control-Allow-Origin, so "
            "the browser never sends the request",
            error_schema,
            {**_REQUEST_ID, **_DETAIL},
        )
    return {
        "operationId": f"{operation_id}_preflight",
        "tags": [source],
        "summary": "CORS preflight",
        "security": [],
        "parameters": parameters,
        "responses": replies,
    }


def responses(source: str) -> dict[str, Any]:
    success, ok_schema, error_schema = _REPLIES[source]
    browser = cors.browser_facing(source)
    replies = {
        str(success): _reply(
            "accepted and durable in Kafka", ok_schema, {**_REQUEST_ID, **(_CORS_REPLY if browser else {})}
        )
    }
    for status in _ERROR_STATUSES:
        headers = {**_REQUEST_ID, **(_RETRY_AFTER if status in (429, 503) else {})}
        schema: str | None = error_schema
        if browser:
            headers.update(_CORS_REPLY)
            if status == 403:
                headers.update(_DETAIL)
        if source == "dfinery":
            headers.update(_DETAIL)
            if status == 401:
                schema = None  # the document's 401 (no token) has no body
        why = _WHY_BY_SOURCE.get((source, status), _WHY[status])
        replies[str(status)] = _reply(why, schema, headers)
    return replies


def _custom_type_schema(t: type) -> dict[str, Any]:
    """The vendor modules decode a few fields into custom types (exact money, lenient timestamps)
    through a dec_hook; describe them by what a client may send."""
    if issubclass(t, Decimal):
        return {"type": ["number", "string"], "description": "an exact amount; numeric strings accepted"}
    if issubclass(t, datetime | str):
        return {"type": "string"}
    if issubclass(t, int):
        return {"type": "integer"}
    # the one remaining custom type is Retail Rocket's EventTime
    return {"type": "string", "description": "an ISO 8601 timestamp, with or without an offset"}


# What msgspec's Decimal schema ("string", format "decimal") leaves out: its decoder takes JSON numbers too.
_MSGSPEC_DECIMAL = {"type": "string", "format": "decimal"}
_EXACT_DECIMAL = {
    "type": ["number", "string"],
    "description": "an exact decimal: a JSON number or a numeric string",
}


def _non_empty(name: str) -> dict[str, Any]:
    return {"properties": {name: {"type": "array", "minItems": 1}}, "required": [name]}


# Rules the vendor modules enforce in code (a check in validate, a __post_init__) that JSON Schema can
# state too; the schemathesis test holds the document to them.
_REFINEMENTS: dict[str, dict[str, Any]] = {
    "EventsRequest": {
        "anyOf": [
            _non_empty(name) for name in ("impressions", "clicks", "purchases", "pageviews", "renders")
        ],
        "description": "at least one of the arrays holds an event",
    },
    "Envelope": {"minProperties": 1, "maxProperties": 1, "additionalProperties": False},
}


def _refined(node: Any) -> Any:
    if node == _MSGSPEC_DECIMAL:
        return _EXACT_DECIMAL
    if isinstance(node, dict):
        return {key: _refined(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_refined(value) for value in node]
    return node


_SERVICE_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "tags": ["operations"],
            "responses": {"200": {"description": "alive"}},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "tags": ["operations"],
            "responses": {
                "200": {"description": "Kafka reachable, not draining"},
                "503": {"description": "not ready: Kafka unreachable or draining"},
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": ["operations"],
            "responses": {"200": {"description": "Prometheus text format"}},
        }
    },
}


def document(formats: Mapping[str, VendorFormat]) -> dict[str, Any]:
    request_types: list[Any] = []
    operations: list[tuple[str, str, str, Any]] = []
    for fmt in formats.values():
        types = fmt.request_types
        for route in fmt.routes:
            body_type = types.get(route.name)
            if body_type is not None:
                request_types.append(body_type)
            operations.append((fmt.source, route.path, route.name, body_type))
    schemas, components = msgspec.json.schema_components(
        request_types, schema_hook=_custom_type_schema, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip(request_types, schemas, strict=True))
    paths: dict[str, Any] = {}
    for source, path, name, body_type in operations:
        operation_id = f"{source}_{name}_{path.strip('/').replace('/', '_').replace('.', '_')}"
        browser = cors.browser_facing(source)
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [source],
            "security": SECURITY[source],
            "responses": responses(source),
        }
        if browser:
            operation["description"] = _BROWSER_NOTE
        if body_type is not None:
            content: dict[str, Any] = {"application/json": {"schema": _refined(schema_of[body_type])}}
            if browser:
                content["text/plain"] = {"schema": _TEXT_BODY}
            operation["requestBody"] = {"required": True, "content": content}
        paths[path] = {"post": operation}
        if browser:
            paths[path]["options"] = _preflight(source, operation_id)
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventpipe receiver", "version": "1"},
        "paths": {**paths, **_SERVICE_PATHS},
        "components": {
            "schemas": {
                **{
                    name: {**_refined(schema), **_REFINEMENTS.get(name, {})}
                    for name, schema in components.items()
                },
                **REPLY_SCHEMAS,
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
