"""The HTTP API: fal's model-API protocol for `fal-ai/aura-sr`. Never imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superscale.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so `superscale.api.keys` (used by the CLI) does not pull in FastAPI.
    if name == "create_app":
        from superscale.api.app import create_app

        return create_app
    raise AttributeError(name)
