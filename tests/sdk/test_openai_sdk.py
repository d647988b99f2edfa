"""The official `openai` SDK against a real auxot routing to a fake OpenAI upstream."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import FAKE_KEY, FAKE_REPLY, STREAM_PIECES

MESSAGES = [{"role": "user", "content": "Say hello"}]


def make_client(auxot, key: str, *, path: str = "/v1", **kwargs) -> openai.OpenAI:
    kwargs.setdefault("timeout", 15.0)
    return openai.OpenAI(base_url=f"{auxot.url}{path}", api_key=key, **kwargs)


@pytest.fixture
def client(auxot, bootstrap):
    with make_client(auxot, bootstrap.client_key) as c:
        yield c


def assert_upstream_auth_only(upstream, client_key: str) -> None:
    """Every request the upstream saw carried the provider key and nothing of the client's."""
    seen = upstream.seen()
    assert seen, "the upstream saw no request"
    for request in seen:
        assert request.headers.get("authorization") == f"Bearer {FAKE_KEY}", request.headers
        assert client_key not in json.dumps(request.headers), f"client key leaked in headers of {request.path}"
        assert client_key.encode() not in request.body, f"client key leaked in body of {request.path}"


def test_chat_non_streaming(client, upstream, bootstrap):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.choices[0].message.content == FAKE_REPLY
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 8

    chats = upstream.seen("/v1/chat/completions")
    assert len(chats) == 1
    sent = chats[0].json()
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == MESSAGES
    assert_upstream_auth_only(upstream, bootstrap.client_key)


def test_chat_streaming(client, upstream, bootstrap):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    pieces, finish_reasons = [], []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

    assert pieces == STREAM_PIECES
    assert finish_reasons == ["stop"]
    chats = upstream.seen("/v1/chat/completions")
    assert len(chats) == 1 and chats[0].json()["stream"] is True
    assert_upstream_auth_only(upstream, bootstrap.client_key)


def test_models_list(client):
    ids = {model.id for model in client.models.list()}
    assert {"gpt-4o-mini", "fake/gpt-4o-mini", "fail-500", "fake/fail-500"} <= ids, ids


def test_provider_prefixed_model_reaches_upstream_unprefixed(client, upstream):
    completion = client.chat.completions.create(model="fake/gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == FAKE_REPLY
    chats = upstream.seen("/v1/chat/completions")
    assert len(chats) == 1 and chats[0].json()["model"] == "gpt-4o-mini"


def test_unknown_model_is_not_found(client, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert upstream.seen("/v1/chat/completions") == []


def test_wrong_auxot_key_is_authentication_error(auxot, upstream):
    with make_client(auxot, "aux_wrong_key_0000000000000000") as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            bad.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert caught.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    assert upstream.seen() == []


def test_upstream_500_is_internal_server_error(auxot, bootstrap, upstream):
    with make_client(auxot, bootstrap.client_key, max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as caught:
            c.chat.completions.create(model="fail-500", messages=MESSAGES)
    assert caught.value.status_code == 500
    assert len(upstream.seen("/v1/chat/completions")) == 1


def test_route_and_tier_headers(client, upstream):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers.get("x-auxot-route") == "fake"
    assert raw.headers.get("x-auxot-tier") == "cloud"
    assert raw.parse().choices[0].message.content == FAKE_REPLY


def test_alias_base_url(auxot, bootstrap, upstream):
    with make_client(auxot, bootstrap.client_key, path="/api/openai/v1") as alias:
        completion = alias.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert completion.choices[0].message.content == FAKE_REPLY

        pieces = [
            choice.delta.content
            for chunk in alias.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
            for choice in chunk.choices
            if choice.delta.content
        ]
        assert pieces == STREAM_PIECES

        ids = {model.id for model in alias.models.list()}
        assert {"gpt-4o-mini", "fake/gpt-4o-mini"} <= ids, ids
    assert len(upstream.seen("/v1/chat/completions")) == 2
    assert_upstream_auth_only(upstream, bootstrap.client_key)
