"""The official `openai` SDK through a real GPU worker (`auxot worker gpu`) whose model
server is the fake OpenAI upstream. `X-Auxot-Tier: gpu` keeps the `fake` cloud provider,
which lists the same models, out of the way."""

from __future__ import annotations

import openai
import pytest

from conftest import FAKE_KEY, FAKE_REPLY, FAKE_WORKER_KEY, STREAM_PIECES, STREAM_USAGE, WORKER_NAME

MESSAGES = [{"role": "user", "content": "Say hello"}]
GPU_ONLY = {"X-Auxot-Tier": "gpu"}


@pytest.fixture
def client(auxot, bootstrap, gpu_worker):
    with openai.OpenAI(base_url=f"{auxot.url}/v1", api_key=bootstrap.client_key, timeout=15.0, max_retries=0) as c:
        yield c


def worker_chats(upstream, streamed: bool = True) -> list:
    """The chat requests the fake saw, each checked to come from the worker, not the provider,
    and asked the way the client asked: a stream with usage asked for, or one whole answer
    (whose `usage` is exact even on servers that ignore `include_usage`)."""
    chats = upstream.seen("/v1/chat/completions")
    for chat in chats:
        auth = chat.headers.get("authorization")
        assert auth == f"Bearer {FAKE_WORKER_KEY}", f"not sent by the worker (provider key: {auth == f'Bearer {FAKE_KEY}'})"
        sent = chat.json()
        if streamed:
            assert sent["stream"] is True, sent
            assert sent["stream_options"] == {"include_usage": True}, sent
        else:
            assert sent["stream"] is False, sent
            assert "stream_options" not in sent, sent
    return chats


def test_gpu_non_streaming_asks_the_model_server_whole(client, upstream, bootstrap):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers=GPU_ONLY
    )
    assert raw.headers.get("x-auxot-tier") == "gpu"
    assert raw.headers.get("x-auxot-route") == WORKER_NAME

    completion = raw.parse()
    assert completion.choices[0].message.content == FAKE_REPLY
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None, completion
    # The fake's whole answer reports 5 + 3.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 3), completion.usage
    assert completion.usage.total_tokens == 8, completion.usage

    chats = worker_chats(upstream, streamed=False)
    assert len(chats) == 1
    sent = chats[0].json()
    assert sent["model"] == "gpt-4o-mini" and sent["messages"] == MESSAGES
    assert bootstrap.client_key.encode() not in chats[0].body


def test_gpu_streaming_without_usage_drops_the_usage_chunk(client, upstream):
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=GPU_ONLY
    )
    pieces, finish_reasons, usages = [], [], []
    for chunk in stream:
        # The common client idiom: would raise IndexError on a usage-only chunk.
        content = chunk.choices[0].delta.content
        if content:
            pieces.append(content)
        if chunk.choices[0].finish_reason:
            finish_reasons.append(chunk.choices[0].finish_reason)
        if chunk.usage is not None:
            usages.append(chunk.usage)

    assert pieces == STREAM_PIECES
    assert finish_reasons == ["stop"]
    assert usages == []
    assert stream.response.headers.get("x-auxot-tier") == "gpu"
    assert stream.response.headers.get("x-auxot-route") == WORKER_NAME
    assert len(worker_chats(upstream)) == 1


def test_gpu_streaming_with_include_usage_ends_with_usage_chunk(client, upstream):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=GPU_ONLY,
    )
    chunks = list(stream)
    assert chunks, "empty stream"

    last = chunks[-1]
    assert last.choices == [], last
    assert last.usage is not None, last
    assert last.usage.total_tokens == STREAM_USAGE["total_tokens"], last.usage
    assert last.usage.prompt_tokens == STREAM_USAGE["prompt_tokens"], last.usage
    assert last.usage.completion_tokens == STREAM_USAGE["completion_tokens"], last.usage

    pieces = [c.choices[0].delta.content for c in chunks[:-1] if c.choices and c.choices[0].delta.content]
    assert pieces == STREAM_PIECES
    assert all(c.choices for c in chunks[:-1]), "a usage-only chunk before the last one"
    assert len(worker_chats(upstream)) == 1


def test_gpu_tier_unknown_model_is_not_found(client, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, extra_headers=GPU_ONLY)
    assert caught.value.status_code == 404
    assert upstream.seen("/v1/chat/completions") == []
