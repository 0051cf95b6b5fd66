"""The `fal-ai/aura-sr` endpoint's input and output, and fal's queue shapes.

One module, used by the API (validation, OpenAPI), the worker, the client and the CLI alike.
Field names and defaults follow fal's published endpoint schema; `seed` and `output_format`
are our additions.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from superscale.registry import CHECKPOINT_NAMES, CUSTOM_NAME
from superscale.scaling import MAX_SCALE, MAX_TILE_OVERLAP, MIN_SCALE, Scale, Target

ENDPOINT_ID = "fal-ai/aura-sr"
MAX_TARGET_SIDE = 65535
# The factor as a string (fal's older types send "4"): 1 to 16, up to 6 decimals.
FACTOR_STRING_PATTERN = r"(?:[1-9]|1[0-5])(?:\.[0-9]{1,6})?|16(?:\.0{1,6})?"
CHECKPOINTS = CHECKPOINT_NAMES
DEFAULT_SEED = 0

# A published name or one a server was given for a checkpoint of its own: the names one
# server serves are its OpenAPI enum (`api/openapi.py`), and a name it does not serve a 422
# that lists them (`api/inputs.py`).
Checkpoint = Annotated[str, StringConstraints(pattern=f"^{CUSTOM_NAME.pattern}$")]
OutputFormat = Literal["png", "jpeg", "webp"]
QueueState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
LogLevel = Literal["STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"]


class AuraSrInput(BaseModel):
    """Input of `fal-ai/aura-sr`."""

    model_config = ConfigDict(
        title="AuraSrInput", populate_by_name=True, extra="ignore", json_schema_extra=None
    )

    image_url: str = Field(
        ...,
        min_length=1,
        description="URL of the image to upscale: http(s), a data: URI, or a URL of this "
        "server's storage.",
        examples=["https://example.com/photo.png"],
    )
    upscaling_factor: float = Field(
        4,
        ge=MIN_SCALE,
        le=MAX_SCALE,
        validation_alias=AliasChoices("upscaling_factor", "upscale_factor"),
        description="Upscaling factor, 1 to 16 (fractions allowed; newer clients call it "
        "upscale_factor). Up to 4 the model runs once, above it twice; the result is then "
        "resized down to round(width·factor) × round(height·factor).",
    )
    # Strict, as fal's schema is: a JSON boolean, not "yes" or 1; a seed is an integer, not
    # true or "5".
    overlapping_tiles: StrictBool = Field(
        False,
        description="Run a second, offset pass of tiles and blend it in, removing seams. "
        "About doubles inference time.",
    )
    checkpoint: Checkpoint = Field("v1", description="Model checkpoint to use.")
    seed: StrictInt | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="Seed of the style noise. The same seed gives the same output bytes. "
        f"Omitted: {DEFAULT_SEED}, whose folded weights are kept warm.",
    )
    output_format: OutputFormat = Field("png", description="Encoding of the output image.")
    target_width: StrictInt | None = Field(
        None,
        ge=1,
        le=MAX_TARGET_SIDE,
        description="Output width in px, instead of a factor (with target_height: exactly that "
        "size; alone: the aspect ratio kept). Each side may grow 1x to 16x.",
    )
    target_height: StrictInt | None = Field(
        None, ge=1, le=MAX_TARGET_SIDE, description="Output height in px; see target_width."
    )
    tile_overlap: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_TILE_OVERLAP,
        description="Input px neighbouring tiles share, blended with a smooth window: no seams "
        "at (64 / (64 - overlap))² of the cost (overlapping_tiles costs about 2x). Omitted: the "
        "server's default (8), or 0 with overlapping_tiles. Not with overlapping_tiles.",
    )
    output_quality: StrictInt | None = Field(
        None,
        ge=1,
        le=100,
        description="jpeg and webp quality, 1 to 100 (default: jpeg 90, webp 90). PNG is "
        "always lossless.",
    )
    lossless: StrictBool = Field(False, description="webp only: lossless compression.")

    @field_validator("seed", mode="before")
    @classmethod
    def _integral_seed(cls, value: Any) -> Any:
        # JSON Schema's integer is a number without a fraction: 5.0 is one (fal's clients may
        # send it), true and "5" are not (StrictInt refuses those).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _both_factor_names_valid(cls, data: Any) -> Any:
        # Either name may carry the factor (upscaling_factor wins when both come); neither may
        # be invalid.
        if isinstance(data, dict) and "upscaling_factor" in data and "upscale_factor" in data:
            value = cls._factor(data["upscale_factor"])
            if not isinstance(value, float) or not MIN_SCALE <= value <= MAX_SCALE:
                raise ValueError(f"upscale_factor must be a number from 1 to 16, not {value!r}")
        return data

    @model_validator(mode="after")
    def _options_that_go_together(self) -> AuraSrInput:
        targets = self.target_width is not None or self.target_height is not None
        if targets and "upscaling_factor" in self.model_fields_set:
            raise ValueError("give upscale_factor or a target size (target_width/height), not both")
        if self.tile_overlap and self.overlapping_tiles:
            raise ValueError("tile_overlap and overlapping_tiles are two seam remedies: choose one")
        if self.output_quality is not None and self.output_format == "png":
            raise ValueError("output_quality applies to jpeg and webp (png is always lossless)")
        if self.lossless and self.output_format != "webp":
            raise ValueError("lossless applies to webp (png is always lossless)")
        return self

    def stored(self) -> dict[str, Any]:
        """The input as a job keeps it: every field, except a factor that a target size stands
        in for (the worker validates the stored input again; a target with a factor is a
        refusal)."""
        exclude = {"upscaling_factor"} if not isinstance(self.scale(), float) else None
        return self.model_dump(mode="json", exclude=exclude)

    def scale(self) -> Scale:
        """What the upscale is asked for: the target size when one is given, else the factor."""
        if self.target_width is not None or self.target_height is not None:
            return Target(self.target_width, self.target_height)
        return self.upscaling_factor

    def scale_field(self) -> str:
        """The input field an error about the output's size names."""
        return "upscaling_factor" if isinstance(self.scale(), float) else "target_width"

    @field_validator("upscaling_factor", mode="before")
    @classmethod
    def _factor(cls, value: Any) -> Any:
        # fal's clients send 4, "4" or 4.0 (code in the wild, 2 or "2"): a number or a numeric
        # string. true, "" or "four" must still fail as a 422.
        if isinstance(value, bool):
            raise ValueError("the factor must be a number, not a boolean")
        if isinstance(value, str):
            if not re.fullmatch(FACTOR_STRING_PATTERN, value):
                raise ValueError("the factor must be a number from 1 to 16, like 2 or 2.5")
            return float(value)
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError("the factor must be a finite number")
            return float(value)
        return value


def batch_key(params: AuraSrInput) -> str:
    """Jobs with equal keys run the same folded network (checkpoint and style seed), so a
    worker may push their tiles through the model together."""
    seed = DEFAULT_SEED if params.seed is None else params.seed
    return f"{params.checkpoint}:seed={seed}"


class ImageFile(BaseModel):
    """A hosted image, as fal describes files in outputs."""

    model_config = ConfigDict(title="Image")

    url: str
    content_type: str
    file_name: str
    file_size: int
    width: int
    height: int
    file_data: str | None = Field(None, exclude=True)


class AuraSrOutput(BaseModel):
    """Output of `fal-ai/aura-sr`."""

    model_config = ConfigDict(title="AuraSrOutput")

    image: ImageFile
    timings: dict[str, float] = Field(
        default_factory=dict, description="Seconds spent in each step of the request."
    )


class LogEntry(BaseModel):
    message: str
    level: LogLevel = "INFO"
    source: str = "USER"
    timestamp: str


class QueueStatus(BaseModel):
    """What status, stream and submit answer. Keys the clients index are always present."""

    status: QueueState
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int | None = None
    logs: list[LogEntry] | None = None
    metrics: dict[str, float | None] | None = None
    error: str | None = None
    error_type: str | None = None
