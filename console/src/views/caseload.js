// Caseload: the caller's cases with live status; sort, filter, search.
import { me } from '../api.js';
import { fmtAge, fmtNumber, t, tv } from '../i18n.js';
import { loadCaseload, officerName, store, watch } from '../store.js';
import { esc, html } from '../util.js';

const PAGE = 200; // rows drawn at first, and per "show more"
const RISK = { high: 3, medium: 2, low: 1 };
const COMPLIANCE = { violation: 3, unknown: 2, compliant: 1 };
const SORTS = {
  name: (c) => c.subject_name.toLowerCase(),
  risk: (c) => -RISK[c.risk_level],
  compliance: (c) => -COMPLIANCE[c.compliance],
  alerts: (c) => -c.open_alerts,
  battery: (c) => c.device?.battery ?? 999,
  fix: (c) => (c.last_fix ? -new Date(c.last_fix.ts).getTime() : Infinity),
};
const state = { q: '', status: 'active', risk: '', compliance: '', officer: '', sort: 'compliance', dir: 1 };

function deviceState(c) {
  if (!c.device) return `<span class="muted">${esc(t('device.none'))}</span>`;
  const on = c.device.online ? 'online' : 'offline';
  return `<span class="dot dot-${on}"></span><span translate="no">${esc(c.device.serial)}</span> · ${esc(t(`device.${on}`))}`;
}

function row(c, showOfficer) {
  const bat = c.device?.battery;
  return `<tr data-id="${c.id}" data-compliance="${c.compliance}">
<td><a href="#/case/${c.id}" translate="no">${esc(c.subject_name)}</a><div class="muted small" translate="no">${esc(c.subject_iin)}</div></td>
<td><span class="badge risk-${c.risk_level}">${esc(tv('risk', c.risk_level))}</span></td>
<td><span class="badge c-${c.compliance}">${esc(tv('compliance', c.compliance))}</span></td>
<td class="num">${fmtNumber(c.open_alerts)}</td>
<td class="num${bat !== undefined && bat !== null && bat < 20 ? ' warn' : ''}">${bat === undefined || bat === null ? '—' : fmtNumber(bat / 100, { style: 'percent' })}</td>
<td data-ts="${c.last_fix?.ts || ''}">${c.last_fix ? esc(fmtAge(c.last_fix.ts)) : '—'}</td>
<td>${deviceState(c)}</td>
${showOfficer ? `<td translate="no">${esc(officerName(c.officer_id))}</td>` : ''}
</tr>`;
}

function visible() {
  const q = state.q.trim().toLowerCase();
  const out = [];
  for (const c of store.cases.values()) {
    if (state.status && c.status !== state.status) continue;
    if (state.risk && c.risk_level !== state.risk) continue;
    if (state.compliance && c.compliance !== state.compliance) continue;
    if (state.officer && c.officer_id !== state.officer) continue;
    if (q && !c.subject_name.toLowerCase().includes(q) && !c.subject_iin.includes(q)) continue;
    out.push(c);
  }
  const key = SORTS[state.sort];
  const keyed = out.map((c) => [key(c), c.subject_name, c]); // each key computed once
  keyed.sort((a, b) => {
    if (a[0] < b[0]) return -state.dir;
    if (a[0] > b[0]) return state.dir;
    return a[1] < b[1] ? -1 : (a[1] > b[1] ? 1 : 0);
  });
  return keyed.map((k) => k[2]);
}

function options(group, values, selected) {
  return values.map((v) => `<option value="${v}"${v === selected ? ' selected' : ''}>${esc(tv(group, v))}</option>`).join('');
}

export async function render(main) {
  const showOfficer = me().role !== 'officer';
  html(main, `<section class="view">
<h1 data-i18n="caseload.title"></h1>
<form class="filters" role="search">
  <label><span data-i18n="caseload.search"></span> <input type="search" name="q" value="${esc(state.q)}"></label>
  <label><span data-i18n="caseload.status"></span> <select name="status"><option value="" data-i18n="filter.all"></option>${options('case_status', ['active', 'closed'], state.status)}</select></label>
  <label><span data-i18n="caseload.risk"></span> <select name="risk"><option value="" data-i18n="filter.all"></option>${options('risk', ['high', 'medium', 'low'], state.risk)}</select></label>
  <label><span data-i18n="caseload.compliance"></span> <select name="compliance"><option value="" data-i18n="filter.all"></option>${options('compliance', ['violation', 'unknown', 'compliant'], state.compliance)}</select></label>
  ${showOfficer ? '<label><span data-i18n="caseload.officer"></span> <select name="officer"><option value="" data-i18n="filter.all"></option></select></label>' : ''}
</form>
<p class="muted" id="count" role="status"></p>
<table class="grid" id="caseload">
<thead><tr>
<th><button type="button" data-sort="name" data-i18n="caseload.person"></button></th>
<th><button type="button" data-sort="risk" data-i18n="caseload.risk"></button></th>
<th><button type="button" data-sort="compliance" data-i18n="caseload.compliance"></button></th>
<th><button type="button" data-sort="alerts" data-i18n="caseload.open_alerts"></button></th>
<th><button type="button" data-sort="battery" data-i18n="caseload.battery"></button></th>
<th><button type="button" data-sort="fix" data-i18n="caseload.last_fix"></button></th>
<th data-i18n="caseload.device"></th>
${showOfficer ? '<th data-i18n="caseload.officer"></th>' : ''}
</tr></thead>
<tbody></tbody></table>
<p><button type="button" id="more" hidden></button></p></section>`);
  const tbody = main.querySelector('tbody');
  const more = main.querySelector('#more');
  let shown = PAGE;
  more.addEventListener('click', () => { shown += PAGE; drawNow(); });
  const form = main.querySelector('form');
  const count = main.querySelector('#count');

  let frame = 0;
  const draw = () => { // at most once a frame, however many changes arrive
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; drawNow(); });
  };
  const drawNow = () => {
    const rows = visible();
    // the first PAGE rows, more on demand: a redraw stays cheap with thousands of cases
    tbody.innerHTML = rows.slice(0, shown).map((c) => row(c, showOfficer)).join('');
    more.hidden = rows.length <= shown;
    more.textContent = t('caseload.show_more', { n: fmtNumber(Math.min(PAGE, rows.length - shown)) });
    count.textContent = t('caseload.count', { n: fmtNumber(rows.length), total: fmtNumber(store.cases.size) });
    main.querySelectorAll('th button').forEach((b) => {
      const th = b.parentElement;
      if (b.dataset.sort === state.sort) th.setAttribute('aria-sort', state.dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    });
  };
  const fillOfficers = () => {
    const sel = form.officer;
    if (!sel) return;
    const ids = new Set([...store.cases.values()].map((c) => c.officer_id));
    sel.innerHTML = `<option value="">${esc(t('filter.all'))}</option>${[...ids].map((id) => `<option value="${id}"${id === state.officer ? ' selected' : ''} translate="no">${esc(officerName(id))}</option>`).join('')}`;
  };

  form.addEventListener('input', () => {
    const fd = new FormData(form);
    for (const k of ['q', 'status', 'risk', 'compliance', 'officer']) state[k] = fd.get(k) ?? '';
    drawNow();
  });
  form.addEventListener('submit', (e) => e.preventDefault());
  main.querySelector('thead').addEventListener('click', (e) => {
    const key = e.target.dataset?.sort;
    if (!key) return;
    state.dir = state.sort === key ? -state.dir : 1;
    state.sort = key;
    drawNow();
  });

  const unwatch = watch((ids, full) => {
    if (full || !ids) { draw(); fillOfficers(); return; }
    for (const id of ids) {
      const tr = tbody.querySelector(`tr[data-id="${id}"]`);
      const c = store.cases.get(id);
      if (tr && c) tr.outerHTML = row(c, showOfficer);
    }
  });
  const tick = setInterval(() => {
    tbody.querySelectorAll('td[data-ts]').forEach((td) => {
      if (td.dataset.ts) td.textContent = fmtAge(td.dataset.ts);
    });
  }, 30000);
  drawNow();
  fillOfficers();
  await loadCaseload();
  main.dataset.loaded = '1';
  return () => { unwatch(); clearInterval(tick); cancelAnimationFrame(frame); };
}
