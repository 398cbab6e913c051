// The admin centre's web UI: sign-in with a token, then the pages (hash routes) over the admin API.
// Everything a sender controls (subjects, addresses, HELO names, certificate subjects) is rendered
// by Preact as text, never as markup; the server's CSP forbids inline scripts besides.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiFailure, getToken, setToken } from './api.ts';
import {
  AuditPage,
  CertificatesPage,
  ConnectorsPage,
  DashboardPage,
  MessagePage,
  QueuePage,
  ReportsPage,
  TracePage,
} from './pages.tsx';
import './style.css';

interface Me {
  name: string;
  org: string | null;
  scope: string;
  organizations: string[];
}

const PAGES = [
  ['dashboard', 'Dashboard'],
  ['trace', 'Message trace'],
  ['queue', 'Queue'],
  ['connectors', 'Connectors'],
  ['certificates', 'Certificates'],
  ['reports', 'TLS reports'],
  ['audit', 'Audit log'],
] as const;

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function SignIn({ onSignedIn, error }: { onSignedIn: (me: Me) => void; error?: string }) {
  const [value, setValue] = useState('');
  const [problem, setProblem] = useState(error ?? '');
  const submit = async (e: Event) => {
    e.preventDefault();
    setToken(value.trim());
    try {
      onSignedIn(await api<Me>('GET', '/api/v1/me'));
    } catch (err) {
      setToken(null);
      setProblem(
        err instanceof ApiFailure && err.status === 401
          ? 'This token is not valid (unknown or revoked).'
          : String((err as Error).message),
      );
    }
  };
  return (
    <main class="signin">
      <h1>Portcullis admin centre</h1>
      <form onSubmit={submit}>
        <label for="token">Admin token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          required
          value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
        />
        <p class="hint">
          Make one on the gateway with <code>portcullis admin token create --name NAME [--org ORG]</code>. It is kept
          only in this browser tab.
        </p>
        <button type="submit">Sign in</button>
        {problem && (
          <p class="error" role="alert">
            {problem}
          </p>
        )}
      </form>
    </main>
  );
}

function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [checked, setChecked] = useState(false);
  const hash = useHash();
  useEffect(() => {
    if (!getToken()) {
      setChecked(true);
      return;
    }
    api<Me>('GET', '/api/v1/me')
      .then(setMe, () => setToken(null))
      .finally(() => setChecked(true));
  }, []);
  if (!checked) return <p class="loading">Loading…</p>;
  if (!me)
    return (
      <SignIn
        onSignedIn={(m) => {
          setMe(m);
          if (!location.hash) location.hash = '#/dashboard';
        }}
      />
    );
  const [, page = 'dashboard', arg] = hash.split('/');
  const signOut = () => {
    setToken(null);
    setMe(null);
    location.hash = '';
  };
  return (
    <div class="shell">
      <header>
        <span class="brand">Portcullis</span>
        <nav aria-label="Pages">
          {PAGES.map(([id, label]) => (
            <a href={`#/${id}`} aria-current={page === id ? 'page' : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who">
          {me.name} · {me.org === null ? 'all organizations' : `organization ${me.org}`}
        </span>
        <button type="button" class="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main id="main">
        {page === 'dashboard' && <DashboardPage orgs={me.organizations} global={me.org === null} />}
        {page === 'trace' && <TracePage />}
        {page === 'messages' && arg && <MessagePage id={decodeURIComponent(arg)} />}
        {page === 'queue' && <QueuePage />}
        {page === 'connectors' && <ConnectorsPage />}
        {page === 'certificates' && <CertificatesPage />}
        {page === 'reports' && <ReportsPage />}
        {page === 'audit' && <AuditPage />}
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
