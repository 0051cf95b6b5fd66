"""Typed results: `fal-ai/aura-sr` answers become `AuraSrResult`, whose `image` can fetch itself.

`AuraSrResult` is an `AuraSrOutput` (the shared schema), so code typed against the schema
accepts it; the subclass only adds download helpers to the image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import PrivateAttr

from superscale import datauri
from superscale.client._protocol import DEFAULT_TIMEOUT, EndpointId
from superscale.client.errors import error_from_response
from superscale.schemas import ENDPOINT_ID, AuraSrOutput, ImageFile

if TYPE_CHECKING:
    from PIL import Image as PILImage

_AURA_SR = EndpointId.parse(ENDPOINT_ID)


class Image(ImageFile):
    """A hosted output image with helpers to fetch it: `read`, `download`, `to_pil`
    (and `aread`, `adownload` in async code)."""

    # Headers for fetching the URL: the client's key when the URL is on its own server.
    _headers: dict[str, str] = PrivateAttr(default_factory=dict)

    def read(self) -> bytes:
        """The image's bytes."""
        if self.file_data:
            return base64.b64decode(self.file_data)
        if datauri.is_data_uri(self.url):
            return datauri.decode(self.url)
        with httpx.Client(timeout=DEFAULT_TIMEOUT, follow_redirects=True) as http:
            return self._check(http.get(self.url, headers=self._headers))

    async def aread(self) -> bytes:
        """The image's bytes, without blocking the event loop."""
        if self.file_data or datauri.is_data_uri(self.url):
            return self.read()
        async with httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, follow_redirects=True) as http:
            return self._check(await http.get(self.url, headers=self._headers))

    def download(self, path: str | Path) -> Path:
        """Write the image to `path` (a file, or a directory to put `file_name` in)."""
        return self._write(path, self.read())

    async def adownload(self, path: str | Path) -> Path:
        return self._write(path, await self.aread())

    def to_pil(self) -> PILImage.Image:
        """The image decoded by Pillow (loaded, so no file handle stays open)."""
        from PIL import Image as PILImage

        image = PILImage.open(io.BytesIO(self.read()))
        image.load()
        return image

    @staticmethod
    def _check(response: httpx.Response) -> bytes:
        if response.is_error:
            raise error_from_response(response)
        return response.content

    def _write(self, path: str | Path, data: bytes) -> Path:
        target = Path(path)
        if target.is_dir():
            target = target / Path(self.file_name).name
        target.write_bytes(data)
        return target


class AuraSrResult(AuraSrOutput):
    """`fal-ai/aura-sr`'s output, with `image.download(path)` and `image.to_pil()`."""

    image: Image


def parse_output(endpoint: str, data: Any, auth_for: Callable[[str], dict[str, str]]) -> Any:
    """`AuraSrResult` for the aura-sr endpoint, the JSON as it came for any other.
    `auth_for(url)` gives the headers the image's URL may see (the key only on our server)."""
    try:
        is_aura_sr = EndpointId.parse(endpoint) == _AURA_SR
    except ValueError:
        is_aura_sr = False
    if not is_aura_sr or not isinstance(data, dict):
        return data
    result = AuraSrResult.model_validate(data)
    result.image._headers = auth_for(result.image.url)
    return result
