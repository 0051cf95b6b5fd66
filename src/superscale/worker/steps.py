"""The steps around a job's inference: validate, fetch and decode its input; encode and store
its output. The worker (`loop.py`) runs them around the engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from superscale import images, netguard
from superscale.engine import Cancelled
from superscale.files.base import FileStore, new_key
from superscale.files.urls import file_url, key_of_file_url
from superscale.jobs import Job
from superscale.jobs.store import JobStore
from superscale.scaling import check_output_size, model_passes, resolve
from superscale.schemas import AuraSrInput, AuraSrOutput, ImageFile
from superscale.settings import Settings
from superscale.worker.engines import get_upscaler
from superscale.worker.failures import InvalidInput, OutputError, encode_output, unreadable_input
from superscale.worker.fetch import InputFetcher

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A job's input, fetched and decoded, waiting for its inference."""

    job: Job
    params: AuraSrInput
    decoded: images.DecodedImage
    timings: dict[str, float]
    should_cancel: Callable[[], bool]

    @property
    def pixels(self) -> int:
        """What the upscale holds, in input pixels of one pass: a second pass (factors above
        4) runs on 16× as many."""
        width, height = self.decoded.image.size
        factor, _ = resolve(width, height, self.params.scale())  # checked by `prepare`
        return width * height * (16 if model_passes(factor) == 2 else 1)


class JobSteps:
    """Input and output of one worker's jobs. `log` lines go to the job (and never fail it)."""

    def __init__(
        self,
        settings: Settings,
        job_store: JobStore,
        file_store: FileStore,
        fetcher: InputFetcher,
    ) -> None:
        self.settings = settings
        self.job_store = job_store
        self.file_store = file_store
        self.fetcher = fetcher
        self.public_url = settings.resolved_public_url()

    def prepare(self, job: Job, should_cancel: Callable[[], bool]) -> Prepared:
        """Validate, fetch and decode the input; refuse what the output format cannot hold."""
        timings: dict[str, float] = {}
        try:
            params = AuraSrInput.model_validate(job.input)
        except ValidationError as exc:
            raise InvalidInput(exc) from None

        t = time.perf_counter()
        try:
            data = self.fetcher.fetch(params.image_url, should_cancel)
        except netguard.Interrupted:
            raise Cancelled() from None
        timings["fetch"] = time.perf_counter() - t
        self.log(job.id, f"fetched input: {len(data)} bytes in {timings['fetch']:.2f} s")

        t = time.perf_counter()
        try:
            decoded = images.decode(data, self.settings.max_input_pixels)
        except images.ImageError as exc:
            raise unreadable_input(exc) from None
        timings["decode"] = time.perf_counter() - t
        del data
        width, height = decoded.image.size
        self.log(job.id, f"decoded {width}x{height} {decoded.image.mode}")
        model_scale = get_upscaler(self.settings, job.checkpoint).config.scale
        # Before the inference, which an output too large to make or hold would waste.
        try:
            size = check_output_size(
                width, height, params.scale(), self.settings.max_output_pixels, model_scale
            )
        except ValueError as exc:
            raise OutputError(str(exc), params.scale_field()) from None
        try:
            images.check_size(*size, params.output_format)
        except images.ImageError as exc:
            raise OutputError(str(exc)) from None
        if should_cancel():
            raise Cancelled()
        return Prepared(job, params, decoded, timings, should_cancel)

    def store_output(self, prepared: Prepared, result: Image.Image | np.ndarray) -> dict[str, Any]:
        """Encode and store the upscale (an image, or its pixels); the job's output (its
        timings included)."""
        job, params, timings = prepared.job, prepared.params, prepared.timings
        width, height = images.size_of(result)
        t = time.perf_counter()
        encoded = encode_output(
            result,
            params.output_format,
            prepared.decoded.icc_profile,
            params.output_quality,
            params.lossless,
        )
        timings["encode"] = time.perf_counter() - t
        if prepared.should_cancel():
            raise Cancelled()

        t = time.perf_counter()
        key = new_key(f"{job.id}.{images.extension(params.output_format)}")
        ttl = job.file_ttl if job.file_ttl is not None else self.settings.file_ttl_seconds
        content_type = images.content_type(params.output_format)
        self.file_store.put(key, encoded, content_type, expires_at=time.time() + ttl)
        timings["store"] = time.perf_counter() - t

        image = ImageFile(
            url=file_url(self.public_url, key),
            content_type=content_type,
            file_name=key.rsplit("/", 1)[-1],
            file_size=len(encoded),
            width=width,
            height=height,
            file_data=None,
        )
        self.log(
            job.id,
            f"done: {image.width}x{image.height} {params.output_format}, {image.file_size} bytes, "
            f"inference {timings['inference']:.2f} s",
        )
        return AuraSrOutput(image=image, timings=timings).model_dump(mode="json")

    def discard(self, output: dict[str, Any]) -> None:
        key = key_of_file_url(str(output.get("image", {}).get("url", "")), self.public_url)
        if key is not None:
            try:
                self.file_store.delete(key)
            except Exception:
                log.warning("could not delete discarded output %s", key, exc_info=True)

    def log(self, request_id: str, message: str, level: str = "INFO") -> None:
        try:
            self.job_store.append_log(request_id, message, level)
        except Exception:  # a log line is not worth failing the job over
            log.warning("could not append a log line to %s", request_id, exc_info=True)
