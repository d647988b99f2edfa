"""The official `anthropic` SDK against a real auxot whose `fake` provider speaks OpenAI:
auxot translates `POST /v1/messages` into a Chat Completions request and the answer back."""

from __future__ import annotations

import json
import os

import anthropic
import pytest

from conftest import (
    FAKE_KEY,
    FAKE_REPLY,
    STREAM_PIECES,
    STREAM_USAGE,
    TOOL_ARGS,
    TOOL_CALL_ID,
    http_json,
)

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello"}]
WEATHER = [{"role": "user", "content": "What is the weather in Oslo?"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(autouse=True)
def _no_anthropic_env(monkeypatch):
    """ANTHROPIC_CUSTOM_HEADERS and friends from the environment must not reach auxot."""
    for name in list(os.environ):
        if name.startswith("ANTHROPIC_"):
            monkeypatch.delenv(name)


def make_client(auxot, key: str, *, path: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{auxot.url}{path}", api_key=key, max_retries=0, timeout=15.0)


@pytest.fixture
def client(auxot, bootstrap):
    with make_client(auxot, bootstrap.client_key) as c:
        yield c


def sent_chats(upstream, client_key: str) -> list[dict]:
    """The OpenAI chat requests the fake saw, each checked to carry the provider key only."""
    chats = upstream.seen("/v1/chat/completions")
    for chat in chats:
        assert chat.headers.get("authorization") == f"Bearer {FAKE_KEY}", chat.headers
        assert client_key not in json.dumps(chat.headers), "client key leaked in the upstream headers"
        assert client_key.encode() not in chat.body, "client key leaked in the upstream body"
    return [chat.json() for chat in chats]


def only_block(message, kind: str):
    blocks = [b for b in message.content if b.type == kind]
    assert len(blocks) == 1, message.content
    return blocks[0]


# --------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------


def test_message_non_streaming(client, upstream, bootstrap):
    message = client.messages.create(model=MODEL, max_tokens=64, system="Be brief.", messages=MESSAGES)

    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == FAKE_REPLY
    assert message.stop_reason == "end_turn"
    assert isinstance(message.usage.input_tokens, int) and isinstance(message.usage.output_tokens, int)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 3), message.usage

    chats = sent_chats(upstream, bootstrap.client_key)
    assert len(chats) == 1
    sent = chats[0]
    assert sent["model"] == MODEL
    assert sent["max_tokens"] == 64
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1:] == MESSAGES
    assert not sent.get("stream"), sent


def test_message_streaming(client, upstream, bootstrap):
    with client.messages.stream(model=MODEL, max_tokens=64, system="Be brief.", messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert pieces == STREAM_PIECES
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "".join(STREAM_PIECES)
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    # OpenAI reports usage only at the end: the SDK takes it from `message_delta`.
    assert final.usage.input_tokens == STREAM_USAGE["prompt_tokens"], final.usage
    assert final.usage.output_tokens == STREAM_USAGE["completion_tokens"], final.usage

    chats = sent_chats(upstream, bootstrap.client_key)
    assert len(chats) == 1
    sent = chats[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}, sent
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_message_streaming_event_order(client, upstream):
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        kinds = [event.type for event in stream]
    # The SDK adds its own `text` events after each text delta; keep the wire events.
    wire = [k for k in kinds if k != "text"]
    assert wire[0] == "message_start" and wire[1] == "content_block_start", wire
    assert wire[-3:] == ["content_block_stop", "message_delta", "message_stop"], wire
    assert wire.count("content_block_delta") == len(STREAM_PIECES), wire


def test_route_and_tier_headers(client, upstream):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=MESSAGES)
    assert raw.headers.get("x-auxot-route") == "fake"
    assert raw.headers.get("x-auxot-tier") == "cloud"
    assert raw.parse().content[0].text == FAKE_REPLY


def test_alias_base_url(auxot, bootstrap, upstream):
    with make_client(auxot, bootstrap.client_key, path="/api/anthropic") as alias:
        message = alias.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        assert message.content[0].text == FAKE_REPLY
        with alias.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
            assert list(stream.text_stream) == STREAM_PIECES
        assert MODEL in {m.id for m in alias.models.list()}
        assert alias.messages.count_tokens(model=MODEL, messages=MESSAGES).input_tokens > 0
    assert len(sent_chats(upstream, bootstrap.client_key)) == 2


# --------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------


def test_tool_use_non_streaming(client, upstream, bootstrap):
    message = client.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER_TOOL], messages=WEATHER)

    assert message.stop_reason == "tool_use"
    tool_use = only_block(message, "tool_use")
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"city": "Oslo"}
    assert tool_use.id == TOOL_CALL_ID, tool_use  # the upstream's call id, kept as is

    chats = sent_chats(upstream, bootstrap.client_key)
    assert len(chats) == 1
    sent = chats[0]
    assert sent["messages"] == WEATHER
    assert [t["type"] for t in sent["tools"]] == ["function"], sent["tools"]
    function = sent["tools"][0]["function"]
    assert function["name"] == "get_weather"
    assert function["description"] == WEATHER_TOOL["description"]
    assert function["parameters"] == WEATHER_TOOL["input_schema"]


def test_tool_use_streaming(client, upstream, bootstrap):
    with client.messages.stream(model=MODEL, max_tokens=64, tools=[WEATHER_TOOL], messages=WEATHER) as stream:
        events = list(stream)
        final = stream.get_final_message()

    partials = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert "".join(partials) == TOOL_ARGS, partials
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [b.type for b in starts if b.type == "tool_use"] == ["tool_use"], starts

    assert final.stop_reason == "tool_use"
    tool_use = only_block(final, "tool_use")
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"city": "Oslo"}
    assert tool_use.id == TOOL_CALL_ID, tool_use

    chats = sent_chats(upstream, bootstrap.client_key)
    assert len(chats) == 1 and chats[0]["stream"] is True and chats[0]["tools"], chats


def test_tool_result_follow_up(client, upstream, bootstrap):
    first = client.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER_TOOL], messages=WEATHER)
    tool_use = only_block(first, "tool_use")
    upstream.clear()

    conversation = WEATHER + [
        {"role": "assistant", "content": first.content},  # the SDK's own blocks, as its docs show
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny, 21 C"}],
        },
    ]
    reply = client.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER_TOOL], messages=conversation)

    assert reply.stop_reason == "end_turn"
    assert reply.content[0].text == FAKE_REPLY

    chats = sent_chats(upstream, bootstrap.client_key)
    assert len(chats) == 1
    sent = chats[0]["messages"]
    assert sent[0] == WEATHER[0], sent
    assistant = sent[1]
    assert assistant["role"] == "assistant", sent
    calls = assistant["tool_calls"]
    assert len(calls) == 1, assistant
    assert calls[0]["id"] == tool_use.id
    assert calls[0]["type"] == "function"
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    tool = sent[2]
    assert tool["role"] == "tool" and tool["tool_call_id"] == tool_use.id, sent
    content = tool["content"]
    text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
    assert text == "Sunny, 21 C", tool
    assert len(sent) == 3, sent


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_wrong_auxot_key_is_authentication_error(auxot, upstream):
    with make_client(auxot, "aux_wrong_key_0000000000000000") as bad:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)
        assert caught.value.status_code == 401
        assert caught.value.body["type"] == "error", caught.value.body
        assert caught.value.body["error"]["type"] == "authentication_error", caught.value.body
        with pytest.raises(anthropic.AuthenticationError):
            bad.models.list()
        with pytest.raises(anthropic.AuthenticationError):
            bad.messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert upstream.seen() == []


def test_unknown_model_is_not_found(client, upstream):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=64, messages=MESSAGES)
    assert caught.value.status_code == 404
    assert caught.value.body["type"] == "error", caught.value.body
    assert caught.value.body["error"]["type"] == "not_found_error", caught.value.body
    assert upstream.seen() == []


def test_missing_max_tokens_is_invalid_request(auxot, bootstrap, upstream):
    # The SDK will not send a request without max_tokens: go around it.
    status, _, body = http_json(
        "POST",
        f"{auxot.url}/v1/messages",
        {"model": MODEL, "messages": MESSAGES},
        {"x-api-key": bootstrap.client_key, "anthropic-version": "2023-06-01"},
    )
    assert status == 400, body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "invalid_request_error", body
    assert "max_tokens" in body["error"]["message"], body
    assert upstream.seen() == []


# --------------------------------------------------------------------------------------
# Models and token counting
# --------------------------------------------------------------------------------------


def test_models_list(client, upstream):
    models = list(client.models.list())
    ids = {m.id for m in models}
    assert {MODEL, "fake/gpt-4o-mini"} <= ids, ids
    for model in models:
        assert model.type == "model", model
        assert model.display_name, model


def test_count_tokens(client, upstream):
    short = client.messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert isinstance(short.input_tokens, int) and short.input_tokens > 0, short

    longer = client.messages.count_tokens(
        model=MODEL,
        system="Be brief.",
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Say hello " * 50}],
    )
    assert longer.input_tokens > short.input_tokens, (short, longer)
    assert upstream.seen() == []  # an estimate made by auxot, nothing sent upstream
