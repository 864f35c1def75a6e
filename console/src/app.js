// The console's shell: sign-in, language, navigation, and the views.
import * as session from './api.js';
import { loadCatalogues, setLang, lang, LANGS, t } from './i18n.js';
import * as live from './live.js';
import { reset as resetStore } from './store.js';

const VIEWS = {
  cases: () => import('./views/caseload.js'),
  map: () => import('./views/map.js'),
  alerts: () => import('./views/alerts.js'),
  case: () => import('./views/case.js'),
  team: () => import('./views/team.js'),
  investigate: () => import('./views/investigate.js'),
  admin: () => import('./views/admin.js'),
};

const main = document.getElementById('main');
const dialog = document.getElementById('signin');
const form = document.getElementById('signin-form');
let current = { name: null, cleanup: null, route: null };
export const config = { tiles: '', attribution: '' };

function langKey() { const m = session.me(); return m ? `probation.lang.${m.id}` : 'probation.lang'; }

/** Switch the language; `save`: remember it on the server for the signed-in user. */
function chooseLang(l, save = true) {
  setLang(l);
  localStorage.setItem(langKey(), l); // the language only: the session stays in memory
  localStorage.setItem('probation.lang', l);
  const who = session.me();
  if (save && who && who.language !== l) session.saveLanguage(l);
  for (const id of ['lang', 'lang-signin']) document.getElementById(id).value = l;
  if (current.route) render(true);
}

function initialLang() {
  const saved = localStorage.getItem('probation.lang');
  if (saved && LANGS.includes(saved)) return saved;
  const nav = (navigator.language || 'en').slice(0, 2);
  return LANGS.includes(nav) ? nav : 'en';
}

const setupForm = document.getElementById('totp-setup');
const totpField = document.getElementById('totp-field');

function showTotpField(show) {
  totpField.hidden = !show;
  form.totp.required = show;
  if (!show) form.totp.value = '';
}

function showSetup(show) {
  setupForm.hidden = !show;
  form.hidden = show;
  dialog.setAttribute('aria-labelledby', show ? 'totp-title' : 'signin-title');
}

function askSignIn(reason) {
  document.getElementById('signin-reason').textContent = reason ? t(`signin.${reason}`) : '';
  document.getElementById('signin-error').textContent = '';
  document.getElementById('lang-signin').value = lang();
  showSetup(false);
  showTotpField(false);
  if (!dialog.open) dialog.showModal();
  form.username.focus();
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const err = document.getElementById('signin-error');
  err.textContent = '';
  try {
    const out = await session.signIn(form.username.value, form.password.value,
      totpField.hidden ? undefined : form.totp.value);
    if (out.setup) { await startSetup(); return; }
    form.password.value = '';
    showTotpField(false);
    dialog.close();
  } catch (ex) {
    if (ex.problem?.code === 'totp_required') { // the password was right: now the code
      showTotpField(true);
      document.getElementById('signin-reason').textContent = t('signin.totp_prompt');
      form.totp.focus();
      return;
    }
    err.textContent = ex.message;
    if (ex.problem?.code === 'invalid_totp') { form.totp.value = ''; form.totp.focus(); }
  }
});

/** A `totp_setup` token: a new secret for the authenticator, confirmed with a code. */
async function startSetup() {
  const status = await session.totpSetup('enable');
  document.getElementById('totp-secret').textContent = status.secret;
  const link = document.getElementById('totp-uri');
  link.textContent = status.otpauth_uri;
  link.href = status.otpauth_uri;
  const qr = document.getElementById('totp-qr');
  /* global QRCode */
  await QRCode.toCanvas(qr, status.otpauth_uri, { width: 200, margin: 2, errorCorrectionLevel: 'M' });
  qr.dataset.uri = status.otpauth_uri;
  document.getElementById('totp-error').textContent = '';
  setupForm.code.value = '';
  showSetup(true);
  setupForm.code.focus();
}

setupForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const err = document.getElementById('totp-error');
  err.textContent = '';
  try {
    await session.totpSetup('confirm', setupForm.code.value);
  } catch (ex) {
    err.textContent = ex.message;
    return;
  }
  // on: sign in again (username and password stay in the form) with the next code
  showSetup(false);
  document.getElementById('totp-secret').textContent = '';
  document.getElementById('totp-uri').textContent = '';
  document.getElementById('totp-uri').removeAttribute('href');
  const qr = document.getElementById('totp-qr');
  qr.getContext('2d').clearRect(0, 0, qr.width, qr.height);
  delete qr.dataset.uri;
  showTotpField(true);
  document.getElementById('signin-reason').textContent = t('signin.totp_enabled');
  form.totp.focus();
});

document.getElementById('totp-cancel').addEventListener('click', () => {
  session.forgetSetup();
  form.password.value = '';
  askSignIn(null);
});

dialog.addEventListener('cancel', (e) => e.preventDefault()); // no way around sign-in

session.on('signin', ({ sameUser }) => {
  const who = session.me();
  // the language the user chose, kept on the server (any browser); else this browser's
  const saved = LANGS.includes(who.language) ? who.language : localStorage.getItem(langKey());
  if (saved && saved !== lang()) chooseLang(saved, !who.language);
  else {
    localStorage.setItem(langKey(), lang());
    if (!who.language) session.saveLanguage(lang());
  }
  document.getElementById('whoami').textContent = who.full_name || who.username;
  document.querySelector('header.top').hidden = false;
  document.querySelectorAll('nav [data-role]').forEach((a) => {
    a.hidden = !a.dataset.role.split(' ').includes(who.role);
  });
  document.body.dataset.role = who.role;
  if (who.role !== 'investigator') live.start(); // an investigator has no caseload to follow
  if (!sameUser) { // another person: nothing of the previous one stays on screen
    resetStore();
    render(true);
  }
});

session.on('expire', (reason) => {
  live.stop();
  if (reason === 'signout') {
    resetStore();
    if (current.cleanup) current.cleanup();
    current = { name: null, cleanup: null, route: null };
    main.innerHTML = '';
    delete main.dataset.loaded;
    delete main.dataset.view;
    document.querySelector('header.top').hidden = true;
  }
  askSignIn(reason === 'signout' ? null : 'expired');
});

document.getElementById('signout').addEventListener('click', () => session.expire('signout'));
for (const id of ['lang', 'lang-signin']) {
  document.getElementById(id).addEventListener('change', (e) => chooseLang(e.target.value));
}

function parseRoute() {
  const home = session.me()?.role === 'investigator' ? 'investigate' : 'cases';
  const parts = (location.hash.replace(/^#\/?/, '') || home).split('/');
  const name = VIEWS[parts[0]] ? parts[0] : home;
  return { name, args: parts.slice(1), hash: location.hash };
}

async function render(force = false) {
  if (!session.me()) return;
  const route = parseRoute();
  if (!force && current.route && current.route.hash === route.hash) return;
  if (current.cleanup) current.cleanup();
  current = { name: route.name, cleanup: null, route };
  document.querySelectorAll('nav a').forEach((a) => {
    if (a.getAttribute('href') === `#/${route.name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  const mod = await VIEWS[route.name]();
  if (current.route !== route) return;
  main.innerHTML = '';
  main.dataset.view = route.name;
  delete main.dataset.loaded;
  try {
    current.cleanup = (await mod.render(main, route.args)) || null;
  } catch (e) {
    main.dataset.error = e.message;
    throw e;
  } finally {
    if (current.route === route) main.dataset.loaded = '1';
  }
  document.title = `${t(`nav.${route.name === 'case' ? 'case' : route.name}`)} · ${t('app.title')}`;
}

window.addEventListener('hashchange', () => render());

async function boot() {
  await loadCatalogues();
  setLang(initialLang());
  for (const id of ['lang', 'lang-signin']) document.getElementById(id).value = lang();
  try {
    Object.assign(config, await (await fetch('/console-config.json')).json());
  } catch { /* no tiles */ }
  document.body.dataset.ready = '1';
  askSignIn(null);
}

boot();
