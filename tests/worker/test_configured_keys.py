"""Secrets and endpoints that come from `Settings` (env `SUPERSCALE_*` or CLI flags): the
upload-signing secret, the S3 endpoint and the webhook signing key — never printed, and shared
by configuration rather than by copying files between data directories."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from api.server import live_server
from fixture_http import FixtureServer, Reply
from superscale import webhooks
from superscale.api.signing import SECRET_FILE, Signer, load_secret
from superscale.cli import main
from superscale.jobs.sqlite import SqliteJobStore
from superscale.settings import Settings
from testkeys import ed25519_pem, private_pem

from .conftest import finished_job


def test_env_names_keep_working_and_secrets_never_show(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pem = ed25519_pem()
    monkeypatch.setenv("SUPERSCALE_SECRET_KEY", "upload-secret-123")
    monkeypatch.setenv("SUPERSCALE_WEBHOOK_KEY", pem)
    monkeypatch.setenv("SUPERSCALE_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    settings = Settings(data_dir=tmp_path)
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "upload-secret-123"
    assert settings.webhook_key is not None and settings.webhook_key.get_secret_value() == pem
    assert settings.s3_endpoint_url == "http://127.0.0.1:1"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "upload-secret-123" not in text and "PRIVATE KEY" not in text
    # The secret signs tokens; no file is created for it.
    token = Signer(load_secret(settings)).sign("p", {"a": 1}, 60)
    assert Signer(b"upload-secret-123").verify("p", token) is not None
    assert not (tmp_path / SECRET_FILE).exists()
    # AWS_ENDPOINT_URL is the fallback; an empty variable counts as unset.
    monkeypatch.setenv("SUPERSCALE_S3_ENDPOINT_URL", "")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    monkeypatch.setenv("SUPERSCALE_SECRET_KEY", "")
    monkeypatch.delenv("SUPERSCALE_WEBHOOK_KEY")
    unset = Settings(data_dir=tmp_path)
    assert unset.s3_endpoint_url == "http://127.0.0.1:2"
    assert unset.secret_key is None and unset.webhook_key is None
    # Without a configured secret, one is created in the data dir and kept.
    first = load_secret(unset)
    assert (tmp_path / SECRET_FILE).read_bytes() == first and load_secret(unset) == first


def test_webhook_key_from_text_or_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = private_pem(key).decode()
    key_file = tmp_path / "hook.pem"
    key_file.write_text(pem)
    from_text = webhooks.WebhookSigner.from_settings(
        Settings(data_dir=tmp_path, webhook_key=SecretStr(pem))
    )
    from_file = webhooks.WebhookSigner.from_settings(
        Settings(data_dir=tmp_path, webhook_key=SecretStr(str(key_file)))
    )
    assert from_text.kid == from_file.kid == webhooks.WebhookSigner(key).kid
    assert not (tmp_path / webhooks.KEY_FILE).exists()  # nothing made in the data dir
    # Unset: the data directory's own key, as before.
    own = webhooks.WebhookSigner.from_settings(Settings(data_dir=tmp_path))
    assert own.kid != from_text.kid and (tmp_path / webhooks.KEY_FILE).exists()


@pytest.mark.parametrize(
    "value, message",
    [
        ("/no/such/key.pem", "cannot be read"),
        ("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n", "not an"),
        (private_pem(ec.generate_private_key(ec.SECP256R1())).decode(), "does not hold an Ed25519"),
    ],
)
def test_bad_webhook_key_is_a_clear_error(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        webhooks.WebhookSigner.from_settings(
            Settings(data_dir=tmp_path, webhook_key=SecretStr(value))
        )
    # `superscale serve` refuses to start with it: a usage error, not a traceback.
    result = CliRunner().invoke(
        main, ["serve", "--data-dir", str(tmp_path), "--webhook-key", value]
    )
    assert result.exit_code == 2, result.output
    assert "--webhook-key" in result.output and message in result.output
    assert "Traceback" not in result.output


def test_worker_refuses_a_bad_webhook_key(tmp_path: Path) -> None:
    """`superscale worker` takes the same flag and stops before opening any store."""
    result = CliRunner().invoke(
        main, ["worker", "--data-dir", str(tmp_path), "--webhook-key", "/no/such/key.pem"]
    )
    assert result.exit_code == 2, result.output
    assert "--webhook-key" in result.output and "cannot be read" in result.output
    assert not (tmp_path / "superscale.db").exists()


def test_dispatcher_and_api_share_a_configured_key(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    http_server: Callable[[], FixtureServer],
) -> None:
    """A dispatcher on one machine and an API server on another (separate data dirs), both
    given SUPERSCALE_WEBHOOK_KEY: the API's published JWKS verifies the dispatcher's signature."""
    monkeypatch.setenv("SUPERSCALE_WEBHOOK_KEY", ed25519_pem())
    receiver = http_server()
    receiver.routes["/hook"] = Reply(200, b"ok")
    worker_settings = Settings(data_dir=tmp_path / "worker", ssrf_guard=False)
    worker_settings.data_dir.mkdir()
    store = SqliteJobStore(worker_settings.data_dir / "superscale.db")
    try:
        request_id = finished_job(store, f"{receiver.url}/hook")
        dispatcher = webhooks.WebhookDispatcher(worker_settings, store)
        assert dispatcher.run_once() == 1
        dispatcher.stop()
    finally:
        store.close()
    (seen,) = receiver.requests
    with live_server(tmp_path / "api") as server:
        published = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    assert webhooks.verify(published, seen.headers, seen.body)
    assert json.loads(seen.body)["request_id"] == request_id
    for data_dir in (tmp_path / "worker", tmp_path / "api"):
        assert not (data_dir / webhooks.KEY_FILE).exists()
    # Without the shared key, each data dir's own key would not verify: the test can fail.
    monkeypatch.delenv("SUPERSCALE_WEBHOOK_KEY")
    with live_server(tmp_path / "api") as server:
        own = httpx.get(f"{server.url}/.well-known/jwks.json").json()
    assert not webhooks.verify(own, seen.headers, seen.body)
