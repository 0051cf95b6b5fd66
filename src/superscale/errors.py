"""fal's error types: the `error_type` a failed request's result, status and webhook carry (and
the `X-Fal-Error-Type` header), as one typed set. Torch- and HTTP-free: the API, the worker,
the job store and the client all name them from here."""

from __future__ import annotations

import enum


class ErrorType(str, enum.Enum):
    """A `str`, so it serialises, compares and is stored as its plain value."""

    # The input's fault (422).
    VALIDATION_ERROR = "validation_error"  # the stored input no longer validates
    FILE_DOWNLOAD_ERROR = "file_download_error"  # image_url could not be fetched
    FILE_TOO_LARGE = "file_too_large"
    IMAGE_LOAD_ERROR = "image_load_error"  # fetched, but not an image we can decode
    IMAGE_TOO_LARGE = "image_too_large"  # the input, or its output in the chosen format
    # How a job ended otherwise: fal's platform error categories.
    CLIENT_CANCELLED = "client_cancelled"  # 499
    REQUEST_TIMEOUT = "request_timeout"  # 504: not started before its x-fal-request-timeout
    RUNNER_DISCONNECTED = "runner_disconnected"  # 500: its worker stopped responding
    MODEL_UNAVAILABLE = "model_unavailable"  # 500: the checkpoint is not on this server
    INTERNAL_ERROR = "internal_error"  # 500
    # The API's answers at submit.
    QUEUE_FULL = "queue_full"  # 429: the queue, or the key's share of it, is full
    RATE_LIMITED = "rate_limited"  # 429: the key sends more requests per second than it may
    UPLOAD_QUOTA_EXCEEDED = "upload_quota_exceeded"  # 429: the key's upload bytes for today
    SERVICE_UNAVAILABLE = "service_unavailable"  # 503: the job store is unreachable
    STORAGE_FULL = "storage_full"  # 507: the file store's disk is full

    def __str__(self) -> str:
        return self.value
