// The app: decides between setup, login and the signed-in shell, and maps paths to pages.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, api, describeError, setSessionLostHandler } from './api';
import { ConfirmHost, ErrorMessage, Loading, Page } from './components';
import { Link, currentPath, navigate, usePath } from './router';
import { LoginPage, SetupPage } from './pages/auth';
import { OverviewPage } from './pages/overview';
import { ProvidersPage } from './pages/providers';
import { ModelsPage } from './pages/models';
import { RoutingPage } from './pages/routing';
import { WorkersPage } from './pages/workers';
import { AgentsPage } from './pages/agents';
import { ApiKeysPage } from './pages/apikeys';
import { UsagePage } from './pages/usage';
import { AssistantPage } from './pages/assistant';
import { RequestsPage } from './pages/requests';
import { AdminsPage } from './pages/admins';
import { PlaygroundPage } from './pages/playground';
import { ThemeToggle } from './theme';
import { setRole, type Role } from './role';

type Auth =
  | { state: 'checking' }
  | { state: 'unreachable'; error: unknown }
  | { state: 'setup' }
  | { state: 'login'; notice?: string; username?: string }
  | { state: 'ready'; username: string; role: Role };

interface NavItem {
  href: string;
  label: string;
}

const NAV: { group?: string; items: NavItem[] }[] = [
  {
    items: [
      { href: '/', label: 'Overview' },
      { href: '/requests', label: 'Requests' },
      { href: '/usage', label: 'Usage' },
      { href: '/playground', label: 'Playground' },
      { href: '/assistant', label: 'Assistant' },
      { href: '/workers', label: 'Workers' },
      { href: '/agents', label: 'Agents' },
      { href: '/api-keys', label: 'API keys' },
    ],
  },
  {
    group: 'Settings',
    items: [
      { href: '/settings/providers', label: 'Providers' },
      { href: '/settings/models', label: 'Models' },
      { href: '/settings/routing', label: 'Routing' },
      { href: '/settings/admins', label: 'Admins' },
    ],
  },
];

const PUBLIC_ROUTES = new Set(['/setup', '/login']);

/** Where to go after signing in: the page the user first asked for. */
let afterLogin = '/';

export function App() {
  const [auth, setAuth] = useState<Auth>({ state: 'checking' });

  const check = async () => {
    setAuth({ state: 'checking' });
    try {
      const { needs_setup } = await api.get<{ needs_setup: boolean }>('/api/setup');
      if (needs_setup) {
        setAuth({ state: 'setup' });
        navigate('/setup', { replace: true });
        return;
      }
      try {
        const session = await api.get<{ username?: string; role?: Role }>('/api/session');
        setRole(session.role ?? 'admin');
        setAuth({ state: 'ready', username: session.username ?? 'admin key', role: session.role ?? 'admin' });
        if (PUBLIC_ROUTES.has(currentPath())) navigate('/', { replace: true });
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) throw e;
        if (!PUBLIC_ROUTES.has(currentPath())) afterLogin = currentPath();
        setAuth({ state: 'login' });
        navigate('/login', { replace: true });
      }
    } catch (e) {
      setAuth({ state: 'unreachable', error: e });
    }
  };

  useEffect(() => {
    void check();
    setSessionLostHandler(() => {
      if (!PUBLIC_ROUTES.has(currentPath())) afterLogin = currentPath();
      setAuth({ state: 'login', notice: 'Your session has ended. Sign in again to continue.' });
      navigate('/login', { replace: true });
    });
    return () => setSessionLostHandler(null);
  }, []);

  const signedIn = () => {
    const target = afterLogin;
    afterLogin = '/';
    // The session says which role this account has.
    navigate(target, { replace: true });
    void check();
  };

  switch (auth.state) {
    case 'checking':
      return (
        <main class="auth" id="main">
          <Loading what="auxot" />
        </main>
      );
    case 'unreachable':
      return (
        <main class="auth" id="main">
          <div class="auth-card">
            <h1>auxot cannot be reached</h1>
            <ErrorMessage error={auth.error} onRetry={() => void check()} />
          </div>
        </main>
      );
    case 'setup':
      return (
        <SetupPage
          onDone={(username) => {
            setAuth({ state: 'login', notice: `The admin account “${username}” is ready. Sign in with it.`, username });
            navigate('/login', { replace: true });
          }}
        />
      );
    case 'login':
      return <LoginPage notice={auth.notice} username={auth.username} onDone={signedIn} />;
    case 'ready':
      return (
        <Shell
          username={auth.username}
          role={auth.role}
          onSignedOut={() => {
            setAuth({ state: 'login', notice: 'You are signed out.' });
            navigate('/login', { replace: true });
          }}
        />
      );
  }
}

function Shell(props: { username: string; role: Role; onSignedOut: () => void }) {
  const path = usePath();
  const [menuOpen, setMenuOpen] = useState(false);
  const [logoutError, setLogoutError] = useState<unknown>(null);
  const [loggingOut, setLoggingOut] = useState(false);

  useEffect(() => setMenuOpen(false), [path]);

  const logout = async () => {
    setLoggingOut(true);
    setLogoutError(null);
    try {
      await api.post('/api/logout');
      props.onSignedOut();
    } catch (e) {
      setLogoutError(e);
      setLoggingOut(false);
    }
  };

  return (
    <div class="shell">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/" class="brand">
          <span class="logo" aria-hidden="true">
            a
          </span>{' '}
          auxot
        </Link>
        <div class="user">
          <span class="muted user-name" data-testid="current-user">
            Signed in as <strong>{props.username}</strong>
            {props.role === 'viewer' && <span class="pill pill-off">viewer</span>}
          </span>
          <ThemeToggle />
          <button type="button" class="secondary small" onClick={() => void logout()} disabled={loggingOut}>
            {loggingOut ? 'Logging out…' : 'Log out'}
          </button>
          <button type="button" class="menu-toggle secondary small" aria-expanded={menuOpen} aria-controls="nav" onClick={() => setMenuOpen(!menuOpen)}>
            Menu
          </button>
        </div>
      </header>
      <nav id="nav" class={menuOpen ? 'open' : ''} aria-label="Main">
        {NAV.map((section) => (
          <div class="nav-section">
            {section.group && <p class="nav-group">{section.group}</p>}
            <ul>
              {section.items.map((item) => (
                <li>
                  <Link href={item.href} aria-current={isCurrent(path, item.href) ? 'page' : undefined}>
                    {item.label}
                  </Link>
                </li>
              ))}
            </ul>
          </div>
        ))}
      </nav>
      <main id="main" class={props.role === 'viewer' ? 'read-only' : ''}>
        {props.role === 'viewer' && (
          <p class="message info" role="status">
            You are signed in as a viewer: you can look at everything but not change it.
          </p>
        )}
        {logoutError ? <ErrorMessage title="Logging out failed." error={describeError(logoutError)} /> : null}
        <Route path={path} key={path} />
      </main>
      <ConfirmHost />
    </div>
  );
}

function isCurrent(path: string, href: string): boolean {
  return href === '/' ? path === '/' : path === href || path.startsWith(href + '/');
}

function Route(props: { path: string }): ComponentChildren {
  const path = props.path.replace(/\/+$/, '') || '/';
  switch (path) {
    case '/':
      return <OverviewPage />;
    case '/settings':
    case '/settings/providers':
      return <ProvidersPage />;
    case '/settings/models':
      return <ModelsPage />;
    case '/settings/routing':
      return <RoutingPage />;
    case '/workers':
      return <WorkersPage />;
    case '/agents':
      return <AgentsPage />;
    case '/api-keys':
      return <ApiKeysPage />;
    case '/usage':
      return <UsagePage />;
    case '/assistant':
      return <AssistantPage />;
    case '/requests':
      return <RequestsPage />;
    case '/playground':
      return <PlaygroundPage />;
    case '/settings/admins':
      return <AdminsPage />;
    default:
      return (
        <Page title="Page not found">
          <p>
            There is no page at <code>{props.path}</code>. <Link href="/">Go to the overview</Link>.
          </p>
        </Page>
      );
  }
}
