// Test fixtures: a fake OpenAI upstream, the real `auxot serve`, a real `auxot worker gpu` (run from the pasted command),
// and Debian's chromium driven by playwright-core. Everything listens on 127.0.0.1 only.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
// A test run writes its screenshots under target/ so running the suite leaves the tracked
// pictures alone; AUXOT_UPDATE_SCREENSHOTS=1 refreshes the ones the README shows.
export const screenshotDir = process.env.AUXOT_UPDATE_SCREENSHOTS === '1'
  ? path.join(repoRoot, 'docs', 'screenshots')
  : path.join(repoRoot, 'target', 'e2e-screenshots');

/** Keys the fake accepts, and the model list each one sees. */
export const FAKE_KEYS = {
  first: 'sk-test-valid-AAAA1111',
  second: 'sk-test-valid-BBBB2222',
  gpu: 'sk-local-model-server',
  /** Lists gpt-4o-mini but answers every chat with 503: a provider to fail over from. */
  flaky: 'sk-test-flaky-CCCC3333',
  /** Answers chats without a `usage` object: auxot has to estimate the tokens. */
  quiet: 'sk-test-quiet-DDDD4444',
};

/**
 * A fake OpenAI API. GET /v1/models answers only for a known key (401 with OpenAI's error
 * shape otherwise); POST /v1/chat/completions answers one chat.completion.
 */
export async function startFakeOpenAI() {
  const requests = [];
  const server = http.createServer((req, res) => {
    const auth = req.headers.authorization ?? '';
    const key = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    const send = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      requests.push({ method: req.method, url: req.url, key });
      if (!Object.values(FAKE_KEYS).includes(key)) {
        send(401, { error: { message: 'Incorrect API key provided', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
        return;
      }
      if (req.method === 'GET' && req.url === '/v1/models') {
        const ids = key === FAKE_KEYS.gpu ? ['qwen2.5-coder-7b-instruct'] : ['gpt-4o-mini'];
        send(200, { object: 'list', data: ids.map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'fake' })) });
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/chat/completions' && key === FAKE_KEYS.flaky) {
        send(503, { error: { message: 'The server is overloaded, try again later', type: 'server_error', param: null, code: null } });
        return;
      }
      if (req.method === 'POST' && req.url === '/v1/chat/completions') {
        let model = 'gpt-4o-mini';
        let parsed = {};
        try {
          parsed = JSON.parse(body);
          model = parsed.model ?? model;
        } catch {
          // keep the default
        }
        // With tools offered (the admin agent): a question about models calls list_models,
        // and the tool's answer is summed up.
        let message = { role: 'assistant', content: 'Hello from the fake upstream.' };
        let finish = 'stop';
        const last = Array.isArray(parsed.messages) ? parsed.messages[parsed.messages.length - 1] : undefined;
        if (Array.isArray(parsed.tools) && last?.role === 'user' && /models/i.test(String(last.content))) {
          message = { role: 'assistant', content: null, tool_calls: [{ id: 'call_fake_1', type: 'function', function: { name: 'list_models', arguments: '{}' } }] };
          finish = 'tool_calls';
        } else if (Array.isArray(parsed.tools) && last?.role === 'tool') {
          message = { role: 'assistant', content: 'There is one model: gpt-4o-mini, served by the provider “openai”.' };
        }
        const answer = {
          id: 'chatcmpl-fake',
          object: 'chat.completion',
          created: Math.floor(Date.now() / 1000),
          model,
          choices: [{ index: 0, message, finish_reason: finish }],
          usage: { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 },
        };
        if (key === FAKE_KEYS.quiet) delete answer.usage;
        send(200, answer);
        return;
      }
      send(404, { error: { message: `no route ${req.method} ${req.url}`, type: 'invalid_request_error' } });
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/**
 * A "provider" that accepts connections and never answers a byte: the slow base URL. Counts
 * connections opened and closed, so a test can see auxot hang up once the browser cancels.
 */
export async function startSilentServer() {
  const counts = { opened: 0, closed: 0 };
  const sockets = new Set();
  const server = net.createServer((socket) => {
    counts.opened++;
    sockets.add(socket);
    socket.on('data', () => {});
    socket.on('close', () => {
      counts.closed++;
      sockets.delete(socket);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    counts,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(resolve);
      }),
  };
}

/** Spawns a process and keeps its stderr+stdout for error messages. */
function spawnLogged(bin, args, env) {
  const child = spawn(bin, args, { env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  return { child, log: () => log };
}

export function auxotBinary() {
  return process.env.AUXOT_BIN ?? path.join(repoRoot, 'target', 'debug', 'auxot');
}

/** `auxot serve` on a free port with a fresh data dir; resolves once it prints its URL. */
export async function startAuxot() {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'auxot-e2e-'));
  const secret = randomBytes(32).toString('hex');
  const { child, log } = spawnLogged(auxotBinary(), ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], { AUXOT_SECRET_KEY: secret });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`auxot did not print its URL within 30 s:\n${log()}`)), 30_000);
    const look = () => {
      const match = /auxot listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(log());
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stderr.on('data', look);
    child.stdout.on('data', look);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`auxot exited (${code}) before listening:\n${log()}`));
    });
  });
  return {
    url,
    log,
    stop: async () => {
      await stopProcess(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs a pasted worker command in /bin/sh exactly as a shell on the worker machine would,
 * with this build installed as `auxot` on PATH (as the .deb or install script puts it in /usr/bin).
 */
export function runPastedCommand(command, extraEnv = {}) {
  const bin = mkdtempSync(path.join(tmpdir(), 'auxot-e2e-bin-'));
  symlinkSync(path.resolve(auxotBinary()), path.join(bin, 'auxot'));
  const child = spawn('/bin/sh', ['-c', command], {
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: 'info', ...extraEnv, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  return {
    child,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        // The shell and auxot under it: the whole process group.
        process.kill(-child.pid, 'SIGTERM');
        const timer = setTimeout(() => process.kill(-child.pid, 'SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(bin, { recursive: true, force: true });
    },
  };
}

async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** Debian's chromium, headless, in a throwaway profile. */
export async function launchBrowser() {
  const profile = mkdtempSync(path.join(tmpdir(), 'auxot-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync'],
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
    reducedMotion: 'reduce',
  });
  context.setDefaultTimeout(15_000);
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
