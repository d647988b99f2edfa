"""`client.embeddings.create` with the official `openai` SDK: on the cloud tier (the fake
provider) and on the GPU tier (a real `auxot worker gpu` whose model server is the fake),
float and base64 (the SDK's default, decoded by the SDK), and its errors."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from conftest import FAKE_EMBEDDING_MARK, FAKE_KEY, FAKE_WORKER_KEY, WORKER_NAME, http_json

MODEL = "text-embedding-3-small"
CLOUD = {"X-Auxot-Tier": "cloud"}
GPU = {"X-Auxot-Tier": "gpu"}


@pytest.fixture
def client(auxot, bootstrap):
    with openai.OpenAI(base_url=f"{auxot.url}/v1", api_key=bootstrap.client_key, timeout=15.0, max_retries=0) as c:
        yield c


def expected(count: int, dimensions: int = 3) -> list[list[float]]:
    return [([i + 0.5, FAKE_EMBEDDING_MARK, -1.0] + [0.0] * dimensions)[:dimensions] for i in range(count)]


def test_cloud_embeddings_base64_by_default(client, upstream):
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["a", "b"], extra_headers=CLOUD)
    assert raw.headers.get("x-auxot-tier") == "cloud"
    result = raw.parse()
    assert [d.embedding for d in result.data] == expected(2)
    assert result.usage.prompt_tokens == 2
    sent = upstream.seen("/v1/embeddings")[-1]
    assert sent.headers.get("authorization") == f"Bearer {FAKE_KEY}"
    # The SDK asks for base64 unless told otherwise; auxot passes the body on as it is.
    assert sent.json()["encoding_format"] == "base64"


def test_cloud_embeddings_float_and_dimensions(client, upstream):
    result = client.embeddings.create(
        model=MODEL, input="hello", encoding_format="float", dimensions=5, extra_headers=CLOUD
    )
    assert [d.embedding for d in result.data] == expected(1, 5)
    assert upstream.seen("/v1/embeddings")[-1].json()["dimensions"] == 5


def test_embeddings_errors_are_the_sdks_exceptions(client, upstream):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=[], extra_headers=CLOUD)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedder", input="x")
    assert upstream.seen("/v1/embeddings") == []


def test_gpu_worker_embeds_float_and_base64(client, upstream, gpu_worker, auxot, bootstrap):
    status, _, body = http_json("GET", f"{auxot.url}/api/workers", headers={"Cookie": bootstrap.cookie})
    assert status == 200
    worker = next(w for w in body["data"] if w["name"] == WORKER_NAME and w["status"] != "offline")
    assert worker["embedding_models"] == [MODEL], worker
    for encoding in ("float", "base64"):
        raw = client.embeddings.with_raw_response.create(
            model=MODEL, input=["x", "y", "z"], encoding_format=encoding, extra_headers=GPU
        )
        assert raw.headers.get("x-auxot-tier") == "gpu"
        assert raw.headers.get("x-auxot-route") == WORKER_NAME
        result = raw.parse()
        vectors = [d.embedding for d in result.data]
        if encoding == "base64":  # asked for explicitly, the SDK hands the strings over as they are
            vectors = [list(struct.unpack(f"<{len(base64.b64decode(v)) // 4}f", base64.b64decode(v))) for v in vectors]
        assert vectors == expected(3)
        assert result.usage.prompt_tokens == 3
        sent = upstream.seen("/v1/embeddings")[-1]
        assert sent.headers.get("authorization") == f"Bearer {FAKE_WORKER_KEY}"
        assert sent.json()["input"] == ["x", "y", "z"]
