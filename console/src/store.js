// The caseload, loaded once per sign-in and kept current by the live streams; the views
// (caseload, map, team) read it and subscribe to its changes.
import { all, api, me } from './api.js';
import { subscribe } from './live.js';

export const store = {
  cases: new Map(), // id -> CaseLive
  users: new Map(), // id -> UserPublic (the caller and, for supervisors/admins, the users)
  loaded: false,
  loading: null,
};
const watchers = new Set();

export function watch(fn) { watchers.add(fn); return () => watchers.delete(fn); }
function changed(ids, full = false) { for (const fn of watchers) fn(ids, full); }

export function reset() {
  store.cases.clear();
  store.users.clear();
  store.loaded = false;
  store.loading = null;
}

export function loadCaseload(onPage) {
  if (store.loaded) { if (onPage) onPage(); return Promise.resolve(); }
  if (store.loading) return store.loading.then(() => onPage && onPage());
  store.loading = (async () => {
    const who = me();
    store.users.set(who.id, who);
    const usersP = who.role === 'officer' ? Promise.resolve([])
      : all('/users').catch(() => []);
    await all('/cases', (items) => {
      for (const c of items) store.cases.set(c.id, c);
      if (onPage) onPage();
      changed(null, true);
    }, 50);
    for (const u of await usersP) store.users.set(u.id, u);
    store.loaded = true;
    changed(null, true);
  })();
  return store.loading;
}

export function officerName(id) {
  const u = store.users.get(id);
  return u ? (u.full_name || u.username) : '—';
}

const refetching = new Map();
/** Reload one case's live row (after an alert about it), at most once per 300 ms. */
export function refreshCase(id) {
  if (refetching.has(id)) return;
  refetching.set(id, setTimeout(async () => {
    refetching.delete(id);
    try {
      const c = await api(`/cases/${id}`);
      store.cases.set(id, c);
      changed([id]);
    } catch { /* gone from scope */ }
  }, 300));
}

subscribe('position', (p) => {
  const c = store.cases.get(p.case_id);
  if (!c) return;
  if (c.last_fix && new Date(c.last_fix.ts) >= new Date(p.ts)) return;
  c.last_fix = { ts: p.ts, lat: p.lat, lon: p.lon, acc: p.acc };
  changed([p.case_id]);
});

const VIOLATIONS = new Set(['exclusion_zone_entered', 'inclusion_zone_left', 'strap_tamper',
  'case_tamper']);

subscribe('alert', (a) => {
  const c = store.cases.get(a.case_id);
  if (c && a.episode_open && VIOLATIONS.has(a.type) && c.compliance !== 'violation') {
    c.compliance = 'violation'; // at once; the row is reloaded for the rest
    changed([a.case_id]);
  }
  refreshCase(a.case_id);
});
