// End-to-end: the built UI, served by the real `auxot serve`, in headless chromium.
// setup → login → providers (a rejected key, then a good one) → models → rotate key → API key
// → a request with it → usage → worker token, a real worker, revoke → agents, aliases,
// routing → 360 px → logout. Screenshots land in target/e2e-screenshots/ (docs/screenshots/ with AUXOT_UPDATE_SCREENSHOTS=1).
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { FAKE_KEYS, launchBrowser, screenshotDir, startAuxot, startFakeOpenAI, runPastedCommand, startSilentServer } from './harness.mjs';

const ADMIN = { username: 'admin', password: 'correct-horse-battery' };

let fake;
let silent;
let auxot;
let browser;
let page;
let worker;
let clientKey;
let failed = false;

before(async () => {
  mkdirSync(screenshotDir, { recursive: true });
  fake = await startFakeOpenAI();
  silent = await startSilentServer();
  auxot = await startAuxot();
  browser = await launchBrowser();
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.on('pageerror', (error) => console.error('page error:', error));
});

after(async () => {
  await worker?.stop();
  await browser?.close();
  await auxot?.stop();
  await fake?.close();
  await silent?.close();
});

/** A loopback port nothing listens on (it was free a moment ago). */
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A step of one story: once a step fails, the later ones are skipped, not piled on. */
function step(name, body) {
  test(name, async (t) => {
    if (failed) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await body();
    } catch (error) {
      failed = true;
      const picture = path.join(tmpdir(), `auxot-e2e-failure-${name.replace(/\W+/g, '-').slice(0, 60)}.png`);
      await page?.screenshot({ path: picture, fullPage: true }).catch(() => {});
      const log = auxot?.log().split('\n').slice(-30).join('\n');
      error.message += `\n--- url: ${page?.url()}\n--- screenshot: ${picture}\n--- last auxot log lines:\n${log}`;
      throw error;
    }
  });
}

const shot = (name, target = page) => target.screenshot({ path: path.join(screenshotDir, `${name}.png`), fullPage: true });
const heading = (name, target = page) => target.getByRole('heading', { level: 1, name, exact: true });
const nav = (label) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: label, exact: true });
const alert = (text) => page.getByRole('alert').filter({ hasText: text });
const status = (text) => page.getByRole('status').filter({ hasText: text });

async function confirmDialog(buttonName) {
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  await dialog.getByRole('button', { name: buttonName, exact: true }).click();
  await dialog.waitFor({ state: 'hidden' });
}

step('first visit shows setup; the admin is created, then signs in', async () => {
  await page.goto(auxot.url + '/settings/providers');
  await heading('Set up auxot').waitFor();
  assert.equal(new URL(page.url()).pathname, '/setup');
  await page.getByLabel('Password', { exact: true }).fill(ADMIN.password);
  await page.getByLabel('Repeat the password').fill(ADMIN.password);
  await shot('setup');
  await page.getByLabel('Password', { exact: true }).fill('short');
  await page.getByLabel('Repeat the password').fill('short');
  await page.getByRole('button', { name: 'Create admin account' }).click();
  await alert('at least 8 characters').waitFor();
  await page.getByLabel('Password', { exact: true }).fill(ADMIN.password);
  await page.getByLabel('Repeat the password').fill(ADMIN.password + '-typo');
  await page.getByRole('button', { name: 'Create admin account' }).click();
  await alert('The two passwords are not the same').waitFor();
  await page.getByLabel('Repeat the password').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Create admin account' }).click();
  await heading('Sign in').waitFor();
  await status('The admin account “admin” is ready').waitFor();

  await page.getByLabel('Password').fill(ADMIN.password);
  await shot('login');
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await alert('Wrong username or password').waitFor();
  await page.getByLabel('Password').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await heading('Overview').waitFor();
  await page.getByText('Signed in as').waitFor();
});

step('a reload keeps the session and the client route', async () => {
  await page.goto(auxot.url + '/settings/providers');
  await heading('Providers').waitFor();
  await page.getByText('No provider yet').waitFor();
});

step('the assistant, with no model anywhere, says so plainly and points to Providers', async () => {
  await nav('Assistant').click();
  await heading('Assistant').waitFor();
  await page.getByText('No conversation yet.').waitFor();
  await page.getByText('replaced by placeholders').waitFor();
  const box = page.getByLabel('Message', { exact: true });
  await box.fill('List all available models');
  await box.press('Enter');
  await page.getByRole('alert').filter({ hasText: /no model is reachable/i }).waitFor();
  await page.getByRole('alert').getByRole('link', { name: 'Settings → Providers' }).waitFor();
  // The advice names this state: nothing enabled, nothing connected; and the model is editable.
  await page.getByTestId('assistant-advice').getByText('no cloud provider is enabled and no worker is connected').waitFor();
  await page.getByTestId('assistant-advice').getByRole('link', { name: 'Add a provider' }).waitFor();
  assert.equal(await page.getByLabel("The Assistant's model").inputValue(), 'auto');
  await shot('assistant-no-model');
  await page.getByRole('list', { name: 'Messages' }).getByText('List all available models').waitFor();
  assert.equal(await box.isDisabled(), false, 'the input is usable again once the turn ended');
  await page.getByRole('list', { name: 'Past conversations' }).getByRole('button', { name: /List all available models/ }).waitFor();
  await nav('Providers').click();
  await heading('Providers').waitFor();
});

step('a provider that never answers: the check shows its progress and Cancel stops it, saving nothing', async () => {
  await page.getByRole('button', { name: 'Add provider' }).click();
  await page.getByRole('heading', { name: 'Add a provider' }).waitFor();
  await page.getByLabel('Type').selectOption('openai-compatible');
  await page.getByLabel('Name').fill('stalled');
  await page.getByLabel('Base URL').fill(silent.baseUrl);
  await page.getByLabel('API key').fill(FAKE_KEYS.first);
  await page.getByRole('button', { name: 'Add provider', exact: true }).click();
  const progress = page.getByTestId('slow-progress');
  await progress.getByText('asking the provider for its model list').waitFor();
  // The elapsed time counts up while auxot waits.
  await progress.getByTestId('elapsed').getByText(/^[1-9]\d* s of at most 30 s$/).waitFor({ timeout: 5_000 });
  assert.equal(silent.counts.opened, 1, 'auxot is waiting on the silent provider');
  await shot('providers-slow-check');
  await progress.getByRole('button', { name: 'Cancel the check' }).click();
  await status('Cancelled. Nothing was saved').waitFor();
  await progress.waitFor({ state: 'detached' });
  // The form is usable again, and the server hung up on the provider: it stopped the check.
  assert.equal(await page.getByRole('button', { name: 'Add provider', exact: true }).isEnabled(), true);
  assert.equal(await page.getByLabel('Base URL').inputValue(), silent.baseUrl, 'what was typed is kept');
  const deadline = Date.now() + 5_000;
  while (silent.counts.closed < 1) {
    if (Date.now() > deadline) assert.fail('auxot kept waiting on the provider after the browser cancelled');
    await page.waitForTimeout(100);
  }
  const listed = await page.evaluate(async () => (await (await fetch('/api/providers', { credentials: 'same-origin' })).json()).data);
  assert.deepEqual(listed, [], 'nothing was saved');
  await page.getByText('No provider yet').waitFor();
  // A refused connection reads as plain words; the raw network error waits behind “Details”.
  await page.getByLabel('Base URL').fill(`http://127.0.0.1:${await closedPort()}/v1`);
  await page.getByRole('button', { name: 'Add provider', exact: true }).click();
  const refused = alert('Nothing answered at that address');
  await refused.waitFor();
  assert.equal(await refused.getByText(/os error/i).first().isVisible(), false, 'the raw error is folded away');
  await refused.getByText('Details').click();
  await refused.locator('code').getByText(/connection refused|os error 111/i).waitFor();
  await shot('providers-unreachable');
  await page.getByRole('button', { name: 'Cancel', exact: true }).click();
  await page.getByRole('heading', { name: 'Add a provider' }).waitFor({ state: 'detached' });
});

step('adding a provider: a rejected key shows the provider’s message, a good key adds it', async () => {
  await page.getByRole('button', { name: 'Add provider' }).click();
  await page.getByRole('heading', { name: 'Add a provider' }).waitFor();
  assert.equal(await page.getByLabel('Name').inputValue(), 'openai');
  await page.getByLabel('Base URL').fill(fake.baseUrl);
  await page.getByLabel('API key').fill('sk-test-wrong-key-0000');
  await page.getByRole('button', { name: 'Add provider', exact: true }).click();
  const rejected = alert('Incorrect API key provided');
  await rejected.waitFor();
  assert.match(await rejected.innerText(), /rejected the API key/i);
  await shot('providers-add-error');

  await page.getByLabel('API key').fill(FAKE_KEYS.first);
  await page.getByRole('button', { name: 'Add provider', exact: true }).click();
  await status('Added “openai”').waitFor();
  const row = page.getByRole('row').filter({ hasText: 'openai' });
  await row.getByText('…1111').waitFor();
  await row.getByText('enabled', { exact: true }).waitFor();
  assert.equal(await page.getByText(FAKE_KEYS.first).count(), 0, 'the key itself is never on the page');
  await shot('providers');
});

step('models appear on the Models page and can be refreshed', async () => {
  await nav('Models').click();
  await heading('Models').waitFor();
  const row = page.getByRole('row').filter({ hasText: 'gpt-4o-mini' });
  await row.waitFor();
  await row.getByText('openai').first().waitFor();
  await page.getByRole('button', { name: 'Refresh models of openai' }).click();
  await status('Refreshed “openai”: 1 model.').waitFor();
});

step('an alias is created; auto cannot be deleted', async () => {
  await page.getByRole('button', { name: 'New alias' }).click();
  await page.getByLabel('Alias name').fill('coder');
  await page.getByLabel('Cloud model').fill('openai/gpt-4o-mini');
  await page.getByRole('button', { name: 'Create alias' }).click();
  await status('Created the alias “coder”.').waitFor();
  await page.getByRole('row').filter({ hasText: 'coder' }).getByText('openai/gpt-4o-mini').waitFor();
  await page.getByRole('button', { name: 'Edit alias auto' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'Delete alias auto' }).count(), 0);
  await shot('models');
});

step('rotating the key: a rejected key changes nothing, a good key replaces it', async () => {
  await nav('Providers').click();
  await heading('Providers').waitFor();
  await page.getByRole('button', { name: 'Edit openai' }).click();
  await page.getByRole('heading', { name: 'Edit “openai”' }).waitFor();
  await page.getByLabel('New API key').fill('sk-test-wrong-key-9999');
  await page.getByRole('button', { name: 'Replace key' }).click();
  await alert('The key was not replaced.').waitFor();
  await page.getByRole('row').filter({ hasText: 'openai' }).getByText('…1111').waitFor();

  await page.getByLabel('New API key').fill(FAKE_KEYS.second);
  await page.getByRole('button', { name: 'Replace key' }).click();
  await status('Key replaced.').waitFor();
  await page.getByRole('row').filter({ hasText: 'openai' }).getByText('…2222').waitFor();

  await page.getByLabel('Priority').fill('10');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await status('Saved “openai”.').waitFor();
  await shot('providers-edit');
});

step('a second provider is deleted only after confirming', async () => {
  await page.getByRole('button', { name: 'Close' }).click();
  await page.getByRole('button', { name: 'Add provider' }).click();
  await page.getByLabel('Type').selectOption('openai-compatible');
  await page.getByLabel('Name').fill('lab');
  await page.getByLabel('Base URL').fill(fake.baseUrl);
  await page.getByLabel('API key').fill(FAKE_KEYS.first);
  await page.getByRole('button', { name: 'Add provider', exact: true }).click();
  await status('Added “lab”').waitFor();

  await page.getByRole('button', { name: 'Edit lab' }).click();
  await page.getByRole('button', { name: 'Delete provider' }).click();
  await page.getByRole('dialog').waitFor();
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'hidden' });
  await page.getByRole('button', { name: 'Delete provider' }).click();
  await confirmDialog('Cancel');
  await page.getByRole('row').filter({ hasText: 'lab' }).first().waitFor();
  await page.getByRole('button', { name: 'Delete provider' }).click();
  await confirmDialog('Delete provider');
  await status('Deleted “lab”.').waitFor();
  await page.getByRole('button', { name: 'Edit lab' }).waitFor({ state: 'detached' });
});

step('an API key is shown once and works for a chat completion', async () => {
  await nav('API keys').click();
  await heading('API keys').waitFor();
  await page.getByLabel('Key name').fill('e2e-client');
  await page.getByRole('button', { name: 'Create key' }).click();
  const shown = page.getByTestId('new-api-key');
  await shown.waitFor();
  clientKey = (await shown.innerText()).trim();
  assert.match(clientKey, /^aux_/);
  await page.getByRole('row').filter({ hasText: 'e2e-client' }).getByText('client', { exact: true }).waitFor();

  const reply = await fetch(auxot.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${clientKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hello' }] }),
  });
  const body = await reply.text();
  assert.equal(reply.status, 200, body);
  assert.equal(JSON.parse(body).choices[0].message.content, 'Hello from the fake upstream.');
  assert.equal(reply.headers.get('x-auxot-route'), 'openai');
  assert.ok(fake.requests.some((r) => r.url === '/v1/chat/completions' && r.key === FAKE_KEYS.second), 'the rotated key is the one used');

  const limits = page.getByRole('region', { name: 'Limits of “e2e-client”' });
  await page.getByRole('button', { name: 'Limits of API key e2e-client' }).click();
  await limits.getByLabel('Requests per minute').fill('-3');
  await page.getByRole('button', { name: 'Save limits' }).click();
  await alert('Requests per minute must be a whole number').waitFor();
  await limits.getByLabel('Requests per minute').fill('600');
  await limits.getByLabel('Monthly cloud spend cap (USD)').fill('25');
  await page.getByRole('button', { name: 'Save limits' }).click();
  await status('Saved the limits of “e2e-client”').waitFor();
  await page.getByRole('row').filter({ hasText: 'e2e-client' }).getByText('600 requests/min, $25.00/month cloud spend').waitFor();
  // Governance: a model allow-list is enforced by the server in the caller's dialect.
  await page.getByRole('button', { name: 'Limits of API key e2e-client' }).click();
  await limits.getByLabel('Allowed models').fill('gpt-4o-mini, auto');
  await limits.getByLabel('Tokens per minute').fill('100000');
  await page.getByRole('button', { name: 'Save limits' }).click();
  await status('Saved the limits of “e2e-client”').waitFor();
  const keyRow = page.getByRole('row').filter({ hasText: 'e2e-client' });
  await keyRow.getByText('gpt-4o-mini, auto').waitFor();
  const refused = await fetch(auxot.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${clientKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello' }] }),
  });
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error.code, 'model_not_allowed');
  await page.reload();
  await page.getByRole('row').filter({ hasText: 'e2e-client' }).getByTestId('key-month').getByText(/[1-9]\d* req/).waitFor();
  // A second key with the same name is refused, with the reason.
  await page.getByLabel('Key name').fill('E2E-client');
  await page.getByRole('button', { name: 'Create key' }).click();
  await alert('already exists').waitFor();
  await shot('api-keys');
});

step('a key is created with its governance; the server enforces it in each dialect', async () => {
  await nav('API keys').click();
  await heading('API keys').waitFor();
  const form = page.getByRole('region', { name: 'Create a key' });
  await form.getByLabel('Key name').fill('ci-limited');
  await form.getByLabel('Requests per minute').fill('60');
  await form.getByLabel('Tokens per minute').fill('20000');
  await form.getByLabel('Monthly cloud spend cap (USD)').fill('5');
  await form.getByRole('button', { name: 'Allow gpt-4o-mini' }).click();
  assert.equal(await form.getByLabel('Allowed models').inputValue(), 'gpt-4o-mini');
  await form.getByLabel('cloud', { exact: true }).check();
  await form.getByRole('button', { name: 'Create key' }).click();
  await page.getByRole('region', { name: 'New API key' }).getByText('Copy the key “ci-limited” now.').waitFor();
  const limitedKey = (await page.getByTestId('new-api-key').innerText()).trim();
  const row = page.getByRole('row').filter({ hasText: 'ci-limited' });
  await row.getByText('60 requests/min, 20,000 tokens/min, $5.00/month cloud spend').waitFor();
  await row.getByText('gpt-4o-mini').waitFor();
  await row.getByText('on cloud').waitFor();
  assert.equal(await form.getByLabel('Requests per minute').inputValue(), '', 'the form is cleared for the next key');

  const chat = (key, model) =>
    fetch(auxot.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello' }] }),
    });
  assert.equal((await chat(limitedKey, 'gpt-4o-mini')).status, 200);
  const refused = await chat(limitedKey, 'gpt-4o');
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error.code, 'model_not_allowed');

  // An expiry in the past: the key exists but is refused, 401 in the OpenAI and the Anthropic shape.
  await form.getByLabel('Key name').fill('contractor');
  await form.getByLabel('Expires on').fill('2020-01-31');
  await form.getByRole('button', { name: 'Create key' }).click();
  await page.getByRole('region', { name: 'New API key' }).getByText('Copy the key “contractor” now.').waitFor();
  const expiredKey = (await page.getByTestId('new-api-key').innerText()).trim();
  assert.notEqual(expiredKey, limitedKey);
  await page.getByRole('row').filter({ hasText: 'contractor' }).getByText('expired', { exact: true }).waitFor();
  const openai = await chat(expiredKey, 'gpt-4o-mini');
  assert.equal(openai.status, 401);
  assert.equal((await openai.json()).error.code, 'expired_api_key');
  const anthropic = await fetch(auxot.url + '/v1/messages', {
    method: 'POST',
    headers: { 'x-api-key': expiredKey, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 5, messages: [{ role: 'user', content: 'Hello' }] }),
  });
  assert.equal(anthropic.status, 401);
  const anthropicBody = await anthropic.json();
  assert.equal(anthropicBody.type, 'error');
  assert.equal(anthropicBody.error.type, 'authentication_error');

  // A taken name is refused beside the field, and nothing else is lost from the form.
  await form.getByLabel('Key name').fill('CI-Limited');
  await form.getByLabel('Requests per minute').fill('30');
  await form.getByRole('button', { name: 'Create key' }).click();
  const nameField = form.locator('.field').filter({ has: page.getByLabel('Key name') });
  await nameField.getByRole('alert').getByText('already exists').waitFor();
  assert.equal(await form.getByLabel('Key name').getAttribute('aria-invalid'), 'true');
  assert.equal(await form.getByLabel('Requests per minute').inputValue(), '30');
  await shot('api-keys-create');
  await page.setViewportSize({ width: 360, height: 740 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `API keys fit 360 px (page is ${width} px wide)`);
  await shot('mobile-api-keys');
  await page.setViewportSize({ width: 1280, height: 800 });
  await form.getByLabel('Key name').fill('');
  await form.getByLabel('Requests per minute').fill('');
});

step('usage shows the request (or says accounting is not in this build)', async () => {
  const probe = await page.evaluate(async () => (await fetch('/api/usage?group_by=tier', { credentials: 'same-origin' })).status);
  await nav('Usage').click();
  await heading('Usage').waitFor();
  if (probe === 404) {
    await page.getByText('Usage accounting is not available in this build').first().waitFor();
  } else {
    // Usage rows may be written in batches: reload until the request shows.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const total = (await page.getByTestId('total-requests').innerText().catch(() => '0')).trim();
      if (Number(total.replace(/\D/g, '')) >= 1) break;
      if (Date.now() > deadline) assert.fail(`the request never showed in Usage (total requests: ${total})`);
      await page.waitForTimeout(500);
      await page.getByRole('button', { name: 'Refresh' }).click();
    }
    await page.getByTestId('usage-table').getByRole('rowheader', { name: 'cloud' }).waitFor();
  }
  await shot(probe === 404 ? 'usage-unavailable' : 'usage-live');
});

step('a price is validated, set, and listed on the Usage page', async () => {
  await nav('Usage').click();
  await heading('Usage').waitFor();
  await page.getByLabel('Price model').fill('my-finetune-1');
  await page.getByLabel('Input (USD / M tokens)').fill('-1');
  await page.getByLabel('Output (USD / M tokens)').fill('0.6');
  await page.getByRole('button', { name: 'Save price' }).click();
  await alert('The input price must be a number of 0 or more').waitFor();
  await page.getByLabel('Input (USD / M tokens)').fill('0.35');
  await page.getByRole('button', { name: 'Save price' }).click();
  await status('Saved the price of “my-finetune-1”').waitFor();
  const row = page.getByRole('row').filter({ has: page.getByRole('button', { name: 'Edit price of my-finetune-1' }) });
  await row.getByText('$0.35').waitFor();
  await row.getByText('$0.60').waitFor();
  const listed = await page.evaluate(async () => (await (await fetch('/api/prices', { credentials: 'same-origin' })).json()).data);
  const price = listed.find((p) => p.model === 'my-finetune-1');
  assert.deepEqual(price && [price.input_per_mtok, price.output_per_mtok], [0.35, 0.6]);
});

step('spend avoided: the pricing rule is shown and a per-worker cloud model is set', async () => {
  await nav('Usage').click();
  await heading('Usage').waitFor();
  const section = page.getByRole('region', { name: 'How spend avoided is priced' });
  await section.getByTestId('equivalent-default').getByText('gpt-4o-mini').waitFor();
  await section.getByTestId('equivalent-default').getByText(/per million tokens/).waitFor();
  await section.getByRole('button', { name: 'Add a worker setting' }).click();
  await section.getByLabel('Worker 1', { exact: true }).fill('gpu-box-1');
  await section.getByLabel('Priced as (worker 1)').fill('no-such-model');
  await section.getByRole('button', { name: 'Save pricing' }).click();
  await section.getByRole('alert').getByText('has no price').waitFor();
  await section.getByLabel('Priced as (worker 1)').fill('my-finetune-1');
  await section.getByText('$0.35 in / $0.60 out per million tokens').waitFor();
  await section.getByRole('button', { name: 'Save pricing' }).click();
  await section.getByRole('status').getByText('Saved.').waitFor();
  const settings = await page.evaluate(async () => (await fetch('/api/usage/equivalents', { credentials: 'same-origin' })).json());
  assert.deepEqual(settings.by_worker, { 'gpu-box-1': 'my-finetune-1' });
  await section.screenshot({ path: path.join(screenshotDir, 'usage-pricing.png') });
});

step('a worker token shows its command once; a real worker connects, then is cut off by revoking', async () => {
  await nav('Workers').click();
  await heading('Workers').waitFor();
  await page.getByText('No worker has connected yet').waitFor();
  await page.getByLabel('Worker name').fill('gpu-box-1');
  await page.getByLabel('Slots').fill('0');
  await page.getByLabel('Model server URL').fill(fake.baseUrl);
  await page.getByRole('button', { name: 'Create token' }).click();
  await alert('Slots must be a whole number').waitFor();
  await page.getByLabel('Slots').fill('4');
  await page.getByRole('button', { name: 'Create token' }).click();
  const token = (await page.getByTestId('worker-token').innerText()).trim();
  assert.match(token, /^auxw_/);
  assert.equal((await page.getByTestId('upstream-check').innerText()).trim(), `curl -fsS ${fake.baseUrl}/models`);
  // Copy the command with its Copy button, as a user would.
  await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: auxot.url });
  await page.getByRole('button', { name: 'Copy command' }).click();
  const command = (await page.evaluate(() => navigator.clipboard.readText())).trim();
  assert.equal(command, (await page.getByTestId('worker-command').innerText()).trim(), 'the clipboard holds the command shown');
  assert.equal(command, `AUXOT_WORKER_TOKEN=${token} auxot worker gpu --server ${auxot.url} --name gpu-box-1 --slots 4 --upstream ${fake.baseUrl}`);
  const envFile = (await page.getByTestId('worker-env').innerText()).trim();
  assert.match(envFile, new RegExp(`^AUXOT_WORKER_TOKEN=${token}$`, 'm'));
  assert.match(envFile, new RegExp(`^AUXOT_UPSTREAM=${fake.baseUrl.replace(/[.]/g, '\\.')}$`, 'm'));
  const tokenRow = page.getByRole('row').filter({ hasText: 'auxw_' }).filter({ hasText: 'gpu-box-1' });
  await tokenRow.getByText('waiting for the worker').waitFor();
  await page.getByTestId('worker-wait').getByText('Waiting for the worker to connect').waitFor();

  // The command runs as pasted into a shell, with auxot on PATH (only the model server's own key
  // is added: it is not auxot's to know).
  worker = runPastedCommand(command, { AUXOT_UPSTREAM_KEY: FAKE_KEYS.gpu });
  // No reload: the table refreshes itself every 2 s.
  const row = page.getByRole('row').filter({ hasText: 'qwen2.5-coder-7b-instruct' });
  await row.waitFor({ timeout: 20_000 }).catch((e) => {
    throw new Error(`${e.message}\nworker log:\n${worker.log()}`);
  });
  await row.getByText('idle', { exact: true }).waitFor();
  await row.getByText('0 / 4').waitFor();
  await tokenRow.getByTestId('token-status').getByText('connected').waitFor();
  await page.getByTestId('worker-wait').getByText('connected').waitFor();
  await tokenRow.getByText('gpu-box-1').first().waitFor();
  await shot('workers');

  // The worker serves a real request; the Requests page says what its answer was valued at.
  const workerKey = await page.evaluate(async () => {
    const r = await fetch('/api/api-keys', { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'worker-e2e', role: 'client' }) });
    return (await r.json()).key;
  });
  const served = await fetch(auxot.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { authorization: `Bearer ${workerKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'qwen2.5-coder-7b-instruct', messages: [{ role: 'user', content: 'Hello' }] }),
  });
  assert.equal(served.status, 200, await served.clone().text());
  assert.equal(served.headers.get('x-auxot-tier'), 'gpu');
  await nav('Requests').click();
  await heading('Requests').waitFor();
  const gpuRow = page.getByTestId('request-row').filter({ hasText: 'worker-e2e' }).first();
  await gpuRow.locator('.tier-badge').getByText('gpu', { exact: true }).waitFor();
  await gpuRow.getByText('gpu-box-1').waitFor();
  await gpuRow.getByRole('button', { name: 'Trail' }).click();
  await page.getByTestId('request-equivalent').getByText('Spend avoided priced as my-finetune-1 (the worker’s setting)').waitFor();
  await nav('Workers').click();
  await heading('Workers').waitFor();

  await page.getByRole('button', { name: 'Revoke worker token gpu-box-1' }).click();
  await confirmDialog('Revoke token');
  await status('Revoked the worker token “gpu-box-1”.').waitFor();
  await page.getByTestId('worker-token').waitFor({ state: 'detached' });
  await row.getByText('offline', { exact: true }).waitFor({ timeout: 20_000 });

  await page.getByLabel('Worker name').fill('laptop-claude');
  await page.getByLabel('Kind').selectOption('cli');
  await page.getByLabel('CLI', { exact: true }).selectOption('codex');
  await page.getByLabel('Slots').fill('2');
  await page.getByRole('button', { name: 'Create token' }).click();
  const cliToken = (await page.getByTestId('worker-token').innerText()).trim();
  assert.equal((await page.getByTestId('worker-command').innerText()).trim(), `AUXOT_WORKER_TOKEN=${cliToken} auxot worker cli --server ${auxot.url} --name laptop-claude --slots 2 --cli codex`);
  await page.getByRole('button', { name: 'Subscription price of worker token laptop-claude' }).click();
  await page.getByLabel('Monthly price (USD)').fill('20');
  await page.getByRole('button', { name: 'Save price' }).click();
  await status('“laptop-claude” costs $20.00/month.').waitFor();
  await page.getByRole('row').filter({ hasText: 'laptop-claude' }).getByText('$20.00/month').waitFor();
  await page.getByRole('button', { name: 'Revoke worker token laptop-claude' }).click();
  await confirmDialog('Revoke token');
  await status('Revoked the worker token “laptop-claude”.').waitFor();
  await page.getByText('No worker tokens.').waitFor();
});

step('the assistant runs a tool, shows the call and its result, and reopens a past conversation', async () => {
  // The most common first state: a provider, no worker, and `auto` with no cloud model. The
  // advice names the alias and links to its fix; the model is then changed on the page.
  await nav('Assistant').click();
  await heading('Assistant').waitFor();
  await page.getByRole('button', { name: 'New conversation' }).click();
  const box = page.getByLabel('Message', { exact: true });
  await box.fill('Hello?');
  await box.press('Enter');
  const advice = page.getByTestId('assistant-advice');
  await advice.getByText('The Assistant uses the alias “auto”, and it has no cloud model').waitFor();
  await advice.getByRole('link', { name: 'Set a cloud model for “auto”' }).waitFor();
  await page.getByLabel("The Assistant's model").fill('openai/gpt-4o-mini');
  await page.getByRole('button', { name: 'Save model' }).click();
  await status('The Assistant now uses “openai/gpt-4o-mini”').waitFor();
  await page.getByRole('button', { name: 'New conversation' }).click();
  await box.fill('Which models are there?');
  await page.getByRole('button', { name: 'Send' }).click();
  const messages = page.getByRole('list', { name: 'Messages' });
  await messages.getByText('There is one model: gpt-4o-mini').waitFor();
  const tool = messages.locator('summary').filter({ hasText: 'list_models' });
  await tool.getByText('done', { exact: true }).waitFor();
  await tool.click();
  await messages.locator('pre').filter({ hasText: '"gpt-4o-mini"' }).first().waitFor();
  await messages.evaluate((el) => (el.scrollTop = el.scrollHeight));
  await shot('assistant');

  await page.getByRole('list', { name: 'Past conversations' }).getByRole('button', { name: /List all available models/ }).click();
  await messages.getByText('List all available models').waitFor();
  assert.equal(await messages.getByText('There is one model').count(), 0);
  await page.getByRole('list', { name: 'Past conversations' }).getByRole('button', { name: /Which models are there/ }).click();
  await messages.getByText('There is one model: gpt-4o-mini').waitFor();
  await messages.locator('summary').filter({ hasText: 'list_models' }).waitFor();

  await page.setViewportSize({ width: 360, height: 740 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `no sideways scrolling at 360 px (page is ${width} px wide)`);
  await shot('mobile-assistant');
  await page.setViewportSize({ width: 1280, height: 800 });
});

step('an agent is created and edited', async () => {
  await nav('Agents').click();
  await heading('Agents').waitFor();
  await page.getByRole('button', { name: 'New agent' }).click();
  await page.getByLabel('Agent name').fill('reviewer');
  await page.getByLabel('Model', { exact: true }).fill('coder');
  await page.getByLabel('System prompt').fill('You review pull requests. Be brief and specific.');
  await page.getByRole('button', { name: 'Add cloud' }).click();
  await page.getByRole('button', { name: 'Add gpu' }).click();
  await page.getByRole('button', { name: 'Move gpu up' }).click();
  await page.getByRole('button', { name: 'Create agent' }).click();
  await status('Created the agent “reviewer”.').waitFor();
  const row = page.getByRole('row').filter({ hasText: 'reviewer' });
  await row.getByText('gpu → cloud').waitFor();

  await page.getByRole('button', { name: 'Edit agent reviewer' }).click();
  await page.getByLabel('Queue timeout (ms)').fill('5000');
  await shot('agents');
  await page.getByRole('button', { name: 'Save agent' }).click();
  await status('Saved the agent “reviewer”.').waitFor();
  await row.getByText('5,000 ms').waitFor();
});

step('routing settings are saved', async () => {
  await nav('Routing').click();
  await heading('Routing').waitFor();
  await page.getByLabel('Queue timeout (ms)').fill('30000');
  await page.getByRole('button', { name: 'Save routing' }).click();
  await status('Saved.').waitFor();
  await shot('routing');
});

step('the overview sums everything up', async () => {
  await nav('Overview').click();
  await heading('Overview').waitFor();
  await page.getByRole('link', { name: /Cloud providers\s*1 \/ 1/ }).waitFor();
  await shot('overview');
});

step('the Requests page follows real requests live: tier, models, tokens, cost, timing, the failover trail, filters', async () => {
  // A provider tried first that answers 503: requests fail over from it to “openai”.
  const setup = await page.evaluate(async (args) => {
    const post = async (path, body) => {
      const r = await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, body: await r.json() };
    };
    const provider = await post('/api/providers', { name: 'flaky', type: 'openai-compatible', base_url: args.baseUrl, api_key: args.flaky, priority: 1 });
    const quiet = await post('/api/providers', { name: 'quiet', type: 'openai-compatible', base_url: args.baseUrl, api_key: args.quiet, priority: 200 });
    const key = await post('/api/api-keys', { name: 'requests-e2e', role: 'client' });
    return { provider, quiet, key };
  }, { baseUrl: fake.baseUrl, flaky: FAKE_KEYS.flaky, quiet: FAKE_KEYS.quiet });
  assert.equal(setup.provider.status, 201, JSON.stringify(setup.provider.body));
  assert.equal(setup.quiet.status, 201, JSON.stringify(setup.quiet.body));
  assert.equal(setup.key.status, 201, JSON.stringify(setup.key.body));
  const key = setup.key.body.key;
  const chat = async (model) => {
    const reply = await fetch(auxot.url + '/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Say hi from the requests page' }] }),
    });
    assert.equal(reply.status, 200, await reply.clone().text());
    return reply;
  };

  await nav('Requests').click();
  await heading('Requests').waitFor();
  const rows = page.getByTestId('request-row');
  await rows.first().waitFor();
  const before = await rows.count();

  // No reload from here on: the table refreshes itself.
  const failedOver = await chat('gpt-4o-mini');
  assert.equal(failedOver.headers.get('x-auxot-route'), 'openai');
  await rows.nth(before).waitFor({ timeout: 10_000 });
  const first = rows.first();
  await first.getByText('requests-e2e').waitFor();
  await first.locator('.tier-badge').getByText('cloud', { exact: true }).waitFor();
  await first.getByText('openai', { exact: true }).waitFor();
  await first.getByText('1 failover').waitFor();
  await first.getByText('12 / 7').waitFor();
  const cost = first.locator('td[data-label="Cost"] [title^="$"]').first();
  assert.match((await cost.getAttribute('title')) ?? '', /^\$0\.0000\d+$/, 'the exact cost is on hover');
  await first.locator('td[data-label="Cost"]').getByText('< $0.01').first().waitFor();
  for (const column of ['TTFB', 'Total']) {
    assert.match((await first.locator(`td[data-label="${column}"]`).innerText()).trim(), /^\d[\d,.]* (ms|s)$/, `${column} is a duration`);
  }
  await first.getByRole('button', { name: 'Trail' }).click();
  const trail = page.getByTestId('request-trail');
  await trail.locator('li.failed').getByText('flaky').waitFor();
  await trail.locator('li.failed').getByText(/503/).waitFor();
  await trail.locator('li.served').getByText('served it').waitFor();

  // An alias: the model asked and the model served differ.
  await chat('coder');
  await rows.nth(before + 1).waitFor({ timeout: 10_000 });
  await rows.first().locator('td[data-label="Model"]').getByText('coder').waitFor();
  await rows.first().locator('td[data-label="Model"]').getByText('→ gpt-4o-mini').waitFor();

  // An upstream that reports no usage: the tokens are estimated, and the row says so.
  await chat('quiet/gpt-4o-mini');
  await rows.nth(before + 2).waitFor({ timeout: 10_000 });
  const guessed = rows.first().getByTestId('estimated');
  await guessed.getByText('≈ estimated').waitFor();
  assert.match((await guessed.getAttribute('title')) ?? '', /reported no usage/);
  assert.equal(await rows.nth(1).getByTestId('estimated').count(), 0, 'reported counts are not marked');
  const overflow = await page.getByTestId('requests-table').evaluate((table) => table.parentElement.scrollWidth - table.parentElement.clientWidth);
  assert.ok(overflow <= 0, `the requests table fits the page at 1280 px (${overflow} px too wide)`);
  await shot('requests');

  // Filters reach the API and the address bar; the live refresh keeps them.
  await page.getByLabel('Tier').selectOption('cloud');
  await page.getByLabel(/^Model/).fill('coder');
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.waitForFunction(() => window.location.search.includes('tier=cloud') && window.location.search.includes('model=coder'));
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="request-row"] td[data-label="Model"]')].every((td) => td.textContent.startsWith('coder')));
  assert.equal(await rows.count(), 1);
  await chat('coder');
  await rows.nth(1).waitFor({ timeout: 10_000 });
  await page.getByLabel('API key').selectOption({ label: 'e2e-client' });
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.getByText('No requests match.').waitFor();
  await page.getByRole('button', { name: 'Clear' }).click();
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid="request-row"]').length >= n, before + 4);
  assert.ok(!(await page.content()).includes('Say hi from the requests page'), 'no prompt text on the page');

  await page.setViewportSize({ width: 360, height: 740 });
  await page.reload();
  await rows.first().waitFor();
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `no sideways scrolling at 360 px (page is ${width} px wide)`);
  await shot('mobile-requests');
  await page.getByTestId('theme-toggle').click();
  await shot('mobile-requests-dark');
  await page.getByTestId('theme-toggle').click();
  await page.getByTestId('theme-toggle').click();
  await page.setViewportSize({ width: 1280, height: 800 });

  // Usage counts the estimated request too, and marks its tokens.
  await nav('Usage').click();
  await heading('Usage').waitFor();
  const marked = page.locator('.stat').filter({ hasText: 'Tokens' }).getByTestId('estimated');
  const deadline = Date.now() + 15_000;
  while ((await marked.count()) === 0) {
    if (Date.now() > deadline) assert.fail('Usage never marked the estimated tokens');
    await page.waitForTimeout(500);
    await page.getByRole('button', { name: 'Refresh' }).click();
  }
  assert.match((await marked.getAttribute('title')) ?? '', /^[1-9][\d,]* of [\d,]+ requests had no usage/);

  // The Overview's last 24 hours count them and link into Requests, filtered.
  await nav('Overview').click();
  await heading('Overview').waitFor();
  const links = page.getByTestId('last-24h-links');
  await links.getByRole('link', { name: /^cloud \(\d+\)$/ }).click();
  await heading('Requests').waitFor();
  assert.equal(new URL(page.url()).search, '?tier=cloud');
  assert.equal(await page.getByLabel('Tier').inputValue(), 'cloud');
  await rows.first().waitFor();
  const tiers = await page.locator('[data-testid="request-row"] td[data-label="Tier · route"] .tier-badge').allInnerTexts();
  assert.ok(tiers.length > 0 && tiers.every((t) => t.toLowerCase() === 'cloud'), `only cloud rows: ${tiers}`);

  for (const id of [setup.provider.body.id, setup.quiet.body.id]) {
    const removed = await page.evaluate(async (id) => (await fetch(`/api/providers/${id}`, { method: 'DELETE', credentials: 'same-origin' })).status, id);
    assert.equal(removed, 204);
  }
});

step('the Playground sends a chat and shows the routing headers and timing', async () => {
  await nav('Playground').click();
  await heading('Playground').waitFor();
  await page.getByLabel('API key').fill(clientKey);
  await page.getByLabel('Model or alias').fill('gpt-4o-mini');
  await page.getByLabel('Tier').selectOption('cloud');
  await page.getByRole('button', { name: 'Send' }).click();
  const result = page.getByTestId('playground-result');
  await result.waitFor();
  await page.getByTestId('playground-tier').getByText('cloud').waitFor();
  await page.getByTestId('playground-route').getByText('openai').waitFor();
  await page.getByText('Hello from the fake upstream.').waitFor();
  await shot('playground');
});

step('several admins: a viewer reads but cannot change; passwords are reset and changed', async () => {
  await nav('Admins').click();
  await heading('Admins').waitFor();
  await page.getByText('auxot admin reset-password').first().waitFor();
  await page.getByLabel('Username').fill('dana');
  await page.getByLabel('Password', { exact: true }).fill('dana-password');
  await page.getByLabel('Role').selectOption('viewer');
  await page.getByRole('button', { name: 'Add account' }).click();
  await status('Added “dana” as a viewer').waitFor();
  await page.getByLabel('Username').fill('Dana');
  await page.getByLabel('Password', { exact: true }).fill('other-password');
  await page.getByRole('button', { name: 'Add account' }).click();
  await alert('already exists').waitFor();
  await page.getByRole('button', { name: 'Reset the password of dana' }).click();
  await page.getByLabel('New password', { exact: true }).first().fill('dana-password-2');
  await page.getByRole('button', { name: 'Set password' }).click();
  await status('Set a new password for “dana”').waitFor();
  await shot('admins');

  await page.getByRole('button', { name: 'Log out' }).click();
  await heading('Sign in').waitFor();
  await page.getByLabel('Username').fill('dana');
  await page.getByLabel('Password').fill('dana-password-2');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await heading('Overview').waitFor();
  await page.getByTestId('current-user').getByText('viewer').waitFor();
  await nav('API keys').click();
  await heading('API keys').waitFor();
  await page.getByLabel('Key name').fill('viewer-made');
  await page.getByRole('button', { name: 'Create key' }).click();
  await alert('can look but not change anything').waitFor();
  await nav('Admins').click();
  await heading('Admins').waitFor();
  await page.getByLabel('Current password').fill('dana-password-2');
  await page.getByLabel('New password', { exact: true }).last().fill('dana-password-3');
  await page.getByRole('button', { name: 'Change password' }).click();
  await status('Your password is changed').waitFor();

  await page.getByRole('button', { name: 'Log out' }).click();
  await heading('Sign in').waitFor();
  await page.getByLabel('Username').fill(ADMIN.username);
  await page.getByLabel('Password').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await heading('Overview').waitFor();
  await nav('Admins').click();
  await page.getByRole('button', { name: 'Remove dana' }).click();
  await confirmDialog('Remove account');
  await status('Removed “dana”').waitFor();
});

step('an admin downloads a backup from the Admins page', async () => {
  await nav('Admins').click();
  await heading('Admins').waitFor();
  const link = page.getByRole('link', { name: 'Download backup' });
  await link.waitFor();
  assert.equal(await link.getAttribute('href'), '/api/backup');
  const got = await page.evaluate(async () => {
    const response = await fetch('/api/backup', { credentials: 'same-origin' });
    return { status: response.status, disposition: response.headers.get('content-disposition'), size: (await response.arrayBuffer()).byteLength };
  });
  assert.equal(got.status, 200);
  assert.match(got.disposition ?? '', /attachment; filename="auxot-backup-/);
  assert.ok(got.size > 0, 'the backup has content');
});

step('a provider resting after failures shows its cooldown and reason', async () => {
  const until = new Date(Date.now() + 90_000).toISOString();
  await page.route('**/api/providers', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    body.data = body.data.map((p) => ({ ...p, cooldown_until: until, cooldown_reason: '3 failures in a row (502)' }));
    await route.fulfill({ response, json: body });
  });
  try {
    await nav('Providers').click();
    await heading('Providers').waitFor();
    await page.getByTestId('cooldown').first().getByText('3 failures in a row (502)').waitFor();
  } finally {
    await page.unroute('**/api/providers');
  }
});

step('dark mode follows the toggle (and the system), light and dark screenshots', async () => {
  await nav('Overview').click();
  await heading('Overview').waitFor();
  await page.getByTestId('last-24h').waitFor();
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const light = await background();
  const toggle = page.getByTestId('theme-toggle');
  await toggle.click();
  assert.equal(await toggle.getAttribute('aria-label'), 'Theme: dark');
  const dark = await background();
  assert.notEqual(dark, light, 'the dark theme changes the page');
  await shot('overview-dark');
  await page.reload();
  await heading('Overview').waitFor();
  assert.equal(await background(), dark, 'the choice survives a reload');
  await page.setViewportSize({ width: 360, height: 740 });
  await shot('mobile-overview-dark');
  await page.setViewportSize({ width: 1280, height: 800 });
  await toggle.click();
  await toggle.click();
  assert.equal(await toggle.getAttribute('aria-label'), 'Theme: system');
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.equal(await background(), dark, 'the system preference applies');
  await page.emulateMedia({ colorScheme: 'light' });
  assert.equal(await background(), light);
});

step('usage charts render the accounting API’s shape (sample data)', async () => {
  await page.route('**/api/usage?*', (route) => {
    const url = new URL(route.request().url());
    route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(sampleUsage(url.searchParams)) });
  });
  try {
    await nav('Usage').click();
    await heading('Usage').waitFor();
    await page.getByTestId('saved-usd').getByText('$41.35').waitFor();
    await page.getByRole('img', { name: /Requests per day by tier\. Highest: 644 on \w+ \d+/ }).waitFor();
    const legend = page.getByTestId('chart-legend').first();
    for (const tier of ['GPU', 'CLI', 'cloud', 'failed']) await legend.getByText(tier, { exact: true }).waitFor();
    await page.getByRole('radio', { name: 'tokens' }).check();
    await page.getByRole('img', { name: /Tokens per day by tier\. Highest: / }).waitFor();
    await page.getByTestId('latency-table').getByText('1.9 s / 4.2 s / 7.5 s').waitFor();
    await page.getByRole('img', { name: 'p95 total time per day by tier: gpu up to 4.7 s, cli up to 22 s, cloud up to 5.6 s.' }).waitFor();
    await page.getByRole('img', { name: /Cloud spend and spend avoided per day/ }).waitFor();
    await page.getByRole('radio', { name: 'requests' }).check();
    await page.getByRole('img', { name: /Spend per provider: openai \$12\.40, anthropic \$3\.10/ }).waitFor();
    await page.getByTestId('usage-table').getByRole('rowheader', { name: 'gpu' }).waitFor();
    await page.getByLabel('Group by').selectOption('model');
    await page.getByTestId('usage-table').getByRole('rowheader', { name: 'qwen2.5-coder-7b-instruct' }).waitFor();
    await page.getByLabel('Group by').selectOption('tier');
    await page.getByTestId('usage-table').getByRole('rowheader', { name: 'gpu' }).waitFor();
    await shot('usage');

    await page.setViewportSize({ width: 360, height: 740 });
    await page.reload();
    await heading('Usage').waitFor();
    await page.getByTestId('saved-usd').waitFor();
    const usageWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(usageWidth <= 360, `Usage fits 360 px (page is ${usageWidth} px wide)`);
    await shot('mobile-usage');
    await page.getByTestId('theme-toggle').click();
    await shot('mobile-usage-dark');
    await page.getByTestId('theme-toggle').click();
    await page.getByTestId('theme-toggle').click();
  } finally {
    await page.unroute('**/api/usage?*');
  }
});

/** Elements sticking out of the viewport on the right, outside any scrolling box: what a user would see cut off. */
async function clipped() {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const scrolls = (el) => {
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const o = getComputedStyle(p).overflowX;
        if (o === 'auto' || o === 'scroll' || o === 'hidden' || o === 'clip') return true;
      }
      return false;
    };
    const out = [];
    for (const el of document.querySelectorAll('main *, header *')) {
      const box = el.getBoundingClientRect();
      if (box.width === 0 || box.right <= width + 1 || scrolls(el)) continue;
      const name = `${el.tagName.toLowerCase()}${el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : ''}`;
      out.push(`${name} “${(el.textContent ?? '').trim().slice(0, 40)}” ends at ${Math.round(box.right)} px`);
    }
    return out.slice(0, 5);
  });
}

step('every page at 360 px and at desktop width, light and dark: nothing is cut off or scrolls sideways', async () => {
  const pages = ['Overview', 'Requests', 'Usage', 'Playground', 'Assistant', 'Workers', 'Agents', 'API keys', 'Providers', 'Models', 'Routing', 'Admins'];
  const toggle = page.getByTestId('theme-toggle');
  const setTheme = async (want) => {
    for (let i = 0; i < 3 && (await toggle.getAttribute('aria-label')) !== `Theme: ${want}`; i++) await toggle.click();
    assert.equal(await toggle.getAttribute('aria-label'), `Theme: ${want}`);
  };
  for (const [width, height] of [
    [360, 740],
    [1280, 800],
  ]) {
    await page.setViewportSize({ width, height });
    for (const theme of ['light', 'dark']) {
      for (const title of pages) {
        const path = new URL(page.url());
        if (width === 360) {
          await page.getByRole('button', { name: 'Menu' }).click();
        }
        await nav(title).click();
        await heading(title).waitFor();
        await setTheme(theme);
        // Let lists and charts load before measuring.
        await page.waitForLoadState('networkidle').catch(() => {});
        const scroll = await page.evaluate(() => document.documentElement.scrollWidth);
        assert.ok(scroll <= width, `${title} at ${width} px (${theme}) scrolls sideways: ${scroll} px wide (from ${path.pathname})`);
        const cut = await clipped();
        assert.deepEqual(cut, [], `${title} at ${width} px (${theme}) has content cut off`);
        const wide = await page.evaluate(() => [...document.querySelectorAll('.table-wrap')].filter((w) => w.scrollWidth > w.clientWidth + 1).map((w) => `${w.querySelector('caption')?.textContent ?? 'a table'}: ${w.scrollWidth} > ${w.clientWidth} px`));
        assert.deepEqual(wide, [], `${title} at ${width} px (${theme}) has a table that scrolls sideways`);
        const slug = title.toLowerCase().replace(/\W+/g, '-');
        if (width === 360 && ['Overview', 'Workers', 'Playground', 'Admins', 'Models', 'Agents'].includes(title)) {
          await shot(`mobile-${slug}${theme === 'dark' ? '-dark' : ''}`);
        }
        if (width === 1280 && theme === 'dark' && ['Requests', 'Workers', 'API keys', 'Usage'].includes(title)) {
          await shot(`${slug}-dark`);
        }
      }
    }
  }
  await setTheme('system');
});

step('at 360 px the menu folds away and tables become cards', async () => {
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto(auxot.url + '/settings/providers');
  await heading('Providers').waitFor();
  const menu = page.getByRole('button', { name: 'Menu' });
  await menu.waitFor();
  assert.equal(await nav('Models').isVisible(), false, 'the nav is folded');
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `no sideways scrolling at 360 px (page is ${width} px wide)`);
  await shot('mobile-providers');
  await menu.click();
  await nav('Models').waitFor();
  await shot('mobile-menu');
  await nav('Workers').click();
  await heading('Workers').waitFor();
  assert.equal(await nav('Models').isVisible(), false, 'the menu closes after navigating');
  await page.setViewportSize({ width: 1280, height: 800 });
});

step('the keyboard reaches the skip link first and every control shows focus', async () => {
  await page.goto(auxot.url + '/api-keys');
  await heading('API keys').waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
  await page.getByLabel('Key name').focus();
  await page.keyboard.press('Tab');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'the focused control has a visible outline');
});

step('a session that ends mid-use leads to sign-in, then back to the same page', async () => {
  await nav('Workers').click();
  await heading('Workers').waitFor();
  await browser.context.clearCookies();
  // The workers table refreshes every 2 s; its next call gets 401.
  await heading('Sign in').waitFor();
  await status('Your session has ended').waitFor();
  await page.getByLabel('Username').fill(ADMIN.username);
  await page.getByLabel('Password').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await heading('Workers').waitFor();
  assert.equal(new URL(page.url()).pathname, '/workers');
});

step('logging out returns to the sign-in page', async () => {
  await page.getByRole('button', { name: 'Log out' }).click();
  await heading('Sign in').waitFor();
  await status('You are signed out.').waitFor();
  const session = await page.evaluate(async () => (await fetch('/api/session', { credentials: 'same-origin' })).status);
  assert.equal(session, 401);
  await page.goto(auxot.url + '/workers');
  await heading('Sign in').waitFor();
  // The sign-in card is centred on a wide screen and fits a phone, light and dark.
  await page.setViewportSize({ width: 1920, height: 1000 });
  const card = await page.locator('main').getByRole('heading', { name: 'Sign in' }).evaluate((h) => {
    const box = h.closest('section, form, .card, .auth-card')?.getBoundingClientRect() ?? h.getBoundingClientRect();
    return { left: box.left, right: window.innerWidth - box.right };
  });
  assert.ok(Math.abs(card.left - card.right) <= 20, `the sign-in card is centred (${Math.round(card.left)} px left, ${Math.round(card.right)} px right)`);
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.setViewportSize({ width: 360, height: 740 });
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 360, `sign-in fits 360 px (${width} px, ${scheme})`);
    assert.deepEqual(await clipped(), [], `nothing is cut off on the sign-in page (${scheme})`);
    await shot(scheme === 'dark' ? 'mobile-login-dark' : 'mobile-login');
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 1280, height: 800 });
});

/** A week of made-up figures in the shape of GET /api/usage, for the charts. */
function sampleUsage(params) {
  const groupBy = params.get('group_by');
  const from = params.get('from');
  const to = params.get('to');
  const figures = (requests, tokensIn, tokensOut, cost, equivalent) => ({
    requests,
    errors: Math.floor(requests / 97),
    input_tokens: tokensIn,
    output_tokens: tokensOut,
    cost_usd: cost,
    cloud_equivalent_usd: equivalent,
    saved_usd: Math.round((equivalent - cost) * 100) / 100,
  });
  const groups = {
    tier: [
      { key: 'gpu', ...figures(1840, 2_310_000, 604_000, 0, 31.2) },
      { key: 'cli', ...figures(212, 801_000, 188_000, 0, 10.15) },
      { key: 'cloud', ...figures(377, 512_000, 121_000, 15.5, 15.5) },
    ],
    provider: [
      { key: 'openai', ...figures(301, 402_000, 97_000, 12.4, 12.4) },
      { key: 'anthropic', ...figures(76, 110_000, 24_000, 3.1, 3.1) },
    ],
    model: [
      { key: 'qwen2.5-coder-7b-instruct', ...figures(1840, 2_310_000, 604_000, 0, 31.2) },
      { key: 'claude-code', ...figures(212, 801_000, 188_000, 0, 10.15) },
      { key: 'gpt-4o-mini', ...figures(301, 402_000, 97_000, 12.4, 12.4) },
      { key: 'claude-sonnet-4-5', ...figures(76, 110_000, 24_000, 3.1, 3.1) },
    ],
    api_key: [{ key: 'none', ...figures(2429, 3_623_000, 913_000, 15.5, 56.85) }],
    agent: [{ key: 'reviewer', ...figures(120, 301_000, 40_000, 1.2, 3.4) }],
  };
  let list = groups[groupBy];
  if (groupBy === 'day') {
    const start = new Date(from);
    const perDay = [210, 340, 295, 0, 410, 530, 644];
    list = perDay.map((requests, i) => {
      const day = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate() + i)).toISOString().slice(0, 10);
      return { key: day, ...figures(requests, requests * 1490, requests * 376, requests * 0.0064, requests * 0.0234) };
    });
  }
  if (groupBy === 'day_tier') {
    const start = new Date(from);
    const perDay = [210, 340, 295, 0, 410, 530, 644];
    list = perDay.flatMap((requests, i) => {
      const day = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate() + i)).toISOString().slice(0, 10);
      const failed = Math.floor(requests / 40);
      const gpu = Math.round(requests * 0.7);
      const cli = Math.round(requests * 0.1);
      const cloud = requests - failed - gpu - cli;
      return [
        ['gpu', gpu],
        ['cli', cli],
        ['cloud', cloud],
        ['failed', failed],
      ]
        .filter(([, n]) => n > 0)
        .map(([tier, n]) => ({ key: `${day}/${tier}`, ...figures(n, n * 1490, n * 376, tier === 'cloud' ? n * 0.02 : 0, n * 0.0234) }));
    });
  }
  const totals = figures(2429, 3_623_000, 913_000, 15.5, 56.85);
  const latency = [
    { tier: 'gpu', route: 'gpu-box-1', ttfb_p50_ms: 180, ttfb_p95_ms: 420, ttfb_p99_ms: 610, total_p50_ms: 1900, total_p95_ms: 4200, total_p99_ms: 7500, requests: 1840 },
    { tier: 'cli', route: 'laptop-claude', ttfb_p50_ms: 2400, ttfb_p95_ms: 5100, ttfb_p99_ms: 8800, total_p50_ms: 9100, total_p95_ms: 21000, total_p99_ms: 34000, requests: 212 },
    { tier: 'cloud', route: 'openai', ttfb_p50_ms: 310, ttfb_p95_ms: 690, ttfb_p99_ms: 1200, total_p50_ms: 2300, total_p95_ms: 5600, total_p99_ms: 9800, requests: 377 },
  ];
  const start = new Date(from);
  const latency_by_day = [0, 1, 2, 4, 5, 6].flatMap((i) => {
    const day = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate() + i)).toISOString().slice(0, 10);
    return [
      { day, tier: 'gpu', ttfb_p95_ms: 400 + i * 10, total_p50_ms: 1800, total_p95_ms: 4000 + i * 120, requests: 200 },
      { day, tier: 'cli', ttfb_p95_ms: 5000, total_p50_ms: 9000, total_p95_ms: 19_000 + i * 500, requests: 30 },
      { day, tier: 'cloud', ttfb_p95_ms: 700, total_p50_ms: 2300, total_p95_ms: 5600 - i * 100, requests: 50 },
    ];
  });
  return { from, to, group_by: groupBy, groups: list ?? [], totals, latency, latency_by_day };
}
