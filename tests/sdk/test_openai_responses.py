"""The official `openai` SDK's Responses API (`client.responses`, and its stream helper,
which checks the event sequence as it accumulates) against auxot: translated to Chat
Completions for the fake OpenAI provider and for a real GPU worker."""

from __future__ import annotations

import openai
import pytest

from conftest import FAKE_REPLY, STREAM_PIECES, STREAM_USAGE, TOOL_ARGS, TOOL_CALL_ID

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
GPU_ONLY = {"X-Auxot-Tier": "gpu"}
CLOUD_ONLY = {"X-Auxot-Tier": "cloud"}


@pytest.fixture
def client(auxot, bootstrap):
    with openai.OpenAI(base_url=f"{auxot.url}/v1", api_key=bootstrap.client_key, timeout=15.0, max_retries=0) as c:
        yield c


def test_responses_create_answers_a_response_object(client, upstream):
    response = client.responses.create(model="gpt-4o-mini", input="Say hello", store=False, extra_headers=CLOUD_ONLY)
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == FAKE_REPLY
    assert response.usage is not None and response.usage.total_tokens == 8
    sent = upstream.seen("/v1/chat/completions")[-1].json()
    assert sent["messages"] == [{"role": "user", "content": "Say hello"}]


def test_responses_stream_helper_accumulates_text(client, upstream):
    deltas = []
    with client.responses.stream(
        model="gpt-4o-mini",
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
        extra_headers=CLOUD_ONLY,
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == "".join(STREAM_PIECES)
    assert final.output_text == "".join(STREAM_PIECES)
    assert final.status == "completed"
    assert final.usage.input_tokens == STREAM_USAGE["prompt_tokens"]
    assert final.usage.output_tokens == STREAM_USAGE["completion_tokens"]
    sent = upstream.seen("/v1/chat/completions")[-1].json()
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_responses_stream_helper_accumulates_a_function_call(client, upstream):
    with client.responses.stream(
        model="gpt-4o-mini",
        input="What is the weather in Oslo?",
        tools=[WEATHER_TOOL],
        extra_headers=CLOUD_ONLY,
    ) as stream:
        arguments = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    assert arguments == TOOL_ARGS
    call = final.output[0]
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert call.call_id == TOOL_CALL_ID
    assert call.arguments == TOOL_ARGS


def test_responses_custom_tool_calls_come_back_as_custom_tool_call_items(client, upstream):
    response = client.responses.create(
        model="gpt-4o-mini",
        input="What is the weather in Oslo?",
        tools=[{"type": "custom", "name": "apply_patch", "description": "Applies a patch"}],
        extra_headers=CLOUD_ONLY,
    )
    call = response.output[0]
    assert call.type == "custom_tool_call"
    assert call.name == "apply_patch"
    sent = upstream.seen("/v1/chat/completions")[-1].json()
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["input"]


def test_responses_function_call_outputs_continue_the_turn(client, upstream):
    response = client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            {"type": "function_call", "call_id": TOOL_CALL_ID, "name": "get_weather", "arguments": TOOL_ARGS},
            {"type": "function_call_output", "call_id": TOOL_CALL_ID, "output": "sunny"},
        ],
        tools=[WEATHER_TOOL],
        extra_headers=CLOUD_ONLY,
    )
    assert response.output_text == FAKE_REPLY
    sent = upstream.seen("/v1/chat/completions")[-1].json()
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": TOOL_CALL_ID, "content": "sunny"}


def test_responses_previous_response_id_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_123")
    assert "previous_response_id" in str(caught.value)


def test_responses_stream_through_a_gpu_worker(client, gpu_worker, upstream):
    with client.responses.stream(
        model="gpt-4o-mini", input="What is the weather in Oslo?", tools=[WEATHER_TOOL], extra_headers=GPU_ONLY
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_response()
    assert events[0] == "response.created"
    assert events[-1] == "response.completed"
    assert final.output[0].type == "function_call"
    assert final.output[0].arguments == TOOL_ARGS
