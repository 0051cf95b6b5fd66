"""One `data:` URI rule (`superscale.datauri`) for its three callers: the API at submit, the
worker decoding an input, and the client reading an inline output. Each URI below gets the same
answer from all three."""

from __future__ import annotations

import base64

import pytest

from superscale.client.results import Image as OutputImage
from superscale.worker.fetch import InputError, decode_data_uri

from .server import LiveServer

SUBMIT = "/queue/fal-ai/aura-sr"
PAYLOAD = bytes(range(256)) * 4
ENCODED = base64.b64encode(PAYLOAD).decode()

ACCEPTED = {
    "plain": f"data:image/png;base64,{ENCODED}",
    "line-wrapped": "data:image/png;base64,"
    + "\n".join(ENCODED[i : i + 76] for i in range(0, len(ENCODED), 76)),
    "unpadded URL-safe": "data:;base64," + base64.urlsafe_b64encode(PAYLOAD).decode().rstrip("="),
    "upper-case scheme": f"DATA:image/png;BASE64,{ENCODED}",
}
REFUSED = {
    "percent-encoded, not base64": "data:text/plain,a%20b",
    "raw bytes": "data:image/png,rawbytes",
    "not base64": "data:image/png;base64,@@not*base64@@",
    "no comma": "data:image/png;base64",
    "no data": "data:image/png;base64,",
    "percent-escaped": "data:image/png;base64," + ENCODED.replace("+", "%2B").replace("/", "%2F"),
    "mixed alphabets": "data:;base64,ab+_",
    "padding in the middle": "data:;base64,AA=A",
}


def _client_reads(uri: str) -> bytes:
    image = OutputImage(
        url=uri, content_type="image/png", file_name="x.png", file_size=0, width=1, height=1
    )
    return image.read()


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_by_all_three(name: str, server: LiveServer) -> None:
    uri = ACCEPTED[name]
    with server.client() as c:
        assert c.post(SUBMIT, json={"image_url": uri}).status_code == 200
    assert decode_data_uri(uri, 10_000) == PAYLOAD
    assert _client_reads(uri) == PAYLOAD


@pytest.mark.parametrize("name", REFUSED)
def test_refused_by_all_three(name: str, server: LiveServer) -> None:
    uri = REFUSED[name]
    with server.client() as c:
        r = c.post(SUBMIT, json={"image_url": uri})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "image_url"]
    with pytest.raises(InputError) as refused:
        decode_data_uri(uri, 10_000)
    message = refused.value.message
    assert message.removeprefix("image_url is a ") in r.json()["detail"][0]["msg"]
    with pytest.raises(ValueError, match="data: URI"):
        _client_reads(uri)


def test_size_limit_is_the_same_rule(server: LiveServer) -> None:
    limit = server.settings.max_input_bytes
    over = "data:image/png;base64," + base64.b64encode(b"\0" * (limit + 1)).decode()
    with server.client() as c:
        r = c.post(SUBMIT, json={"image_url": over})
    # The API's own body cap may answer first (413); either way it is refused at submit.
    assert r.status_code in (413, 422)
    with pytest.raises(InputError, match="larger than the limit"):
        decode_data_uri(over, limit)


def test_the_published_pattern_is_the_rule() -> None:
    """The OpenAPI document states the rule as a regular expression; `decode` checks it
    without one. They must agree, on tricky cases and on random ones."""
    import random
    import re

    from superscale import datauri

    pattern = re.compile(datauri.PATTERN)

    def accepted(uri: str) -> bool:
        try:
            datauri.decode(uri)
        except datauri.DataUriError:
            return False
        return True

    cases = [*ACCEPTED.values(), *REFUSED.values(), "data:;base64,AAA=", "data:;base64,AAA=="]
    cases += ["data:;base64,AA=", "data:;base64,AAAA=", "data:;base64, A A\nA=", "DATA:;BASE64,-_"]
    rng = random.Random(0)
    cases += [
        "data:;base64," + "".join(rng.choice("AB+/-_= \n%,") for _ in range(rng.randint(0, 9)))
        for _ in range(5000)
    ]
    for uri in cases:
        assert bool(pattern.fullmatch(uri)) == accepted(uri), uri
