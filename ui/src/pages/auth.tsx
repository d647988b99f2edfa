// The two pages seen before signing in: first-run setup and login.
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api';
import { ErrorMessage, Field, Notice, inputValue, useAction } from '../components';

function AuthCard(props: { title: string; intro: string; children: preact.ComponentChildren }) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${props.title} · auxot`;
  }, [props.title]);
  return (
    <main class="auth" id="main">
      <div class="auth-card">
        <p class="brand auth-brand" aria-hidden="true">
          <span class="logo">a</span> auxot
        </p>
        <h1 ref={heading} tabIndex={-1}>
          {props.title}
        </h1>
        <p class="intro">{props.intro}</p>
        {props.children}
      </div>
    </main>
  );
}

export function SetupPage(props: { onDone: (username: string) => void }) {
  const [username, setUsername] = useState('admin');
  const [password, setPassword] = useState('');
  const [repeat, setRepeat] = useState('');
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    if (password.length < 8) {
      action.setError('The password needs at least 8 characters.');
      return;
    }
    if (password !== repeat) {
      action.setError('The two passwords are not the same. Type them again.');
      return;
    }
    void action.run(async () => {
      const created = await api.post<{ username: string }>('/api/setup', { username: username.trim(), password });
      props.onDone(created.username);
    });
  };
  return (
    <AuthCard title="Set up auxot" intro="No admin account exists yet. Create the first one: it manages providers, workers, keys and agents.">
      <form onSubmit={submit} class="stack">
        <Field label="Username">{(p) => <input {...p} name="username" autoComplete="username" required value={username} onInput={(e) => setUsername(inputValue(e))} />}</Field>
        <Field label="Password" hint="At least 8 characters.">
          {(p) => <input {...p} name="password" type="password" autoComplete="new-password" required value={password} onInput={(e) => setPassword(inputValue(e))} />}
        </Field>
        <Field label="Repeat the password">
          {(p) => <input {...p} name="repeat" type="password" autoComplete="new-password" required value={repeat} onInput={(e) => setRepeat(inputValue(e))} />}
        </Field>
        <ErrorMessage error={action.error} />
        <button type="submit" class="primary wide" disabled={action.busy}>
          {action.busy ? 'Creating the admin…' : 'Create admin account'}
        </button>
      </form>
    </AuthCard>
  );
}

export function LoginPage(props: { notice?: string; username?: string; onDone: (username: string) => void }) {
  const [username, setUsername] = useState(props.username ?? '');
  const [password, setPassword] = useState('');
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      const session = await api.post<{ username: string }>('/api/login', { username: username.trim(), password });
      props.onDone(session.username);
    });
  };
  return (
    <AuthCard title="Sign in" intro="Sign in with an auxot admin account.">
      {props.notice && <Notice>{props.notice}</Notice>}
      <form onSubmit={submit} class="stack">
        <Field label="Username">{(p) => <input {...p} name="username" autoComplete="username" required value={username} onInput={(e) => setUsername(inputValue(e))} />}</Field>
        <Field label="Password">
          {(p) => <input {...p} name="password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword(inputValue(e))} />}
        </Field>
        <ErrorMessage error={action.error} />
        <button type="submit" class="primary wide" disabled={action.busy}>
          {action.busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </AuthCard>
  );
}
