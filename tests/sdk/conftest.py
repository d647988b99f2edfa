"""Fixtures for the OpenAI-SDK smoke suite: a fake OpenAI upstream, a real auxot process,
and an admin bootstrap done through auxot's own HTTP API (stdlib only)."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

FAKE_KEY = "sk-fake-valid-key-000000"
# The GPU worker's key for the same fake: tells its requests apart from the provider's.
FAKE_WORKER_KEY = "sk-fake-worker-key-000000"
FAKE_MODELS = ["gpt-4o-mini", "fail-500", "text-embedding-3-small"]
# Embeddings (models whose name holds "embedding"; others answer 400 as vLLM does for a chat
# model): input i gets [i + 0.5, FAKE_EMBEDDING_MARK, -1.0], `dimensions` long, base64
# (little-endian f32) when asked; usage is one prompt token per input.
FAKE_EMBEDDING_MARK = 42.0
FAKE_REPLY = "Hello from fake"
STREAM_PIECES = ["Hello", " from", " fake", " stream"]
# Sent in a usage-only chunk (`choices: []`) only when stream_options.include_usage is true.
# Differs from the non-streaming usage (8), so a folded total shows where it came from.
STREAM_USAGE = {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
# A request with `tools` whose last message is a user turn mentioning "weather" is answered
# with a call of its first tool; these arguments arrive in TOOL_ARG_PIECES when streamed.
TOOL_CALL_ID = "call_1"
TOOL_ARGS = '{"city":"Oslo"}'
TOOL_ARG_PIECES = ['{"city"', ':"Os', 'lo"}']
assert "".join(TOOL_ARG_PIECES) == TOOL_ARGS
WORKER_NAME = "sdk-gpu"
WORKER_READY_TIMEOUT_S = 20.0
ADMIN = {"username": "admin", "password": "password123"}
START_TIMEOUT_S = 30.0
LISTEN_RE = re.compile(r"auxot listening on (http://127\.0\.0\.1:\d+)")

# Everything is on loopback: never send it through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _have = os.environ.get(_var, "")
    if "127.0.0.1" not in _have:
        os.environ[_var] = ",".join(p for p in ("127.0.0.1", "localhost", _have) if p)


# --------------------------------------------------------------------------------------
# Fake OpenAI upstream
# --------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None


@dataclass
class FakeUpstream:
    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def record(self, item: Recorded) -> None:
        with self.lock:
            self.requests.append(item)

    def seen(self, path: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


def _openai_error(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_to_call(request: dict) -> str | None:
    """The name of the tool to call: the first one offered, when the request has `tools` and
    its last message is a user turn mentioning "weather". A conversation that already ends
    with a `tool` result gets a plain answer."""
    tools = request.get("tools")
    messages = request.get("messages")
    if not isinstance(tools, list) or not tools or not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user" or "weather" not in _message_text(last).lower():
        return None
    function = tools[0].get("function") if isinstance(tools[0], dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


def _make_handler(fake: FakeUpstream):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - keep pytest output quiet
            pass

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _record(self) -> Recorded:
            item = Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self._read_body(),
            )
            fake.record(item)
            return item

        def _send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self, item: Recorded) -> bool:
            if item.headers.get("authorization") in (f"Bearer {FAKE_KEY}", f"Bearer {FAKE_WORKER_KEY}"):
                return True
            self._send_json(401, _openai_error("Incorrect API key", "invalid_request_error", "invalid_api_key"))
            return False

        def do_GET(self):  # noqa: N802
            item = self._record()
            if item.path != "/v1/models":
                self._send_json(404, _openai_error(f"no route {item.path}", "invalid_request_error", None))
                return
            if not self._authorized(item):
                return
            data = [{"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in FAKE_MODELS]
            self._send_json(200, {"object": "list", "data": data})

        def do_POST(self):  # noqa: N802
            item = self._record()
            if item.path == "/v1/embeddings":
                self._embeddings(item)
                return
            if item.path != "/v1/chat/completions":
                self._send_json(404, _openai_error(f"no route {item.path}", "invalid_request_error", None))
                return
            if not self._authorized(item):
                return
            try:
                request = item.json() or {}
            except ValueError:
                self._send_json(400, _openai_error("body is not JSON", "invalid_request_error", None))
                return
            model = request.get("model", "")
            if model == "fail-500":
                self._send_json(500, _openai_error("The server had an error", "server_error", None))
                return
            created = int(time.time())
            completion_id = "chatcmpl-fake-" + secrets.token_hex(4)
            tool = _tool_to_call(request)
            if request.get("stream") is True:
                options = request.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                self._stream(completion_id, created, model, include_usage, tool)
                return
            if tool is not None:
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": TOOL_CALL_ID, "type": "function", "function": {"name": tool, "arguments": TOOL_ARGS}}
                    ],
                }
                finish_reason = "tool_calls"
            else:
                message, finish_reason = {"role": "assistant", "content": FAKE_REPLY}, "stop"
            self._send_json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                },
            )

        def _embeddings(self, item: Recorded) -> None:
            if not self._authorized(item):
                return
            request = item.json() or {}
            model = request.get("model", "")
            if "embedding" not in model:
                self._send_json(400, _openai_error(f"{model} does not support embeddings", "invalid_request_error", None))
                return
            inputs = request.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            dimensions = request.get("dimensions") or 3
            data = []
            for i in range(count):
                vector = ([i + 0.5, FAKE_EMBEDDING_MARK, -1.0] + [0.0] * dimensions)[:dimensions]
                if request.get("encoding_format") == "base64":
                    embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                else:
                    embedding = vector
                data.append({"object": "embedding", "index": i, "embedding": embedding})
            usage = {"prompt_tokens": count, "total_tokens": count}
            self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

        def _stream(
            self, completion_id: str, created: int, model: str, include_usage: bool, tool: str | None = None
        ) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def chunk(delta: dict, finish_reason):
                return {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }

            if tool is not None:  # like OpenAI: id and name first, then the arguments in pieces
                call = {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": tool, "arguments": ""}}
                events = [chunk({"role": "assistant", "content": None, "tool_calls": [call]}, None)]
                events += [
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
                    for piece in TOOL_ARG_PIECES
                ]
                events.append(chunk({}, "tool_calls"))
            else:
                events = [chunk({"role": "assistant", "content": ""}, None)]
                events += [chunk({"content": piece}, None) for piece in STREAM_PIECES]
                events.append(chunk({}, "stop"))
            if include_usage:  # like OpenAI: one last chunk, no choices, before [DONE]
                events.append(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": dict(STREAM_USAGE),
                    }
                )
            lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
            for line in lines:
                data = line.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


@pytest.fixture(scope="session")
def fake_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # handler set below
    server.daemon_threads = True
    fake = FakeUpstream(server=server)
    server.RequestHandlerClass = _make_handler(fake)
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def upstream(fake_upstream, bootstrap):
    """The fake upstream with its request log emptied for this test."""
    fake_upstream.clear()
    return fake_upstream


# --------------------------------------------------------------------------------------
# The real auxot process
# --------------------------------------------------------------------------------------


@dataclass
class Auxot:
    url: str
    process: subprocess.Popen
    log: deque

    def log_tail(self, n: int = 60) -> str:
        return "".join(list(self.log)[-n:])


_AUXOT: Auxot | None = None
_WORKER: "GpuWorker | None" = None


def _auxot_bin() -> Path:
    raw = os.environ.get("AUXOT_BIN", "target/debug/auxot")
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def auxot(tmp_path_factory):
    global _AUXOT
    binary = _auxot_bin()
    if not binary.is_file():
        pytest.fail(f"auxot binary not found at {binary} (set AUXOT_BIN or run cargo build)")
    data_dir = tmp_path_factory.mktemp("auxot-data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUXOT_")}
    env["AUXOT_SECRET_KEY"] = secrets.token_hex(32)
    env["RUST_LOG"] = "info"
    process = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        bufsize=1,
    )
    log: deque = deque(maxlen=2000)
    found: dict[str, str] = {}
    ready = threading.Event()

    def drain():
        # One reader for the whole life of the process: finds the listening line, then
        # keeps the pipe empty so auxot never blocks on a full stderr.
        for line in process.stderr:
            log.append(line)
            if not ready.is_set():
                match = LISTEN_RE.search(line)
                if match:
                    found["url"] = match.group(1)
                    ready.set()
        ready.set()  # EOF: the process is gone

    reader = threading.Thread(target=drain, name="auxot-stderr", daemon=True)
    reader.start()
    if not ready.wait(START_TIMEOUT_S) or "url" not in found:
        try:  # stderr closed: the process is exiting; give it a moment to be reaped
            code = process.wait(timeout=2) if ready.is_set() else None
        except subprocess.TimeoutExpired:
            code = None
        _stop(process)
        reader.join(timeout=5)
        why = f"exited with code {code}" if code is not None else f"timed out after {START_TIMEOUT_S:.0f}s"
        pytest.fail(f"auxot did not log its listening address ({why}); stderr:\n{''.join(log)}")
    _AUXOT = Auxot(url=found["url"], process=process, log=log)
    try:
        yield _AUXOT
    finally:
        _AUXOT = None
        _stop(process)
        reader.join(timeout=5)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _AUXOT is not None:
        report.sections.append(("auxot stderr (tail)", _AUXOT.log_tail()))
    if report.failed and _WORKER is not None:
        report.sections.append(("gpu worker stderr (tail)", _WORKER.log_tail()))


# --------------------------------------------------------------------------------------
# Admin bootstrap over HTTP
# --------------------------------------------------------------------------------------


def http_json(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON or None) without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            status, reply_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, reply_headers, raw = e.code, e.headers, e.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, reply_headers, parsed


@dataclass
class Bootstrap:
    client_key: str
    cookie: str
    provider: dict


@pytest.fixture(scope="session")
def bootstrap(auxot, fake_upstream) -> Bootstrap:
    base = auxot.url

    status, _, body = http_json("POST", f"{base}/api/setup", ADMIN)
    assert status == 201, f"POST /api/setup: {status} {body}"

    status, headers, body = http_json("POST", f"{base}/api/login", ADMIN)
    assert status == 200, f"POST /api/login: {status} {body}"
    cookies = headers.get_all("Set-Cookie") or []
    session = next((c.split(";", 1)[0] for c in cookies if c.startswith("auxot_session=")), None)
    assert session and session != "auxot_session=", f"no auxot_session cookie in {cookies}"

    status, _, body = http_json("POST", f"{base}/api/api-keys", {"name": "sdk", "role": "client"}, {"Cookie": session})
    assert status == 201, f"POST /api/api-keys: {status} {body}"
    key = body.get("key", "")
    assert key.startswith("aux_"), f"client key does not start with aux_: {body}"

    provider = {
        "name": "fake",
        "type": "openai",
        "api_key": FAKE_KEY,
        "base_url": fake_upstream.base_url,
    }
    status, _, body = http_json("POST", f"{base}/api/providers", provider, {"Cookie": session})
    assert status == 201, f"POST /api/providers: {status} {body}"
    assert FAKE_KEY not in json.dumps(body), "the provider view echoes the upstream key"

    return Bootstrap(client_key=key, cookie=session, provider=body)


# --------------------------------------------------------------------------------------
# A real GPU worker (`auxot worker gpu`) serving the fake upstream
# --------------------------------------------------------------------------------------


@dataclass
class GpuWorker:
    name: str
    process: subprocess.Popen
    log: deque

    def log_tail(self, n: int = 60) -> str:
        return "".join(list(self.log)[-n:])


def _worker_entry(auxot: Auxot, cookie: str, name: str) -> dict | None:
    status, _, body = http_json("GET", f"{auxot.url}/api/workers", headers={"Cookie": cookie})
    assert status == 200, f"GET /api/workers: {status} {body}"
    return next((w for w in body.get("data", []) if w.get("name") == name), None)


@pytest.fixture(scope="module")
def gpu_worker(auxot, bootstrap, fake_upstream):
    """`auxot worker gpu` connected to auxot and serving the fake upstream with FAKE_WORKER_KEY.

    Module-scoped on purpose: the GPU tier comes first in auxot's default order, so while
    this worker is live every request for a fake model would go to it; the cloud tests
    elsewhere expect the `fake` provider. Stopped (and seen offline) when the module ends."""
    global _WORKER
    status, _, body = http_json(
        "POST", f"{auxot.url}/api/worker-tokens", {"name": WORKER_NAME, "kind": "gpu"}, {"Cookie": bootstrap.cookie}
    )
    assert status == 201, f"POST /api/worker-tokens: {status} {body}"
    token = body.get("token") if isinstance(body, dict) else None
    assert token, f"no token in {body}"
    # The fake cloud provider lists the same models: the token must allow them on the worker.
    status, _, patched = http_json(
        "PATCH",
        f"{auxot.url}/api/worker-tokens/{body['id']}",
        {"allowed_models": ["*"]},
        {"Cookie": bootstrap.cookie},
    )
    assert status == 200, f"PATCH /api/worker-tokens: {status} {patched}"

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUXOT_")}
    env["AUXOT_WORKER_TOKEN"] = token
    env["RUST_LOG"] = "info"
    # --upstream-key on the command line is fine here: a throwaway fake key.
    argv = [
        str(_auxot_bin()), "worker", "gpu",
        "--server", auxot.url,
        "--upstream", fake_upstream.base_url,
        "--upstream-key", FAKE_WORKER_KEY,
        "--slots", "2",
        "--name", WORKER_NAME,
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        bufsize=1,
    )
    log: deque = deque(maxlen=2000)

    def drain():
        for line in process.stderr:
            log.append(line)

    reader = threading.Thread(target=drain, name="gpu-worker-stderr", daemon=True)
    reader.start()
    worker = GpuWorker(name=WORKER_NAME, process=process, log=log)

    def stop():
        _stop(process)
        reader.join(timeout=5)

    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    entry, online = None, False
    while not online and process.poll() is None and time.monotonic() < deadline:
        entry = _worker_entry(auxot, bootstrap.cookie, WORKER_NAME)
        online = entry is not None and entry.get("status") != "offline"
        if not online:
            time.sleep(0.1)
    if not online or process.poll() is not None:
        code = process.poll()
        stop()
        why = f"exited with code {code}" if code is not None else f"not listed within {WORKER_READY_TIMEOUT_S:.0f}s"
        pytest.fail(
            f"GPU worker '{WORKER_NAME}' did not come online ({why}); last entry: {entry}\n"
            f"worker stderr:\n{''.join(log)}"
        )

    _WORKER = worker
    try:
        yield worker
    finally:
        _WORKER = None
        stop()
        # Wait until auxot has noticed, so later tests do not route to a closing worker.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            entry = _worker_entry(auxot, bootstrap.cookie, WORKER_NAME)
            if entry is None or entry.get("status") == "offline":
                break
            time.sleep(0.05)
