// The API client. The session (access token; the refresh token, used only to revoke the
// session on sign-out) lives in this module's memory only: never in localStorage or a cookie. A 401 or the token's expiry asks for sign-in again over the
// current page (its state kept), then the request is retried.
import { lang } from './i18n.js';

const session = { token: null, refresh: null, setupToken: null, expiresAt: 0, me: null, timer: null };
const listeners = { signin: [], expire: [] };
let waiting = null; // a promise resolved at the next sign-in

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
  /** field name -> message, from a 422's `errors`. */
  fieldErrors() {
    const out = {};
    for (const e of this.problem.errors || []) out[e.field] = e.message;
    return out;
  }
}

export function on(event, fn) { listeners[event].push(fn); }
export function me() { return session.me; }
export function token() { return session.token; }

function emit(event, arg) { for (const fn of listeners[event]) fn(arg); }

export function waitForSignIn() {
  if (!waiting) {
    let resolve;
    waiting = new Promise((r) => { resolve = r; });
    waiting.resolve = resolve;
  }
  return waiting;
}

/** Sign in; `totp`: the current code when the user has a second factor. Answers
 * `{ setup: true }` for a `totp_setup` token (the second factor must be set up first: see
 * `totpSetup`), the caller otherwise. A 401 `totp_required` is thrown as an ApiError. */
export async function signIn(username, password, totp) {
  const body = new URLSearchParams({ username, password, grant_type: 'password' });
  if (totp) body.set('totp', totp);
  const r = await fetch('/api/v1/auth/token', {
    method: 'POST', body, headers: { 'Accept-Language': lang() },
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data);
  if (data.scope === 'totp_setup') {
    session.setupToken = data.access_token;
    return { setup: true };
  }
  session.setupToken = null;
  const previous = session.me;
  session.token = data.access_token;
  session.refresh = data.refresh_token || null;
  session.expiresAt = Date.now() + data.expires_in * 1000;
  clearTimeout(session.timer);
  session.timer = setTimeout(() => expire('expired'), data.expires_in * 1000);
  session.me = await request('GET', '/me');
  const sameUser = previous && previous.id === session.me.id;
  emit('signin', { sameUser });
  if (waiting) { const w = waiting; waiting = null; w.resolve(); }
  return session.me;
}

/** `POST /me/totp` with the setup token: `enable` (a new secret and its otpauth URI) or
 * `confirm` with a code. The setup token is forgotten once the factor is on. */
export async function totpSetup(action, code) {
  const r = await fetch('/api/v1/me/totp', {
    method: 'POST',
    headers: { Authorization: `Bearer ${session.setupToken}`, 'Accept-Language': lang(),
      'Content-Type': 'application/json' },
    body: JSON.stringify(code ? { action, code } : { action }),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data);
  if (action === 'confirm') session.setupToken = null;
  return data;
}

export function forgetSetup() { session.setupToken = null; }

/** Forget the token; `reason`: 'expired' (keep the page) or 'signout'. */
export function expire(reason) {
  if (!session.token && reason !== 'signout') return;
  session.token = null;
  clearTimeout(session.timer);
  if (reason === 'signout') session.me = null;
  if (session.refresh) { // revoked on the server too (the next sign-in gives a new one)
    fetch('/api/v1/auth/logout', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: session.refresh }),
    }).catch(() => {});
    session.refresh = null;
  }
  emit('expire', reason);
}

async function request(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}`, 'Accept-Language': lang() };
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const r = await fetch(`/api/v1${path}`, { method, headers, body: payload });
  if (r.status === 401) return { retry: true };
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

/** A request on behalf of the signed-in user; waits for (re-)sign-in when needed. */
export async function api(path, { method = 'GET', body } = {}) {
  for (;;) {
    if (!session.token) await waitForSignIn();
    const out = await request(method, path, body);
    if (out && out.retry === true && Object.keys(out).length === 1) {
      expire('expired');
      continue;
    }
    return out;
  }
}

/** Every item of a paginated list; `first`: the size of the first page (a small one shows
 * something sooner), then pages of 500. */
export async function all(path, onPage, first = 500) {
  const items = [];
  let cursor = null;
  const sep = path.includes('?') ? '&' : '?';
  do {
    const limit = items.length ? 500 : first;
    const url = `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = await api(url);
    items.push(...page.items);
    if (onPage) onPage(items, page.next_cursor !== null);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** Download a file the API makes (a PDF report) with the in-memory token: fetched as a
 * blob and saved under `filename` (a plain link could not carry the bearer token). */
export async function download(path, filename) {
  for (;;) {
    if (!session.token) await waitForSignIn();
    const r = await fetch(`/api/v1${path}`, {
      headers: { Authorization: `Bearer ${session.token}`, 'Accept-Language': lang() },
    });
    if (r.status === 401) { expire('expired'); continue; }
    if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    return blob.size;
  }
}

/** Remember the caller's language on the server (`PATCH /me`), for any browser. */
export async function saveLanguage(language) {
  if (!session.token || !session.me) return;
  try {
    session.me = await api('/me', { method: 'PATCH', body: { language } });
  } catch { /* kept locally; the next switch tries again */ }
}
