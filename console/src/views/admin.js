// Administration: users, devices, dead letters, the audit log and its verification.
import { all, api } from '../api.js';
import { fmtDateTime, fmtNumber, t, tv } from '../i18n.js';
import { loadCaseload, store } from '../store.js';
import { esc, html, showFieldErrors, toast } from '../util.js';

export async function render(main) {
  html(main, `<section class="view view-admin">
<h1 data-i18n="admin.title"></h1>
<h2 data-i18n="admin.users"></h2>
<form id="user-form" class="inline-form">
<label><span data-i18n="signin.username"></span> <input name="username" data-field="username"></label>
<label><span data-i18n="admin.full_name"></span> <input name="full_name" data-field="full_name"></label>
<label><span data-i18n="signin.password"></span> <input name="password" type="password" autocomplete="new-password" data-field="password"></label>
<label><span data-i18n="admin.role"></span> <select name="role" data-field="role">${['officer', 'supervisor', 'admin', 'investigator'].map((r) => `<option value="${r}">${esc(tv('role', r))}</option>`).join('')}</select></label>
<label><span data-i18n="admin.supervisor"></span> <select name="supervisor_id" data-field="supervisor_id"></select></label>
<button type="submit" data-i18n="admin.create_user"></button></form>
<table class="grid" id="users"><thead><tr><th data-i18n="signin.username"></th><th data-i18n="admin.full_name"></th><th data-i18n="admin.role"></th><th data-i18n="admin.supervisor"></th><th data-i18n="admin.state"></th><th></th></tr></thead><tbody></tbody></table>
<h2 data-i18n="admin.devices"></h2>
<form id="device-form" class="inline-form">
<label><span data-i18n="case.serial"></span> <input name="serial" data-field="serial"></label>
<label><span data-i18n="admin.kind"></span> <select name="kind" data-field="kind">${['bracelet', 'beacon', 'phone'].map((k) => `<option value="${k}">${esc(tv('device_kind', k))}</option>`).join('')}</select></label>
<label><span data-i18n="admin.model"></span> <input name="model" data-field="model"></label>
<button type="submit" data-i18n="admin.register"></button></form>
<table class="grid" id="devices"><thead><tr><th data-i18n="case.serial"></th><th data-i18n="admin.kind"></th><th data-i18n="caseload.battery"></th><th data-i18n="admin.state"></th><th data-i18n="admin.case"></th><th data-i18n="admin.assign"></th></tr></thead><tbody></tbody></table>
<h2 data-i18n="admin.dead_letters"></h2>
<table class="grid" id="dead-letters"><thead><tr><th data-i18n="admin.received"></th><th data-i18n="admin.topic"></th><th data-i18n="admin.reason"></th><th data-i18n="admin.detail"></th></tr></thead><tbody></tbody></table>
<h2 data-i18n="admin.audit"></h2>
<p><button type="button" id="verify" data-i18n="admin.verify"></button> <span id="verify-result" role="status"></span></p>
<table class="grid" id="audit"><thead><tr><th data-i18n="admin.when"></th><th data-i18n="admin.who"></th><th data-i18n="admin.action"></th><th data-i18n="admin.case"></th></tr></thead><tbody></tbody></table>
</section>`);
  const users = new Map();
  const userName = (id) => { const u = users.get(id); return u ? u.username : '—'; };
  const drawUsers = async () => {
    users.clear();
    for (const u of await all('/users')) users.set(u.id, u);
    const sups = [...users.values()].filter((u) => u.role === 'supervisor' && u.is_active);
    main.querySelector('[name=supervisor_id]').innerHTML = `<option value="">—</option>${sups.map((u) => `<option value="${u.id}" translate="no">${esc(u.username)}</option>`).join('')}`;
    main.querySelector('#users tbody').innerHTML = [...users.values()].map((u) => `<tr>
<td translate="no">${esc(u.username)}</td><td translate="no">${esc(u.full_name)}</td><td>${esc(tv('role', u.role))}</td>
<td translate="no">${esc(u.supervisor_id ? userName(u.supervisor_id) : '—')}</td><td>${esc(t(u.is_active ? 'admin.active' : 'admin.inactive'))}</td>
<td><button type="button" data-user="${u.id}" data-active="${u.is_active}">${esc(t(u.is_active ? 'admin.deactivate' : 'admin.activate'))}</button></td></tr>`).join('');
  };
  const drawDevices = async () => {
    await loadCaseload();
    const devices = await all('/devices');
    const options = [...store.cases.values()].filter((c) => c.status === 'active')
      .map((c) => `<option value="${c.id}" translate="no">${esc(c.subject_name)}</option>`).join('');
    main.querySelector('#devices tbody').innerHTML = devices.map((d) => `<tr>
<td translate="no">${esc(d.serial)}</td><td>${esc(tv('device_kind', d.kind))}</td>
<td class="num">${d.battery === null ? '—' : fmtNumber(d.battery / 100, { style: 'percent' })}</td>
<td>${esc(t(d.online ? 'device.online' : 'device.offline'))}</td>
<td translate="no">${esc(d.current_case_id ? (store.cases.get(d.current_case_id)?.subject_name ?? '…') : '—')}</td>
<td>${d.current_case_id ? `<button type="button" data-unassign="${d.id}" data-case="${d.current_case_id}">${esc(t('admin.unassign'))}</button>`
    : `<select data-for="${d.id}" aria-label="${esc(t('admin.case'))}"><option value=""></option>${options}</select> <button type="button" data-assign="${d.id}">${esc(t('admin.assign'))}</button>`}</td></tr>`).join('');
  };
  const drawDead = async () => {
    const page = await api('/dead-letters?limit=50').catch(() => ({ items: [] }));
    main.querySelector('#dead-letters tbody').innerHTML = page.items.map((d) => `<tr><td>${esc(fmtDateTime(d.received_at))}</td>
<td translate="no">${esc(d.topic)}</td><td translate="no">${esc(d.reason)}</td><td translate="no" class="small">${esc(d.detail ?? '')}</td></tr>`).join('')
      || `<tr><td colspan="4">${esc(t('admin.none'))}</td></tr>`;
  };
  const drawAudit = async () => {
    const page = await api('/audit?limit=100');
    main.querySelector('#audit tbody').innerHTML = page.items.map((e) => `<tr><td>${esc(fmtDateTime(e.at))}</td>
<td translate="no">${esc(e.user_id ? userName(e.user_id) : '—')}</td><td translate="no">${esc(e.action)}</td>
<td translate="no">${esc(e.case_id ? (store.cases.get(e.case_id)?.subject_name ?? e.case_id) : '')}</td></tr>`).join('');
  };

  const userForm = main.querySelector('#user-form');
  userForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fd = Object.fromEntries(new FormData(userForm));
    if (!fd.supervisor_id) delete fd.supervisor_id;
    try { await api('/users', { method: 'POST', body: fd }); toast(t('admin.saved')); userForm.reset(); drawUsers(); }
    catch (err) { showFieldErrors(userForm, err); }
  });
  main.querySelector('#users').addEventListener('click', async (e) => {
    const b = e.target.closest('[data-user]');
    if (!b) return;
    await api(`/users/${b.dataset.user}`, { method: 'PATCH', body: { is_active: b.dataset.active !== 'true' } });
    drawUsers();
  });
  const deviceForm = main.querySelector('#device-form');
  deviceForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await api('/devices', { method: 'POST', body: Object.fromEntries(new FormData(deviceForm)) }); toast(t('admin.saved')); deviceForm.reset(); drawDevices(); }
    catch (err) { showFieldErrors(deviceForm, err); }
  });
  main.querySelector('#devices').addEventListener('click', async (e) => {
    const a = e.target.closest('[data-assign]');
    const u = e.target.closest('[data-unassign]');
    try {
      if (a) {
        const caseId = main.querySelector(`select[data-for="${a.dataset.assign}"]`).value;
        if (!caseId) return;
        await api(`/cases/${caseId}/devices`, { method: 'POST', body: { device_id: a.dataset.assign } });
      } else if (u) {
        await api(`/cases/${u.dataset.case}/devices/${u.dataset.unassign}`, { method: 'DELETE' });
      } else return;
      toast(t('admin.saved'));
      drawDevices();
    } catch (err) { toast(err.message, 'error'); }
  });
  main.querySelector('#verify').onclick = async () => {
    const v = await api('/audit/verify');
    const out = main.querySelector('#verify-result');
    out.textContent = v.ok ? t('admin.verify_ok', { n: fmtNumber(v.entries) }) : t('admin.verify_broken', { id: v.broken_at, reason: tv('audit_reason', v.reason) });
    out.className = v.ok ? 'ok' : 'error';
  };
  await drawUsers();
  await Promise.all([drawDevices(), drawDead(), drawAudit()]);
  main.dataset.loaded = '1';
  return null;
}
