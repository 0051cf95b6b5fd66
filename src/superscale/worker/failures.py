"""How a job's failure reads to its user: each exception a job can end with, as the `JobError`
its result carries (4xx where the input is at fault, 500 naming the exception where we are)."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from superscale import images
from superscale.engine import Cancelled
from superscale.errors import ErrorType
from superscale.jobs import JobError
from superscale.model import CheckpointError
from superscale.worker.fetch import InputError

log = logging.getLogger(__name__)


class OutputError(InputError):
    """The output cannot be made (over the output limit, a target out of range) or written in
    the requested format (e.g. WebP over 16383 px a side); `field` names the input at fault."""

    def __init__(self, message: str, field: str = "output_format") -> None:
        super().__init__(message, ErrorType.IMAGE_TOO_LARGE)
        self.field = field

    def to_job_error(self) -> JobError:
        detail = [{"loc": ["body", self.field], "msg": self.message, "type": self.error_type}]
        return JobError(422, self.message, self.error_type, detail)


class InvalidInput(InputError):
    """The stored input no longer validates (the API validates at submit; this is a backstop)."""

    def __init__(self, exc: ValidationError) -> None:
        # Never the input itself in the error: it may be a whole data: URI.
        detail: list[dict[str, Any]] = json.loads(
            exc.json(include_url=False, include_context=False, include_input=False)
        )
        for item in detail:
            item["loc"] = ["body", *item.get("loc", [])]
        message = "; ".join(str(item.get("msg", "")) for item in detail) or "invalid input"
        super().__init__(message, ErrorType.VALIDATION_ERROR)
        self.detail = detail

    def to_job_error(self) -> JobError:
        return JobError(422, self.message, self.error_type, self.detail)


def unreadable_input(exc: images.ImageError) -> InputError:
    """A decoding failure as the input error it is."""
    too_large = isinstance(exc, images.ImageTooLarge)
    kind = ErrorType.IMAGE_TOO_LARGE if too_large else ErrorType.IMAGE_LOAD_ERROR
    return InputError(str(exc), kind)


def encode_output(
    image: Image.Image | np.ndarray,
    fmt: str,
    icc_profile: bytes | None,
    quality: int | None = None,
    lossless: bool = False,
) -> bytes:
    """`images.encode`, its refusals turned into a job error the user can act on."""
    try:
        return images.encode(image, fmt, icc_profile, quality, lossless)
    except images.ImageError as exc:
        raise OutputError(str(exc)) from None


def job_error(request_id: str, exc: BaseException) -> JobError:
    """The error a job ends with for `exc` (the caller has ruled out a lost lease or a stop)."""
    if isinstance(exc, Cancelled):
        return JobError.cancelled()
    if isinstance(exc, InputError):
        return exc.to_job_error()
    if isinstance(exc, CheckpointError):
        # The deployment's fault, not the request's. 500, not 503: the job is over, and
        # fal's clients would retry a 503 result. The remedy names server paths: log only.
        log.error("request %s: checkpoint unavailable: %s", request_id, exc)
        return JobError(
            500,
            f"The requested checkpoint is not available on this server "
            f"({type(exc).__name__}); its operator can find why, and how to install it, "
            "in the server log.",
            ErrorType.MODEL_UNAVAILABLE,
        )
    log.error("request %s failed", request_id, exc_info=exc)
    return JobError.internal(exc)
