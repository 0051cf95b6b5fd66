"""The endpoint's OpenAPI document, shaped like the one fal publishes per endpoint:
`info.x-fal-metadata.endpointId`, schemas `AuraSrInput` and `AuraSrOutput`, the queue paths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic.json_schema import models_json_schema

from superscale import __version__ as _version
from superscale.api.inputs import IMAGE_URL_PATTERN
from superscale.registry import CHECKPOINT_NAMES
from superscale.schemas import (
    ENDPOINT_ID,
    FACTOR_STRING_PATTERN,
    AuraSrInput,
    AuraSrOutput,
    QueueStatus,
)

_REF = "#/components/schemas/{model}"


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _answer(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(ref)}


# Every error answer has fal's shape (`Error`); what each status means on our routes.
_ERRORS = {
    "400": "Not finished yet (the request's result), already completed (cancel)",
    "401": "Missing, invalid or revoked API key (or fal_jwt_token)",
    "404": "No such request for this key; or an output not stored (X-Fal-Store-IO: 0) read already",
    "413": "Body larger than the server's limit",
    "422": "Invalid input (at submit), or the request's input could not be used (its result)",
    "429": "Queue full: retry after Retry-After seconds",
    "499": "The request was cancelled (its result; error_type client_cancelled)",
    "500": "The request failed on the server, or its worker stopped responding (its result)",
    "503": "The job store is unreachable: retry after Retry-After seconds",
    "504": "Not started before its x-fal-request-timeout (its result; request_timeout)",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _answer("Error", _ERRORS[code]) for code in codes}


def _request_id_param() -> dict[str, Any]:
    return {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}


# fal's platform headers (x-fal-store-io, x-fal-no-retry, timeouts …) are listed in
# docs/api.md, not here: fal's own per-endpoint documents leave them out too.
_MAX_QUEUE_LENGTH = {
    "name": "fal_max_queue_length",
    "in": "query",
    "description": "429 when more than this many requests are waiting",
    "schema": {"type": "integer", "minimum": 0, "maximum": 999999999},
}


def _query_input(schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """The input as query parameters: a GET run or submit (fal-js's `method: "get"`)."""
    model = schemas["AuraSrInput"]
    required = set(model.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": schema}
        for name, schema in model["properties"].items()
    ]


def _input_schema(schemas: dict[str, Any]) -> None:
    """State the rules pydantic's schema cannot: what `image_url` may be (a pattern, the same
    rule the API checks), and the factor as fal's clients send it (2.5, "2.5"; either name)."""
    properties = schemas["AuraSrInput"]["properties"]
    properties["image_url"]["pattern"] = IMAGE_URL_PATTERN
    factor = properties["upscaling_factor"]
    number = {"type": "number", "minimum": factor.pop("minimum"), "maximum": factor.pop("maximum")}
    factor.pop("type", None)
    factor["anyOf"] = [number, {"type": "string", "pattern": f"^(?:{FACTOR_STRING_PATTERN})$"}]
    properties["upscale_factor"] = {**factor, "title": "Upscale Factor"}


def build_openapi(
    server_url: str | None = None, checkpoints: Sequence[str] = CHECKPOINT_NAMES
) -> dict[str, Any]:
    """The API's OpenAPI document; `checkpoints`: the names this server serves (the enum)."""
    _, defs = models_json_schema(
        [
            (AuraSrInput, "validation"),
            (AuraSrOutput, "serialization"),
            (QueueStatus, "serialization"),
        ],
        ref_template=_REF,
    )
    schemas = dict(defs.get("$defs", {}))
    _input_schema(schemas)
    checkpoint = schemas["AuraSrInput"]["properties"]["checkpoint"]
    checkpoint.pop("pattern", None)
    checkpoint["enum"] = list(checkpoints)
    schemas["Error"] = {
        "title": "Error",
        "description": "fal's error shape; `error_type` names the kind (see X-Fal-Error-Type).",
        "type": "object",
        "required": ["detail"],
        "properties": {
            "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {}}]},
            "error_type": {"type": "string"},
        },
    }
    queue = f"/queue/{ENDPOINT_ID}/requests/{{request_id}}"
    query_input = _query_input(schemas)
    run_answers = {
        "200": _answer("AuraSrOutput", "The output"),
        **_errors("400", "401", "413", "422", "429", "499", "500", "503", "504"),
    }
    submit_answers = {
        "200": _answer("QueueStatus", "Queued"),
        **_errors("401", "413", "422", "429", "503"),
    }
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
                    "responses": run_answers,
                },
                "get": {
                    "summary": "Run synchronously, the input in the query string",
                    "parameters": query_input,
                    "responses": run_answers,
                },
            },
            f"/queue/{ENDPOINT_ID}": {
                "post": {
                    "summary": "Submit to the queue",
                    "parameters": [_MAX_QUEUE_LENGTH],
                    "requestBody": {"required": True, "content": _json("AuraSrInput")},
                    "responses": submit_answers,
                },
                "get": {
                    "summary": "Submit to the queue, the input in the query string",
                    "parameters": [*query_input, _MAX_QUEUE_LENGTH],
                    "responses": submit_answers,
                },
            },
            f"{queue}/status": {
                "get": {
                    "summary": "Queue status",
                    "parameters": [
                        _request_id_param(),
                        {
                            "name": "logs",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["true", "false", "1", "0", ""]},
                        },
                    ],
                    "responses": {
                        "200": _answer("QueueStatus", "Completed"),
                        "202": _answer("QueueStatus", "Queued or running"),
                        **_errors("401", "404", "422", "503"),
                    },
                }
            },
            queue: {
                "get": {
                    "summary": "Result",
                    "parameters": [_request_id_param()],
                    "responses": {
                        "200": _answer("AuraSrOutput", "The output"),
                        **_errors("400", "401", "404", "422", "499", "500", "503", "504"),
                    },
                }
            },
            f"{queue}/cancel": {
                "put": {
                    "summary": "Cancel",
                    "parameters": [_request_id_param()],
                    "responses": {
                        "202": {"description": "Cancellation requested"},
                        "400": {"description": _ERRORS["400"]},
                        "404": {"description": _ERRORS["404"]},
                        **_errors("401", "503"),
                    },
                }
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
