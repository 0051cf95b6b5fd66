"""Our file URLs ↔ file-store keys: `{base}/files/{key}`, built and parsed only here. `base` is
a server URL (`Settings.resolved_public_url()`, or the URL a client reached us by)."""

from __future__ import annotations

from urllib.parse import quote, unquote

FILES_PATH = "/files/"


def file_url(base: str, key: str) -> str:
    """The URL of a stored file on the server at `base`."""
    return f"{base.rstrip('/')}{FILES_PATH}{quote(key, safe='/')}"


def key_of_file_url(url: str, base: str) -> str | None:
    """The key when `url` is a file URL on the server at `base`, else None."""
    prefix = base.rstrip("/") + FILES_PATH
    if url.startswith(prefix) and len(url) > len(prefix):
        return unquote(url[len(prefix) :])
    return None


def key_of_path(path: str, mount: str = "") -> str | None:
    """The key of a URL path `{mount}/files/{key}` (`mount`: the path the server is served
    under, "" at the root), else None."""
    prefix = mount.rstrip("/") + FILES_PATH
    if path.startswith(prefix) and len(path) > len(prefix):
        return unquote(path[len(prefix) :])
    return None


def key_after_files(path: str) -> str | None:
    """The part of a URL path after its first `/files/`, whatever comes before (a server we
    are reached by under a name or prefix we cannot know), else None."""
    if FILES_PATH not in path:
        return None
    return unquote(path.split(FILES_PATH, 1)[1]) or None


def rebase(url: str, old_base: str, new_base: str) -> str:
    """A file URL on `old_base` moved to `new_base`; any other string unchanged."""
    old, new = old_base.rstrip("/") + FILES_PATH, new_base.rstrip("/") + FILES_PATH
    return new + url[len(old) :] if url.startswith(old) else url
