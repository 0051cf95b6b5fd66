"""The endpoint's OpenAPI document, shaped like the one fal publishes per endpoint:
`info.x-fal-metadata.endpointId`, schemas `AuraSrInput` and `AuraSrOutput`, the queue paths."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from superscale import __version__ as _version
from superscale.schemas import ENDPOINT_ID, AuraSrInput, AuraSrOutput, QueueStatus

_REF = "#/components/schemas/{model}"


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _ok(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(ref)}


def _request_id_param() -> dict[str, Any]:
    return {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}


def build_openapi(server_url: str | None = None) -> dict[str, Any]:
    _, defs = models_json_schema(
        [
            (AuraSrInput, "validation"),
            (AuraSrOutput, "serialization"),
            (QueueStatus, "serialization"),
        ],
        ref_template=_REF,
    )
    schemas = dict(defs.get("$defs", {}))
    queue = f"/queue/{ENDPOINT_ID}/requests/{{request_id}}"
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "AuraSR (superscale)",
            "version": _version,
            "description": "4x image upscaling with AuraSR, on fal's model-API protocol.",
            "x-fal-metadata": {"endpointId": ENDPOINT_ID, "category": "image-to-image"},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKeyAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Key key_id:key_secret",
                }
            },
        },
        "security": [{"apiKeyAuth": []}],
        "paths": {
            f"/{ENDPOINT_ID}": {
                "post": {
                    "summary": "Run synchronously",
                    "requestBody": {"required": True, "content": _json("AuraSrInput")},
                    "responses": {"200": _ok("AuraSrOutput", "The output")},
                }
            },
            f"/queue/{ENDPOINT_ID}": {
                "post": {
                    "summary": "Submit to the queue",
                    "requestBody": {"required": True, "content": _json("AuraSrInput")},
                    "responses": {"200": _ok("QueueStatus", "Queued")},
                }
            },
            f"{queue}/status": {
                "get": {
                    "summary": "Queue status",
                    "parameters": [
                        _request_id_param(),
                        {"name": "logs", "in": "query", "schema": {"type": "boolean"}},
                    ],
                    "responses": {"200": _ok("QueueStatus", "Status")},
                }
            },
            queue: {
                "get": {
                    "summary": "Result",
                    "parameters": [_request_id_param()],
                    "responses": {"200": _ok("AuraSrOutput", "The output")},
                }
            },
            f"{queue}/cancel": {
                "put": {
                    "summary": "Cancel",
                    "parameters": [_request_id_param()],
                    "responses": {"202": {"description": "Cancellation requested"}},
                }
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
