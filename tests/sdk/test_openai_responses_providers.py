"""The official `openai` SDK's Responses stream helpers against the two cloud paths that do
not go through Chat Completions: an OpenAI provider that speaks the Responses API (the
request passed through, its events forwarded) and an Anthropic provider (Responses
translated to Messages and back, thinking carried across turns as reasoning items)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from conftest import Recorded, http_json

RESPONSES_KEY = "sk-sdk-responses-key-0001"
ANTHROPIC_KEY = "sk-ant-sdk-key-0002"
RESPONSES_MODEL = "gpt-5-sdk"
CLAUDE_MODEL = "claude-sdk-4-20250101"
ENCRYPTED = "gAAAAABo-sdk-opaque+/=="
THINKING = "The user asks about Oslo; call the weather tool."
SIGNATURE = "EqQBCkgIARAB-sdk-signature=="
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOUD_ONLY = {"X-Auxot-Tier": "cloud"}


class Fake:
    def __init__(self, handler_factory):
        self.requests: list[Recorded] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def seen(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?")[0] == path]


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: Fake

    def log_message(self, format, *args):  # noqa: A002
        pass

    def record(self) -> Recorded:
        length = int(self.headers.get("Content-Length") or 0)
        item = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        self.rfile.read(length) if length else b"")
        self.fake.requests.append(item)
        return item

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events: list[tuple[str, dict]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, data in events:
            line = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def responses_handler(fake: Fake):
    """OpenAI's Responses API: a reasoning item, then a call of the first function tool when
    the last input mentions the weather, else a message."""

    class Handler(Base):
        def do_GET(self):  # noqa: N802
            self.record()
            self.reply(200, {"object": "list", "data": [{"id": RESPONSES_MODEL, "object": "model", "created": 1,
                                                         "owned_by": "sdk"}]})

        def do_POST(self):  # noqa: N802
            item = self.record()
            if item.path != "/v1/responses":
                self.reply(404, {"error": {"message": "no route", "type": "invalid_request_error", "code": None}})
                return
            request = item.json()
            last = json.dumps(request["input"][-1] if isinstance(request["input"], list) else request["input"])
            tools = [t for t in request.get("tools", []) if t.get("type") == "function"]
            reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ENCRYPTED}
            if tools and "weather" in last:
                answer = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": tools[0]["name"],
                          "arguments": '{"city":"Oslo"}', "status": "completed"}
            else:
                answer = {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                          "content": [{"type": "output_text", "text": "Hello from passthrough", "annotations": []}]}
            usage = {"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
                     "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 13}

            def response(status, output, usage):
                return {"id": "resp_1", "object": "response", "created_at": 1700000000, "status": status,
                        "model": request["model"], "output": output, "usage": usage, "parallel_tool_calls": True,
                        "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None}

            if not request.get("stream"):
                self.reply(200, response("completed", [reasoning, answer], usage))
                return
            events = [
                ("response.created", {"response": response("in_progress", [], None)}),
                ("response.in_progress", {"response": response("in_progress", [], None)}),
                ("response.output_item.added", {"output_index": 0, "item": {**reasoning, "encrypted_content": None}}),
                ("response.output_item.done", {"output_index": 0, "item": reasoning}),
            ]
            if answer["type"] == "function_call":
                events += [
                    ("response.output_item.added", {"output_index": 1, "item": {**answer, "arguments": "",
                                                                                "status": "in_progress"}}),
                    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1,
                                                                "delta": '{"city":'}),
                    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 1,
                                                                "delta": '"Oslo"}'}),
                    ("response.function_call_arguments.done", {"item_id": "fc_1", "output_index": 1,
                                                               "arguments": '{"city":"Oslo"}'}),
                ]
            else:
                text = "Hello from passthrough"
                part = {"type": "output_text", "text": "", "annotations": []}
                events += [
                    ("response.output_item.added", {"output_index": 1, "item": {**answer, "content": [],
                                                                                "status": "in_progress"}}),
                    ("response.content_part.added", {"item_id": "msg_1", "output_index": 1, "content_index": 0,
                                                     "part": part}),
                ]
                for word in ["Hello", " from", " passthrough"]:
                    events.append(("response.output_text.delta", {"item_id": "msg_1", "output_index": 1,
                                                                  "content_index": 0, "delta": word, "logprobs": []}))
                events += [
                    ("response.output_text.done", {"item_id": "msg_1", "output_index": 1, "content_index": 0,
                                                   "text": text, "logprobs": []}),
                    ("response.content_part.done", {"item_id": "msg_1", "output_index": 1, "content_index": 0,
                                                    "part": {**part, "text": text}}),
                ]
            events += [
                ("response.output_item.done", {"output_index": 1, "item": answer}),
                ("response.completed", {"response": response("completed", [reasoning, answer], usage)}),
            ]
            self.stream([(name, {**data, "type": name, "sequence_number": i}) for i, (name, data) in enumerate(events)])

    Handler.fake = fake
    return Handler


def anthropic_handler(fake: Fake):
    """Anthropic Messages: a thinking block when thinking is on (a thinking block sent back
    with another signature is refused), text, and a tool_use when tools are offered and the
    last message mentions the weather."""

    class Handler(Base):
        def do_GET(self):  # noqa: N802
            self.record()
            self.reply(200, {"data": [{"type": "model", "id": CLAUDE_MODEL, "display_name": "Claude SDK",
                                       "created_at": "2025-01-01T00:00:00Z"}], "has_more": False,
                             "first_id": CLAUDE_MODEL, "last_id": CLAUDE_MODEL})

        def do_POST(self):  # noqa: N802
            item = self.record()
            request = item.json()
            for message in request["messages"]:
                for block in message["content"] if isinstance(message["content"], list) else []:
                    if block.get("type") == "thinking" and (block.get("signature") != SIGNATURE
                                                            or block.get("thinking") != THINKING):
                        self.reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                    "message": "Invalid signature"}})
                        return
            thinking = (request.get("thinking") or {}).get("type") == "enabled"
            tool = None
            if request.get("tools") and "weather" in json.dumps(request["messages"][-1]) \
                    and "tool_result" not in json.dumps(request["messages"][-1]):
                tool = request["tools"][0]["name"]
            blocks = []
            if thinking:
                blocks.append(("thinking", [("thinking_delta", "thinking", THINKING[:20]),
                                            ("thinking_delta", "thinking", THINKING[20:]),
                                            ("signature_delta", "signature", SIGNATURE)]))
            blocks.append(("text", [("text_delta", "text", "Hello"), ("text_delta", "text", " from claude")]))
            if tool:
                blocks.append(("tool_use", [("input_json_delta", "partial_json", '{"city":'),
                                            ("input_json_delta", "partial_json", ' "Oslo"}')]))
            if not request.get("stream"):
                content = []
                for kind, deltas in blocks:
                    if kind == "thinking":
                        content.append({"type": "thinking", "thinking": THINKING, "signature": SIGNATURE})
                    elif kind == "text":
                        content.append({"type": "text", "text": "".join(d[2] for d in deltas)})
                    else:
                        content.append({"type": "tool_use", "id": "toolu_1", "name": tool, "input": {"city": "Oslo"}})
                self.reply(200, {"id": "msg_1", "type": "message", "role": "assistant", "model": request["model"],
                                 "content": content, "stop_reason": "tool_use" if tool else "end_turn",
                                 "usage": {"input_tokens": 11, "output_tokens": 6}})
                return
            events = [("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                     "model": request["model"], "content": [],
                                                     "usage": {"input_tokens": 11, "output_tokens": 1}}})]
            for index, (kind, deltas) in enumerate(blocks):
                start = {"type": kind}
                if kind == "tool_use":
                    start.update({"id": "toolu_1", "name": tool, "input": {}})
                else:
                    start[kind] = ""
                events.append(("content_block_start", {"index": index, "content_block": start}))
                for delta_type, key, value in deltas:
                    events.append(("content_block_delta", {"index": index, "delta": {"type": delta_type, key: value}}))
                events.append(("content_block_stop", {"index": index}))
            events += [
                ("message_delta", {"delta": {"stop_reason": "tool_use" if tool else "end_turn"},
                                   "usage": {"output_tokens": 6}}),
                ("message_stop", {}),
            ]
            self.stream([(name, {**data, "type": name}) for name, data in events])

    Handler.fake = fake
    return Handler


@pytest.fixture(scope="module")
def providers(auxot, bootstrap):
    responses_fake = Fake(responses_handler)
    anthropic_fake = Fake(anthropic_handler)
    for name, kind, fake, key, base in [
        ("sdk-responses", "openai", responses_fake, RESPONSES_KEY, f"{responses_fake.base_url}/v1"),
        ("sdk-anthropic", "anthropic", anthropic_fake, ANTHROPIC_KEY, anthropic_fake.base_url),
    ]:
        body = {"name": name, "type": kind, "api_key": key, "base_url": base}
        status, _, reply = http_json("POST", f"{auxot.url}/api/providers", body, {"Cookie": bootstrap.cookie})
        assert status == 201, f"POST /api/providers {name}: {status} {reply}"
    yield responses_fake, anthropic_fake
    for fake in (responses_fake, anthropic_fake):
        fake.server.shutdown()
        fake.server.server_close()


@pytest.fixture
def client(auxot, bootstrap):
    with openai.OpenAI(base_url=f"{auxot.url}/v1", api_key=bootstrap.client_key, timeout=15.0, max_retries=0) as c:
        yield c


def test_a_passed_through_stream_satisfies_the_sdk_stream_helper(client, providers):
    responses_fake, _ = providers
    deltas = []
    with client.responses.stream(
        model=RESPONSES_MODEL, input="Say hello", include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"}, store=False, extra_headers=CLOUD_ONLY,
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello from passthrough"
    assert final.output_text == "Hello from passthrough"
    assert final.output[0].type == "reasoning"
    assert final.output[0].encrypted_content == ENCRYPTED
    assert final.usage.output_tokens_details.reasoning_tokens == 1
    sent = responses_fake.seen("/v1/responses")[-1].json()
    assert sent["include"] == ["reasoning.encrypted_content"]
    assert sent["model"] == RESPONSES_MODEL


def test_a_passed_through_tool_turn_round_trips_the_encrypted_reasoning(client, providers):
    responses_fake, _ = providers
    with client.responses.stream(
        model=RESPONSES_MODEL, input="What is the weather in Oslo?", tools=[WEATHER_TOOL],
        include=["reasoning.encrypted_content"], store=False, extra_headers=CLOUD_ONLY,
    ) as stream:
        arguments = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    assert arguments == '{"city":"Oslo"}'
    call = final.output[1]
    assert call.type == "function_call" and call.name == "get_weather"
    follow_up = [{"role": "user", "content": "What is the weather in Oslo?"}]
    follow_up += [item.model_dump(exclude_none=True) for item in final.output]
    follow_up.append({"type": "function_call_output", "call_id": call.call_id, "output": "12C"})
    response = client.responses.create(model=RESPONSES_MODEL, input=follow_up, tools=[WEATHER_TOOL],
                                       store=False, extra_headers=CLOUD_ONLY)
    assert response.output_text == "Hello from passthrough"
    sent = responses_fake.seen("/v1/responses")[-1].json()
    assert {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ENCRYPTED} in sent["input"]


def test_an_anthropic_turn_with_thinking_satisfies_the_sdk_stream_helper(client, providers):
    _, anthropic_fake = providers
    turn = [{"role": "user", "content": "What is the weather in Oslo?"}]
    summaries = []
    with client.responses.stream(
        model=CLAUDE_MODEL, input=turn, tools=[WEATHER_TOOL], reasoning={"effort": "medium"},
        include=["reasoning.encrypted_content"], store=False, extra_headers=CLOUD_ONLY,
    ) as stream:
        for event in stream:
            if event.type == "response.reasoning_summary_text.delta":
                summaries.append(event.delta)
        final = stream.get_final_response()
    assert "".join(summaries) == THINKING
    kinds = [item.type for item in final.output]
    assert kinds == ["reasoning", "message", "function_call"], kinds
    assert final.output[1].content[0].text == "Hello from claude"
    assert json.loads(final.output[2].arguments) == {"city": "Oslo"}
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 6
    sent = anthropic_fake.seen("/v1/messages")[-1].json()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}

    turn += [item.model_dump(exclude_none=True) for item in final.output]
    turn.append({"type": "function_call_output", "call_id": final.output[2].call_id, "output": "12C"})
    response = client.responses.create(model=CLAUDE_MODEL, input=turn, tools=[WEATHER_TOOL],
                                       reasoning={"effort": "medium"}, store=False, extra_headers=CLOUD_ONLY)
    assert response.output_text == "Hello from claude"
    sent = anthropic_fake.seen("/v1/messages")[-1].json()
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE}
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"
