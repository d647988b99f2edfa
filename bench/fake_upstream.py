#!/usr/bin/env python3
"""A minimal, fast fake OpenAI upstream for bench/run.sh (Python stdlib only).

Raw HTTP/1.1 over asyncio.start_server with keep-alive. Every response is precomputed at
start-up, so a request costs one header parse plus one (non-streaming) or 22 (streaming)
socket writes, and no JSON work at all.

  GET  /v1/models            -> {"object":"list","data":[{"id":"gpt-4o-mini",...}]}
  POST /v1/chat/completions  -> a fixed chat.completion (Content-Length), or, when the body
                                holds "stream":true / "stream": true, 20 chat.completion.chunk
                                SSE events plus "data: [DONE]", chunked, sent at once.

Only `Authorization: Bearer sk-bench-key-000000000000` is accepted (else 401).

Usage: fake_upstream.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
The bound port is printed on stdout (and written to --port-file when given).
"""

import argparse
import asyncio
import json
import logging
import os
import sys

API_KEY = b"sk-bench-key-000000000000"
MODEL = "gpt-4o-mini"
CREATED = 1700000000
N_CHUNKS = 20


def _response(status: bytes, content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


MODELS = _response(
    b"200 OK",
    b"application/json",
    _json({"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]}),
)

COMPLETION = _response(
    b"200 OK",
    b"application/json",
    _json(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! This is the benchmark upstream."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
        }
    ),
)

UNAUTHORIZED = _response(
    b"401 Unauthorized",
    b"application/json",
    _json({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}),
)

NOT_FOUND = _response(
    b"404 Not Found",
    b"application/json",
    _json({"error": {"message": "Unknown path.", "type": "invalid_request_error", "param": None, "code": None}}),
)

BAD_REQUEST = _response(b"400 Bad Request", b"text/plain", b"bad request\n", b"Connection: close\r\n")

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse_events() -> list:
    events = []
    for i in range(N_CHUNKS):
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        else:
            delta = {"content": f" tok{i}"}
        finish = "stop" if i == N_CHUNKS - 1 else None
        if finish:
            delta = {}
        event = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        events.append(_chunk(b"data: " + _json(event) + b"\n\n"))
    events.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return events


# One write per event: each lands as its own TCP segment (asyncio sets TCP_NODELAY), like a
# real token stream, so the proxy really has to forward ~20 pieces.
SSE_BODY = _sse_events()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                writer.write(BAD_REQUEST)
                return
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()

            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = await _read_chunked(reader)
            else:
                length = int(headers.get(b"content-length", b"0"))
                body = await reader.readexactly(length) if length else b""

            path = target.split(b"?", 1)[0]
            conn = headers.get(b"connection", b"").lower()
            keep_alive = conn != b"close" and (version == b"HTTP/1.1" or conn == b"keep-alive")

            if headers.get(b"authorization") != b"Bearer " + API_KEY:
                writer.write(UNAUTHORIZED)
            elif method == b"GET" and path == b"/v1/models":
                writer.write(MODELS)
            elif method == b"POST" and path == b"/v1/chat/completions":
                if b'"stream":true' in body or b'"stream": true' in body:
                    writer.write(SSE_HEAD)
                    for piece in SSE_BODY:
                        if writer.transport.is_closing():
                            return
                        writer.write(piece)
                else:
                    writer.write(COMPLETION)
            else:
                writer.write(NOT_FOUND)

            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
            if not keep_alive:
                await writer.drain()
                return
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    # A client that hangs up mid-stream (wrk stopping) is normal here, not worth a warning.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)

    server = await asyncio.start_server(handle, args.host, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
