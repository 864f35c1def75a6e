// Catalogues (i18n/<lang>.json), the current language, and Intl formatting.
export const LANGS = ['kk', 'ru', 'en'];
const catalogues = {};
let current = 'en';

export async function loadCatalogues() {
  await Promise.all(LANGS.map(async (l) => {
    const r = await fetch(`/console/i18n/${l}.json`);
    catalogues[l] = await r.json();
  }));
}

export function lang() { return current; }

export function setLang(l) {
  current = LANGS.includes(l) ? l : 'en';
  document.documentElement.lang = current;
  applyStatic(document);
}

/** The message `key` in the current language, `{name}` placeholders filled. */
export function t(key, params = {}) {
  const s = catalogues[current]?.[key] ?? catalogues.en?.[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m));
}

/** Enum values (alert types, statuses, ...) have keys `<group>.<value>`. */
export function tv(group, value) {
  if (value === null || value === undefined) return '—';
  const key = `${group}.${value}`;
  return catalogues.en?.[key] !== undefined ? t(key) : String(value);
}

/** Re-label every element with data-i18n (text) or data-i18n-<attr> (attributes). */
export function applyStatic(root) {
  root.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll('*').forEach((el) => {
    for (const a of el.getAttributeNames()) {
      if (a.startsWith('data-i18n-')) el.setAttribute(a.slice(10), t(el.getAttribute(a)));
    }
  });
}

export function fmtDateTime(value, timeZone) {
  if (!value) return '—';
  return new Intl.DateTimeFormat(current, {
    dateStyle: 'short', timeStyle: 'medium', timeZone: timeZone || undefined,
  }).format(new Date(value));
}

export function fmtDate(value) {
  if (!value) return '—';
  // numeric: the browser's Kazakh data lacks month names in the medium style ("M01")
  return new Intl.DateTimeFormat(current, { year: 'numeric', month: '2-digit', day: '2-digit', timeZone: 'UTC' })
    .format(new Date(`${value}T00:00:00Z`));
}

export function fmtNumber(n, opts = {}) {
  if (n === null || n === undefined) return '—';
  return new Intl.NumberFormat(current, opts).format(n);
}

/** "5 min ago" in the current language (the catalogue's words: Intl's short forms are not
 * translated for every language). */
export function fmtAge(value, now = Date.now()) {
  if (!value) return '—';
  const s = Math.max(0, Math.round((now - new Date(value).getTime()) / 1000));
  if (s < 60) return t('age.seconds', { n: fmtNumber(s) });
  if (s < 3600) return t('age.minutes', { n: fmtNumber(Math.floor(s / 60)) });
  if (s < 86400) return t('age.hours', { n: fmtNumber(Math.floor(s / 3600)) });
  return t('age.days', { n: fmtNumber(Math.floor(s / 86400)) });
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const m = Math.round(seconds / 60);
  if (m < 60) return t('unit.minutes', { n: fmtNumber(m) });
  return t('unit.hours', { n: fmtNumber(Math.round(m / 6) / 10) });
}
