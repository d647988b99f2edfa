// Assistant: the admin agent. The operator writes in plain language; the agent answers and
// runs admin tools (add a provider, list models, create a worker token…). Each turn is one
// POST answered with server-sent events; past conversations can be reopened.
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import { ApiError, api, describeError, postStream, sentence, seg, type Conversation, type ConversationSummary, type StoredMessage } from '../api';
import { ErrorMessage, Loading, Page, Progress, Section, Time, useResource } from '../components';
import { Link } from '../router';
import { AssistantModel } from './assistant-help';

type Entry =
  | { kind: 'operator'; text: string }
  | { kind: 'assistant'; text: string }
  | { kind: 'tool'; name: string; arguments: unknown; result?: string; ok?: boolean; callId?: string }
  | { kind: 'error'; text: string }
  | { kind: 'notice'; text: string };

/** Rebuilds what the operator saw from the stored (OpenAI-format) messages. */
function entriesOf(messages: StoredMessage[]): Entry[] {
  const entries: Entry[] = [];
  for (const m of messages) {
    if (m.role === 'user') entries.push({ kind: 'operator', text: m.content ?? '' });
    else if (m.role === 'assistant') {
      if (m.content) entries.push({ kind: 'assistant', text: m.content });
      for (const call of m.tool_calls ?? []) {
        let args: unknown = call.function.arguments;
        try {
          args = JSON.parse(call.function.arguments);
        } catch {
          // keep the text
        }
        entries.push({ kind: 'tool', name: call.function.name, arguments: args, callId: call.id });
      }
    } else if (m.role === 'tool') {
      const call = entries.find((e): e is Extract<Entry, { kind: 'tool' }> => e.kind === 'tool' && e.callId === m.tool_call_id && e.result === undefined);
      const result = m.content ?? '';
      const ok = !/^error:/i.test(result.trim());
      if (call) {
        call.result = result;
        call.ok = ok;
      } else entries.push({ kind: 'tool', name: m.name ?? 'tool', arguments: {}, result, ok });
    }
  }
  return entries;
}

/** JSON pretty-printed; anything else as is. */
function pretty(value: unknown): string {
  if (typeof value === 'string') {
    try {
      const parsed = JSON.parse(value);
      if (parsed !== null && typeof parsed === 'object') return JSON.stringify(parsed, null, 2);
    } catch {
      // not JSON
    }
    return value;
  }
  return JSON.stringify(value, null, 2) ?? '';
}

/** A one-line summary of a tool's arguments, e.g. `name: "openai", type: "openai"`. */
function argumentLine(args: unknown): string {
  if (args === null || args === undefined) return '';
  if (typeof args !== 'object') return String(args);
  const parts = Object.entries(args as Record<string, unknown>).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
  const line = parts.join(', ');
  return line.length > 80 ? line.slice(0, 79) + '…' : line;
}

export function AssistantPage() {
  const conversations = useResource(() => api.list<ConversationSummary>('/api/admin-agent/conversations'));
  const [conversationId, setConversationId] = useState<string | null>(null);
  const [entries, setEntries] = useState<Entry[]>([]);
  const [draft, setDraft] = useState('');
  const [running, setRunning] = useState(false);
  const [opening, setOpening] = useState<string | null>(null);
  const [openError, setOpenError] = useState<unknown>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const log = useRef<HTMLOListElement>(null);
  const inputId = useId();
  const hintId = inputId + '-hint';

  useEffect(() => {
    const el = log.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [entries, running]);

  useEffect(() => {
    if (!running) input.current?.focus({ preventScroll: true });
  }, [running]);

  const add = (entry: Entry) => setEntries((list) => [...list, entry]);

  const open = async (id: string) => {
    if (running) return;
    setOpening(id);
    setOpenError(null);
    try {
      const c = await api.get<Conversation>(`/api/admin-agent/conversations/${seg(id)}`);
      setConversationId(c.id);
      setEntries(entriesOf(c.messages));
    } catch (e) {
      setOpenError(e);
    } finally {
      setOpening(null);
    }
  };

  const startNew = () => {
    if (running) return;
    setConversationId(null);
    setEntries([]);
    setOpenError(null);
    input.current?.focus();
  };

  const send = async () => {
    const message = draft.trim();
    if (!message || running) return;
    setRunning(true);
    setDraft('');
    add({ kind: 'operator', text: message });
    const body: { conversation_id?: string; message: string } = { message };
    if (conversationId) body.conversation_id = conversationId;
    let finished = false;
    try {
      await postStream('/api/admin-agent/chat', body, ({ event, data }) => {
        const d = (data ?? {}) as Record<string, unknown>;
        switch (event) {
          case 'conversation':
            if (typeof d.id === 'string') setConversationId(d.id);
            break;
          case 'tool_call':
            add({ kind: 'tool', name: String(d.name ?? 'tool'), arguments: d.arguments });
            break;
          case 'tool_result':
            setEntries((list) => {
              const next = [...list];
              for (let i = next.length - 1; i >= 0; i--) {
                const e = next[i];
                if (e.kind === 'tool' && e.result === undefined && e.name === d.name) {
                  next[i] = { ...e, result: String(d.result ?? ''), ok: d.ok !== false };
                  return next;
                }
              }
              return [...next, { kind: 'tool', name: String(d.name ?? 'tool'), arguments: {}, result: String(d.result ?? ''), ok: d.ok !== false }];
            });
            break;
          case 'message':
            add({ kind: 'assistant', text: String(d.content ?? '') });
            break;
          case 'error':
            add({ kind: 'error', text: sentence(String(d.message ?? 'the agent stopped with an error')) });
            break;
          case 'done':
            finished = true;
            break;
        }
      });
      if (!finished) add({ kind: 'error', text: 'The answer ended early. What already ran is kept: reopen the conversation to see it.' });
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) add({ kind: 'notice', text: e.message });
      else add({ kind: 'error', text: describeError(e) });
      // A refused message was not taken: give it back to edit or resend.
      if (e instanceof ApiError && e.status >= 400) setDraft(message);
    } finally {
      setRunning(false);
      void conversations.reload();
    }
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      void send();
    }
  };

  const list = conversations.data ?? [];

  return (
    <Page title="Assistant" intro="Run auxot in plain language: “Add an OpenAI provider with key sk-…”, “Which workers are busy?”, “How much did we spend on cloud this week?”.">
      <AssistantModel failed={entries.some((e) => e.kind === 'error' && /reachable/i.test(e.text))} />
      <div class="assistant">
        <Section
          title="Conversations"
          actions={
            <button type="button" class="secondary small" onClick={startNew} disabled={running}>
              New conversation
            </button>
          }
        >
          <ErrorMessage title="The conversations could not be loaded." error={conversations.error} onRetry={() => void conversations.reload()} />
          {!conversations.data && conversations.loading ? (
            <Loading what="conversations" />
          ) : list.length === 0 ? (
            <p class="empty">No conversation yet.</p>
          ) : (
            <ul class="conversation-list" aria-label="Past conversations">
              {list.map((c) => (
                <li key={c.id}>
                  <button type="button" class="conversation" aria-current={c.id === conversationId ? 'true' : undefined} disabled={running || opening !== null} onClick={() => void open(c.id)}>
                    <span class="conversation-title">{c.title || 'Untitled'}</span>
                    <span class="muted small">
                      <Time iso={c.updated_at} />
                    </span>
                  </button>
                </li>
              ))}
            </ul>
          )}
        </Section>

        <Section title={conversationId ? 'Conversation' : 'New conversation'}>
          <ErrorMessage title="The conversation could not be opened." error={openError} />
          {opening && <Loading what="the conversation" />}
          <ol class="chat-log" ref={log} aria-label="Messages" aria-live="polite" aria-busy={running}>
            {entries.length === 0 && !opening && (
              <li class="chat-empty muted">
                Ask for something, e.g. “List all available models”. The assistant uses the model set as <code>admin_agent.model</code> (default <code>auto</code>) and shows every action it takes.
              </li>
            )}
            {entries.map((entry, i) => (
              <ChatEntry entry={entry} key={i} />
            ))}
          </ol>
          {running && <Progress>Working…</Progress>}
          <form
            class="chat-form"
            onSubmit={(e) => {
              e.preventDefault();
              void send();
            }}
          >
            <label for={inputId}>Message</label>
            <textarea
              ref={input}
              id={inputId}
              name="message"
              rows={3}
              value={draft}
              disabled={running}
              aria-describedby={hintId}
              onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
              onKeyDown={onKeyDown}
            />
            <p class="hint" id={hintId}>
              Enter sends, Shift+Enter starts a new line. Keys you paste (<code>sk-…</code>, <code>aux_…</code>, long tokens) are replaced by placeholders such as <code>[[secret:1]]</code> before any model sees them
              or anything is stored; auxot puts the real key back only when it runs the action.
            </p>
            <div class="button-row">
              <button type="submit" class="primary" disabled={running || draft.trim() === ''}>
                {running ? 'Working…' : 'Send'}
              </button>
            </div>
          </form>
        </Section>
      </div>
    </Page>
  );
}

function ChatEntry(props: { entry: Entry }) {
  const e = props.entry;
  switch (e.kind) {
    case 'operator':
      return (
        <li class="chat-msg chat-operator">
          <span class="chat-who">You</span>
          <div class="chat-text">{e.text}</div>
        </li>
      );
    case 'assistant':
      return (
        <li class="chat-msg chat-assistant">
          <span class="chat-who">Assistant</span>
          <div class="chat-text">{e.text}</div>
        </li>
      );
    case 'tool': {
      const state = e.result === undefined ? 'running' : e.ok ? 'ok' : 'failed';
      return (
        <li class="chat-tool">
          <details>
            <summary>
              <span class={`tool-state tool-${state}`}>{state === 'running' ? 'running' : state === 'ok' ? 'done' : 'failed'}</span> <code class="tool-name">{e.name}</code>{' '}
              <span class="tool-args muted">{argumentLine(e.arguments)}</span>
            </summary>
            <div class="tool-body">
              <p class="small muted">Arguments</p>
              <pre>{pretty(e.arguments)}</pre>
              {e.result !== undefined && (
                <>
                  <p class="small muted">Result</p>
                  <pre>{pretty(e.result)}</pre>
                </>
              )}
            </div>
          </details>
        </li>
      );
    }
    case 'error':
      return (
        <li class="chat-error">
          <div class="message error" role="alert">
            <span>{e.text}</span>
            {/reachable|provider/i.test(e.text) && (
              <span>
                {' '}
                See the advice above the conversation, or <Link href="/settings/providers">Settings → Providers</Link>.
              </span>
            )}
          </div>
        </li>
      );
    case 'notice':
      return (
        <li class="chat-error">
          <div class="message info" role="status">
            {e.text}
          </div>
        </li>
      );
  }
}
