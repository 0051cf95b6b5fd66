"""Resolve a job's `image_url` to bytes: our own file store, a `data:` URI, or http(s).

Every failure is an `InputError`: the user's fault, reported as a 422 pointing at `image_url`
with fal's error types (`file_download_error`, `file_too_large`, `image_load_error`).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import httpx

from superscale import datauri, netguard
from superscale.errors import ErrorType
from superscale.files.base import FileNotFound, FileStore, InvalidKey, check_key
from superscale.files.urls import key_after_files, key_of_path
from superscale.jobs.records import JobError
from superscale.settings import Settings

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class InputError(Exception):
    """The input image could not be obtained or read; the user's fault (HTTP 422)."""

    def __init__(self, message: str, error_type: ErrorType = ErrorType.FILE_DOWNLOAD_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type

    def to_job_error(self) -> JobError:
        detail = [{"loc": ["body", "image_url"], "msg": self.message, "type": self.error_type}]
        return JobError(422, self.message, self.error_type, detail)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def own_file_key(url: str, settings: Settings) -> str | None:
    """The file-store key when `url` names a file this server hosts, else None.

    Ours are `{public_url}/files/{key}`, and `/files/{key}` on the host and port the server
    binds (with a wildcard bind: on any loopback name), since clients may use either.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or _default_port(parts.scheme)
    except ValueError:
        return None
    host = parts.hostname.lower()
    public = urlsplit(settings.resolved_public_url())
    prefixes: list[str] = []
    if host == (public.hostname or "").lower() and port == (
        public.port or _default_port(public.scheme)
    ):
        prefixes.append(public.path)
    bind = settings.host.strip("[]").lower()
    local = bind in _WILDCARD_HOSTS or bind in _LOOPBACK_NAMES
    bound = (*_LOOPBACK_NAMES, bind) if local else (bind,)
    if port == settings.port and host in bound:
        prefixes.append("")
    for mount in prefixes:
        key = key_of_path(parts.path, mount)
        if key is not None:
            return key
    return None


def _files_key(url: str) -> str | None:
    """The key of a `…/files/{key}` URL on any host, when it has the shape of our keys."""
    key = key_after_files(urlsplit(url).path)
    if key is None:
        return None
    try:
        return check_key(key)
    except InvalidKey:
        return None


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a `data:` URI (`superscale.datauri`'s rule), as an input error if refused."""
    try:
        return datauri.decode(uri, max_bytes)
    except datauri.DataUriError as exc:
        if exc.too_large:
            raise _too_large(max_bytes) from None
        raise InputError(f"image_url is a {exc}", ErrorType.IMAGE_LOAD_ERROR) from None


def _too_large(max_bytes: int) -> InputError:
    return InputError(
        f"the image at image_url is larger than the limit of {max_bytes} bytes",
        ErrorType.FILE_TOO_LARGE,
    )


class InputFetcher:
    """Fetches inputs for one worker. Holds one HTTP client, so keep-alive connections are
    reused across jobs. `allow` exempts (host, port) pairs from the SSRF guard (tests only)."""

    def __init__(
        self,
        settings: Settings,
        file_store: FileStore,
        allow: netguard.AllowHook | None = None,
    ) -> None:
        self.settings = settings
        self.file_store = file_store
        self._allow = allow
        self._client: httpx.Client | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def fetch(self, url: str, should_cancel: Callable[[], bool] | None = None) -> bytes:
        """The input's bytes. An http(s) fetch — redirects, DNS lookups and all — ends within
        `fetch_timeout` seconds, or with `netguard.Interrupted` soon after `should_cancel()`
        turns true."""
        url = url.strip()
        if datauri.is_data_uri(url):
            return decode_data_uri(url, self.settings.max_input_bytes)
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme not in ("http", "https"):
            raise InputError("image_url must be an http(s) URL, a data: URI or a file of ours")
        key = own_file_key(url, self.settings)
        if key is not None:
            return self._from_store(key)
        # Clients may reach us by a name we cannot know (a LAN address, a proxy). A `/files/`
        # URL whose key is in our store is ours: keys are unguessable, so a foreign URL cannot
        # name one by accident, and whoever knows a key may read the file anyway.
        key = _files_key(url)
        if key is not None:
            try:
                stored = self.file_store.get(key)
            except FileNotFound:
                pass
            else:
                return self._checked_size(stored.data)
        with netguard.budget(self.settings.fetch_timeout, should_cancel):
            return self._from_http(url)

    def _checked_size(self, data: bytes) -> bytes:
        if len(data) > self.settings.max_input_bytes:
            raise _too_large(self.settings.max_input_bytes)
        return data

    def _from_store(self, key: str) -> bytes:
        try:
            stored = self.file_store.get(key)
        except FileNotFound:
            raise InputError(
                "image_url names a file of this server that does not exist or has expired"
            ) from None
        return self._checked_size(stored.data)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = netguard.client(
                guard=self.settings.ssrf_guard,
                timeout=self.settings.fetch_timeout,
                allow=self._allow,
            )
        return self._client

    def _from_http(self, url: str) -> bytes:
        for _hop in range(MAX_REDIRECTS + 1):  # the hops share the one budget
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InputError(f"image_url redirected to an unsupported URL: {url[:200]}")
            try:
                location = self._get_once(url)
            except netguard.Refused as exc:
                raise InputError(f"image_url refused: {exc}") from None
            except httpx.InvalidURL as exc:
                raise InputError(f"image_url is not a valid URL: {exc}") from None
            except httpx.TimeoutException:
                raise InputError(
                    f"timed out after {self.settings.fetch_timeout:g} s fetching image_url"
                ) from None
            except httpx.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
                raise InputError(f"could not fetch image_url: {reason}") from None
            if isinstance(location, bytes):
                return location
            url = location
        raise InputError(f"image_url redirected more than {MAX_REDIRECTS} times")

    def _get_once(self, url: str) -> bytes | str:
        """One hop: the body, or the next URL when the answer is a redirect."""
        cap = self.settings.max_input_bytes
        headers = {"Accept": "image/*, */*;q=0.5", "User-Agent": "superscale"}
        with self._http().stream("GET", url, headers=headers) as response:
            if response.status_code in _REDIRECTS:
                target = response.headers.get("location")
                if not target:
                    raise InputError(f"image_url answered {response.status_code} without Location")
                return urljoin(url, target)
            if response.status_code != 200:
                raise InputError(f"fetching image_url answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _too_large(cap)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > cap:
                    raise _too_large(cap)
            return bytes(body)
