"""/openapi.json: an OpenAPI 3.1 document of every vendor route, generated from the same msgspec
Structs that validate requests, so the document cannot drift from the code."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from pipeline.formats.base import VendorFormat

AUTH: dict[str, list[dict[str, list[str]]]] = {
    "topsort": [{"bearer": []}],
    "dfinery": [{"bearer": []}],
    "retailrocket": [{"apiKey": [], "partnerId": []}],
    "impression": [{"bearer": []}, {"token": []}],
}
SUCCESS = {"topsort": "204", "retailrocket": "200", "dfinery": "200", "impression": "200"}


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
        operation: dict[str, Any] = {
            "operationId": f"{source}_{name}_{path.strip('/').replace('/', '_').replace('.', '_')}",
            "tags": [source],
            "security": AUTH[source],
            "responses": {
                SUCCESS[source]: {"description": "accepted and durable in Kafka"},
                "400": {"description": "invalid request, in the vendor's error shape"},
                "401": {"description": "missing or invalid credentials"},
                "413": {"description": "body above the limit"},
                "429": {"description": "the tenant's rate limit is exceeded; retry after Retry-After"},
                "503": {"description": "Kafka unavailable; retry after Retry-After"},
            },
        }
        if source == "retailrocket":
            operation["parameters"] = [
                {"name": "apiKey", "in": "query", "required": True, "schema": {"type": "string"}},
                {"name": "partnerId", "in": "query", "required": True, "schema": {"type": "string"}},
            ]
        if body_type is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[body_type]}},
            }
        paths[path] = {"post": operation}
    return {
        "openapi": "3.1.0",
        "info": {"title": "eventpipe receiver", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "query", "name": "apiKey"},
                "partnerId": {"type": "apiKey", "in": "query", "name": "partnerId"},
                "token": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
