// Supervisor view: the team's open alerts by age and escalation (unacknowledged criticals
// first) and each officer's load.
import { all } from '../api.js';
import { fmtAge, fmtNumber, t, tv } from '../i18n.js';
import { subscribe } from '../live.js';
import { loadCaseload, officerName, store } from '../store.js';
import { esc, html } from '../util.js';

const SEVERITY = { critical: 4, high: 3, medium: 2, low: 1 };

function order(a, b) {
  const ua = a.severity === 'critical' && a.status === 'open' ? 1 : 0;
  const ub = b.severity === 'critical' && b.status === 'open' ? 1 : 0;
  return (ub - ua) || (b.escalation_level - a.escalation_level)
    || (SEVERITY[b.severity] - SEVERITY[a.severity]) || (new Date(a.created_at) - new Date(b.created_at));
}

export async function render(main) {
  html(main, `<section class="view">
<h1 data-i18n="team.title"></h1>
<h2 data-i18n="team.alerts"></h2>
<table class="grid" id="team-alerts"><thead><tr>
<th data-i18n="alerts.severity"></th><th data-i18n="alerts.type"></th><th data-i18n="alerts.person"></th>
<th data-i18n="caseload.officer"></th><th data-i18n="alerts.status"></th><th data-i18n="team.age"></th><th data-i18n="alerts.escalation_level"></th>
</tr></thead><tbody></tbody></table>
<h2 data-i18n="team.load"></h2>
<table class="grid" id="team-load"><thead><tr>
<th data-i18n="caseload.officer"></th><th data-i18n="team.cases"></th><th data-i18n="team.violations"></th><th data-i18n="caseload.open_alerts"></th>
</tr></thead><tbody></tbody></table></section>`);
  const alerts = new Map();
  const draw = () => {
    const list = [...alerts.values()].filter((a) => a.status !== 'resolved').sort(order);
    main.querySelector('#team-alerts tbody').innerHTML = list.map((a) => {
      const c = store.cases.get(a.case_id);
      return `<tr class="${a.severity === 'critical' && a.status === 'open' ? 'hot' : ''}">
<td><span class="badge sev-${a.severity}">${esc(tv('severity', a.severity))}</span></td>
<td><a href="#/alerts/${a.id}">${esc(tv('alert_type', a.type))}</a></td>
<td translate="no">${esc(c?.subject_name ?? '…')}</td>
<td translate="no">${esc(c ? officerName(c.officer_id) : '…')}</td>
<td>${esc(tv('alert_status', a.status))}</td><td>${esc(fmtAge(a.created_at))}</td><td class="num">${fmtNumber(a.escalation_level)}</td></tr>`;
    }).join('') || `<tr><td colspan="7">${esc(t('team.no_alerts'))}</td></tr>`;
    const load = new Map();
    for (const c of store.cases.values()) {
      if (c.status !== 'active') continue;
      const l = load.get(c.officer_id) || { cases: 0, violations: 0, alerts: 0 };
      l.cases += 1; l.alerts += c.open_alerts; if (c.compliance === 'violation') l.violations += 1;
      load.set(c.officer_id, l);
    }
    main.querySelector('#team-load tbody').innerHTML = [...load.entries()]
      .sort((a, b) => b[1].alerts - a[1].alerts)
      .map(([id, l]) => `<tr><td translate="no">${esc(officerName(id))}</td><td class="num">${fmtNumber(l.cases)}</td><td class="num">${fmtNumber(l.violations)}</td><td class="num">${fmtNumber(l.alerts)}</td></tr>`).join('');
  };
  const unsub = subscribe('alert', (a) => { alerts.set(a.id, a); draw(); });
  const [open, acked] = await Promise.all([all('/alerts?status=open'), all('/alerts?status=acknowledged'), loadCaseload()]);
  for (const a of [...open, ...acked]) alerts.set(a.id, a);
  draw();
  main.dataset.loaded = '1';
  return unsub;
}
