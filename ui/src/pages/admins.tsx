// Admins: the accounts that can sign in, their roles (admin or read-only viewer), resetting
// another's password, changing your own, and what to do when everyone is locked out.
import { useState } from 'preact/hooks';
import { api, describeError, seg, type AdminAccount, type AdminRole } from '../api';
import { isViewer } from '../role';
import { CodeBox, DataTable, ErrorMessage, Field, FocusedSection, Loading, Notice, Page, Pill, Section, Time, confirmAction, inputValue, useAction, useResource } from '../components';

export function AdminsPage() {
  const admins = useResource(() => api.list<AdminAccount>('/api/admins'));
  const session = useResource(() => api.get<{ username?: string; role?: AdminRole }>('/api/session'));
  const me = session.data?.username;
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<AdminRole>('admin');
  const [notice, setNotice] = useState<string | null>(null);
  const [rowError, setRowError] = useState<string | null>(null);
  const [resetting, setResetting] = useState<AdminAccount | null>(null);
  const action = useAction();

  const create = (event: Event) => {
    event.preventDefault();
    setNotice(null);
    void action.run(async () => {
      const created = await api.post<AdminAccount>('/api/admins', { username: username.trim(), password, role });
      setNotice(`Added “${created.username}” as ${created.role === 'viewer' ? 'a viewer (read-only)' : 'an admin'}. Give them the password through a safe channel.`);
      setUsername('');
      setPassword('');
      await admins.reload();
    });
  };

  const remove = async (account: AdminAccount) => {
    setRowError(null);
    setNotice(null);
    const ok = await confirmAction(`Remove the account “${account.username}”?`, <p>They are signed out at once and cannot sign in again.</p>, 'Remove account');
    if (!ok) return;
    try {
      await api.delete(`/api/admins/${seg(account.username)}`);
      setNotice(`Removed “${account.username}”.`);
      await admins.reload();
    } catch (e) {
      setRowError(`“${account.username}” was not removed: ${describeError(e)}`);
    }
  };

  const changeRole = async (account: AdminAccount, next: AdminRole) => {
    setRowError(null);
    setNotice(null);
    try {
      await api.patch(`/api/admins/${seg(account.username)}`, { role: next });
      setNotice(`“${account.username}” is now ${next === 'viewer' ? 'a viewer (read-only)' : 'an admin'}.`);
      await admins.reload();
    } catch (e) {
      setRowError(`The role of “${account.username}” was not changed: ${describeError(e)}`);
    }
  };

  return (
    <Page title="Admins" intro="Everyone who can sign in to this console. Admins change anything; viewers see every page but change nothing.">
      <Section title="Add an account">
        <form class="inline-form" onSubmit={create}>
          <Field label="Username">
            {(p) => <input {...p} name="new_username" required maxLength={64} autoComplete="off" value={username} onInput={(e) => setUsername(inputValue(e))} />}
          </Field>
          <Field label="Password" hint="At least 8 characters.">
            {(p) => <input {...p} name="new_password" type="password" required minLength={8} autoComplete="new-password" value={password} onInput={(e) => setPassword(inputValue(e))} />}
          </Field>
          <Field label="Role">
            {(p) => (
              <select {...p} name="new_role" value={role} onChange={(e) => setRole((e.target as HTMLSelectElement).value as AdminRole)}>
                <option value="admin">admin: can change everything</option>
                <option value="viewer">viewer: read-only dashboards</option>
              </select>
            )}
          </Field>
          <button type="submit" class="primary" disabled={action.busy}>
            {action.busy ? 'Adding…' : 'Add account'}
          </button>
        </form>
        <ErrorMessage title="The account was not added." error={action.error} />
      </Section>
      <Section title="Accounts">
        {notice && <Notice kind="success">{notice}</Notice>}
        <ErrorMessage error={rowError} />
        <ErrorMessage title="The accounts could not be loaded." error={admins.error} onRetry={() => void admins.reload()} />
        {!admins.data && admins.loading ? (
          <Loading what="accounts" />
        ) : (
          <DataTable
            caption="Admin accounts"
            rows={admins.data ?? []}
            rowKey={(a) => a.username}
            empty="No accounts."
            columns={[
              {
                label: 'Username',
                render: (a) => (
                  <>
                    <strong>{a.username}</strong>
                    {a.username === me && <span class="muted"> (you)</span>}
                  </>
                ),
              },
              { label: 'Role', render: (a) => <Pill kind={a.role === 'admin' ? 'busy' : 'ok'}>{a.role}</Pill> },
              { label: 'Added', render: (a) => <Time iso={a.created_at} /> },
              {
                label: 'Actions',
                class: 'actions',
                render: (a) =>
                  a.username === me ? (
                    <span class="muted small">change your password below</span>
                  ) : (
                    <div class="button-row">
                      <button type="button" class="secondary small" aria-label={`Make ${a.username} ${a.role === 'admin' ? 'a viewer' : 'an admin'}`} onClick={() => void changeRole(a, a.role === 'admin' ? 'viewer' : 'admin')}>
                        {a.role === 'admin' ? 'Make viewer' : 'Make admin'}
                      </button>
                      <button type="button" class="secondary small" aria-label={`Reset the password of ${a.username}`} onClick={() => setResetting(a)}>
                        Reset password
                      </button>
                      <button type="button" class="secondary small danger-text" aria-label={`Remove ${a.username}`} onClick={() => void remove(a)}>
                        Remove
                      </button>
                    </div>
                  ),
              },
            ]}
          />
        )}
      </Section>
      {resetting && (
        <ResetForm
          key={resetting.username}
          account={resetting}
          onClose={() => setResetting(null)}
          onDone={() => {
            setNotice(`Set a new password for “${resetting.username}”; their sessions ended.`);
            setResetting(null);
          }}
        />
      )}
      <OwnPassword />
      <Section title="Locked out?">
        <p>If nobody can sign in, reset a password on the server itself (as the user that runs auxot, with the same data directory):</p>
        <CodeBox label="Reset a password from the command line" value="auxot admin reset-password --data-dir /var/lib/auxot admin" />
        <p class="hint">It asks for the new password (or reads it from standard input) and ends that account's sessions.</p>
      </Section>
      <Section title="Backup">
        <p>A consistent snapshot of the whole database, taken while auxot runs. Provider keys stay sealed in it: restoring needs the same secret key, so keep the key apart from the backups.</p>
        {isViewer() ? (
          <p class="hint">Only admins can download a backup.</p>
        ) : (
          <a class="button-link" href="/api/backup" download>
            Download backup
          </a>
        )}
        <CodeBox label="Restore it on the server (auxot stopped)" value="auxot restore auxot-backup.redb --data-dir /var/lib/auxot --secret-key-file /etc/auxot/secret.key" />
      </Section>
    </Page>
  );
}

function ResetForm(props: { account: AdminAccount; onClose: () => void; onDone: () => void }) {
  const [password, setPassword] = useState('');
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    void action.run(async () => {
      await api.patch(`/api/admins/${seg(props.account.username)}`, { password });
      props.onDone();
    });
  };
  return (
    <FocusedSection
      title={`New password for “${props.account.username}”`}
      actions={
        <button type="button" class="secondary small" onClick={props.onClose}>
          Close
        </button>
      }
    >
      <form class="inline-form" onSubmit={submit}>
        <Field label="New password" hint="At least 8 characters. Their open sessions end.">
          {(p) => <input {...p} name="reset_password" type="password" required minLength={8} autoComplete="new-password" value={password} onInput={(e) => setPassword(inputValue(e))} />}
        </Field>
        <button type="submit" class="primary" disabled={action.busy}>
          {action.busy ? 'Saving…' : 'Set password'}
        </button>
      </form>
      <ErrorMessage title="The password was not changed." error={action.error} />
    </FocusedSection>
  );
}

function OwnPassword() {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [done, setDone] = useState(false);
  const action = useAction();
  const submit = (event: Event) => {
    event.preventDefault();
    setDone(false);
    void action.run(async () => {
      await api.post('/api/session/password', { current_password: current, new_password: next });
      setCurrent('');
      setNext('');
      setDone(true);
    });
  };
  return (
    <Section title="Your password">
      <form class="inline-form" onSubmit={submit}>
        <Field label="Current password">
          {(p) => <input {...p} name="current_password" type="password" required autoComplete="current-password" value={current} onInput={(e) => setCurrent(inputValue(e))} />}
        </Field>
        <Field label="New password" hint="At least 8 characters. Your other sessions end.">
          {(p) => <input {...p} name="new_password" type="password" required minLength={8} autoComplete="new-password" value={next} onInput={(e) => setNext(inputValue(e))} />}
        </Field>
        <button type="submit" class="primary" disabled={action.busy}>
          {action.busy ? 'Changing…' : 'Change password'}
        </button>
      </form>
      {done && <Notice kind="success">Your password is changed. Other browsers signed in as you were signed out.</Notice>}
      <ErrorMessage title="Your password was not changed." error={action.error} />
    </Section>
  );
}
