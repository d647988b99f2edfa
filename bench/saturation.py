#!/usr/bin/env python3
"""Saturation benchmark for auxot's dispatcher (Python stdlib only). A report, not a test.

N requests of service time S on GPU workers with K slots in total, all sent at once:
  - total time against the bound 1.15 x ceil(N/K) x S,
  - overfilled slots (the model server never saw more than K requests at a time, no worker
    more than its own slots), leaked slots (every slot free once all requests ended),
  - FIFO inversions among requests for the same capacity (requests leave in arrival order),
  - queue wait p50/p99 (time from sending the request to its service starting at the model
    server).

Run by bench/saturation.sh, which builds the binary and passes --bin. Starts everything on
127.0.0.1: a fake model server (this file, asyncio), `auxot serve`, and `auxot worker gpu`
processes, and cleans them up. Prints a Markdown report.
"""

import argparse
import asyncio
import http.client
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MODEL = "sat-model"
# Two starts at the model server closer than this count as simultaneous (see run_case).
TOLERANCE = 0.010
# Requests are sent this far apart, so their arrival order is known.
SPACING = 0.005
KEY = "sk-saturation-bench-0000"


class ModelServer:
    """An OpenAI-compatible server whose every request takes `service` seconds, counting
    how many run at once and when each starts (keyed by the request's tag)."""

    def __init__(self, service: float):
        self.service = service
        self.running = 0
        self.max_running = 0
        self.starts = {}  # tag -> monotonic time service began
        self.lock = threading.Lock()

    async def handle(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                if path.endswith("/models"):
                    payload = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
                    await writer.drain()
                    continue
                request = json.loads(body)
                tag = request["messages"][-1]["content"]
                with self.lock:
                    self.running += 1
                    self.max_running = max(self.max_running, self.running)
                    self.starts[tag] = time.monotonic()
                try:
                    await self.stream(writer)
                finally:
                    with self.lock:
                        self.running -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stream(self, writer):
        # Workers always stream: a role chunk, ten words spread over the service time, stop.
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

        def chunk(delta, finish=None):
            c = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            data = b"data: " + json.dumps(c).encode() + b"\n\n"
            return b"%x\r\n" % len(data) + data + b"\r\n"

        writer.write(chunk({"role": "assistant", "content": ""}))
        for i in range(10):
            writer.write(chunk({"content": "w%d " % i}))
            await writer.drain()
            await asyncio.sleep(self.service / 10)
        writer.write(chunk({}, "stop"))
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n" % len(done) + done + b"\r\n0\r\n\r\n")
        await writer.drain()

    def serve(self, port_box, ready):
        async def main():
            server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=1024)
            port_box.append(server.sockets[0].getsockname()[1])
            ready.set()
            async with server:
                await server.serve_forever()

        asyncio.run(main())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Auxot:
    def __init__(self, binary, work):
        self.binary = binary
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.cookie = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUXOT_")}
        env.update({"AUXOT_SECRET_KEY": secrets.token_hex(32), "RUST_LOG": "warn"})
        self.env = env
        self.log = open(os.path.join(work, "auxot.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:%d" % self.port, "--data-dir", os.path.join(work, "data")],
            env=env, stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("auxot did not start")

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if self.cookie:
            request.add_header("cookie", self.cookie)
        with urllib.request.urlopen(request, timeout=30) as reply:
            cookie = reply.headers.get("set-cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
            text = reply.read()
            return json.loads(text) if text else None


def one_request(base, key, tag, stream, results, index):
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=600)
    body = json.dumps({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": tag}]})
    sent = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"authorization": "Bearer " + key, "content-type": "application/json",
                          "x-auxot-wait-ms": "600000"})
    reply = conn.getresponse()
    reply.read()
    results[index] = (tag, sent, time.monotonic(), reply.status)
    conn.close()


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    k = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


def run_case(auxot, key, model_server, n, k, service, stream):
    model_server.starts.clear()
    model_server.max_running = 0
    results = [None] * n
    threads = []
    started = time.monotonic()
    for i in range(n):
        t = threading.Thread(target=one_request, args=(auxot.url, key, "r%04d-%s" % (i, secrets.token_hex(3)), stream, results, i))
        t.start()
        threads.append(t)
        time.sleep(SPACING)
    for t in threads:
        t.join()
    total = time.monotonic() - started
    ok = sum(1 for r in results if r and r[3] == 200)
    waits = [model_server.starts[r[0]] - r[1] for r in results if r and r[0] in model_server.starts]
    # Requests after the first K all waited for the same capacity: they must start in order.
    # Slots freed at the same instant are granted in queue order, but the jobs then race
    # through the worker to the model server: starts closer than TOLERANCE are not ordered.
    starts = [(i, model_server.starts[r[0]]) for i, r in enumerate(results) if i >= k and r and r[0] in model_server.starts]
    inversions = sum(1 for a in range(len(starts)) for b in range(a + 1, len(starts))
                     if starts[b][1] < starts[a][1] - TOLERANCE)
    workers = auxot.api("GET", "/api/workers")["data"]
    leaked = sum(w["slots_in_use"] for w in workers if w["status"] != "offline")
    bound = 1.15 * math.ceil(n / k) * service
    return {
        "case": "streamed" if stream else "non-streamed",
        "ok": ok, "n": n, "total": total, "bound": bound,
        "overfill": max(0, model_server.max_running - k), "max_running": model_server.max_running,
        "leaked": leaked, "inversions": inversions,
        "p50": percentile(waits, 50), "p99": percentile(waits, 99),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("-k", type=int, default=10, help="slots in total")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-s", "--service", type=float, default=1.0, help="seconds per request")
    args = parser.parse_args()
    if args.k % args.workers:
        raise SystemExit("-k must split evenly over --workers")

    model_server = ModelServer(args.service)
    port_box, ready = [], threading.Event()
    threading.Thread(target=model_server.serve, args=(port_box, ready), daemon=True).start()
    ready.wait(10)
    upstream = "http://127.0.0.1:%d/v1" % port_box[0]

    work = tempfile.mkdtemp(prefix="auxot-saturation.")
    auxot = Auxot(args.bin, work)
    procs = [auxot.proc]
    try:
        creds = {"username": "admin", "password": "password123"}
        auxot.api("POST", "/api/setup", creds)
        auxot.api("POST", "/api/login", creds)
        key = auxot.api("POST", "/api/api-keys", {"name": "bench", "role": "client"})["key"]
        per = args.k // args.workers
        for w in range(args.workers):
            token = auxot.api("POST", "/api/worker-tokens", {"name": "g%d" % w, "kind": "gpu"})["token"]
            env = dict(auxot.env, AUXOT_WORKER_TOKEN=token)
            log = open(os.path.join(work, "worker%d.log" % w), "w")
            procs.append(subprocess.Popen(
                [args.bin, "worker", "gpu", "--server", auxot.url, "--name", "g%d" % w, "--slots", str(per),
                 "--upstream", upstream], env=env, stdout=log, stderr=log))
        for _ in range(200):
            live = [w for w in auxot.api("GET", "/api/workers")["data"] if w["status"] != "offline"]
            if len(live) == args.workers:
                break
            time.sleep(0.05)
        else:
            raise SystemExit("workers did not connect")
        rows = [run_case(auxot, key, model_server, args.n, args.k, args.service, stream) for stream in (False, True)]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    print("N=%d requests, K=%d slots (%d workers), S=%.2f s, sent %d ms apart; FIFO inversions: a later request"
          " starting service more than %d ms before an earlier one\n"
          % (args.n, args.k, args.workers, args.service, SPACING * 1000, TOLERANCE * 1000))
    print("| case | ok | total | bound 1.15·⌈N/K⌉·S | max in flight | overfilled | leaked | FIFO inversions | queue wait p50 | p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d/%d | %.2f s | %.2f s | %d | %d | %d | %d | %.2f s | %.2f s |" % (
            r["case"], r["ok"], r["n"], r["total"], r["bound"], r["max_running"], r["overfill"], r["leaked"],
            r["inversions"], r["p50"], r["p99"]))


if __name__ == "__main__":
    main()
