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
  admin: () => import('./views/admin.js'),
};

const main = document.getElementById('main');
const dialog = document.getElementById('signin');
const form = document.getElementById('signin-form');
let current = { name: null, cleanup: null, route: null };
export const config = { tiles: '', attribution: '' };

function langKey() { const m = session.me(); return m ? `probation.lang.${m.id}` : 'probation.lang'; }

function chooseLang(l) {
  setLang(l);
  localStorage.setItem(langKey(), l); // the language only: the session stays in memory
  localStorage.setItem('probation.lang', l);
  for (const id of ['lang', 'lang-signin']) document.getElementById(id).value = l;
  if (current.route) render(true);
}

function initialLang() {
  const saved = localStorage.getItem('probation.lang');
  if (saved && LANGS.includes(saved)) return saved;
  const nav = (navigator.language || 'en').slice(0, 2);
  return LANGS.includes(nav) ? nav : 'en';
}

function askSignIn(reason) {
  document.getElementById('signin-reason').textContent = reason ? t(`signin.${reason}`) : '';
  document.getElementById('signin-error').textContent = '';
  document.getElementById('lang-signin').value = lang();
  if (!dialog.open) dialog.showModal();
  form.username.focus();
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const err = document.getElementById('signin-error');
  err.textContent = '';
  try {
    await session.signIn(form.username.value, form.password.value);
    form.password.value = '';
    dialog.close();
  } catch (ex) {
    err.textContent = ex.message;
  }
});
dialog.addEventListener('cancel', (e) => e.preventDefault()); // no way around sign-in

session.on('signin', ({ sameUser }) => {
  const saved = localStorage.getItem(langKey());
  if (saved && saved !== lang()) chooseLang(saved);
  else localStorage.setItem(langKey(), lang());
  const who = session.me();
  document.getElementById('whoami').textContent = who.full_name || who.username;
  document.querySelector('header.top').hidden = false;
  document.querySelectorAll('nav [data-role]').forEach((a) => {
    a.hidden = !a.dataset.role.split(' ').includes(who.role);
  });
  document.body.dataset.role = who.role;
  live.start();
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
  const parts = (location.hash.replace(/^#\/?/, '') || 'cases').split('/');
  const name = VIEWS[parts[0]] ? parts[0] : 'cases';
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
