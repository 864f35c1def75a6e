// Alert queue: open and acknowledged alerts, newest critical first, live; the selected
// alert's evidence on a map, its timeline, and the actions.
/* global L */
import { all, api, download } from '../api.js';
import { fmtDateTime, fmtAge, fmtDuration, fmtNumber, t, tv } from '../i18n.js';
import { subscribe } from '../live.js';
import { makeMap, zoneLayer } from '../maps.js';
import { loadCaseload, store } from '../store.js';
import { esc, html, showFieldErrors, toast } from '../util.js';

const SEVERITY = { critical: 4, high: 3, medium: 2, low: 1 };
const RESOLUTIONS = ['violation_confirmed', 'false_alarm', 'device_fault', 'approved_absence', 'other'];

export function alertOrder(a, b) {
  return (SEVERITY[b.severity] - SEVERITY[a.severity])
    || (new Date(b.created_at) - new Date(a.created_at));
}

function caseName(id) { return store.cases.get(id)?.subject_name ?? '…'; }
function caseTz(id) { return store.cases.get(id)?.timezone; }

let audio;
function announce(a) {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator(); const g = audio.createGain();
    o.frequency.value = 880; g.gain.value = 0.1;
    o.connect(g).connect(audio.destination); o.start(); o.stop(audio.currentTime + 0.4);
  } catch { /* no audio */ }
  if ('Notification' in window && Notification.permission === 'granted') {
    new Notification(t('alerts.new_critical'), { body: `${tv('alert_type', a.type)} · ${caseName(a.case_id)}` });
  }
  toast(`${t('alerts.new_critical')}: ${tv('alert_type', a.type)} · ${caseName(a.case_id)}`, 'error');
}

function item(a, selected) {
  return `<li><button type="button" class="alert-item sev-${a.severity}${selected ? ' selected' : ''}" data-id="${a.id}" data-status="${a.status}" data-type="${a.type}" aria-pressed="${selected}">
<span class="badge sev-${a.severity}">${esc(tv('severity', a.severity))}</span>
<strong>${esc(tv('alert_type', a.type))}</strong>
<span translate="no">${esc(caseName(a.case_id))}</span>
<span class="muted small">${esc(tv('alert_status', a.status))} · ${esc(fmtAge(a.created_at))}${a.escalation_level ? ` · <span class="esc">${esc(t('alerts.escalation', { n: fmtNumber(a.escalation_level) }))}</span>` : ''}</span>
</button></li>`;
}

function timelineEntry(e, tz) {
  const who = e.actor ? `<span translate="no">${esc(e.actor)}</span>` : esc(t('alerts.system'));
  let extra = '';
  if (e.data?.text) extra = `<q translate="no">${esc(e.data.text)}</q>`;
  else if (e.data?.note) extra = `<q translate="no">${esc(e.data.note)}</q>`;
  if (e.data?.resolution) extra = `${esc(tv('resolution', e.data.resolution))} ${extra}`;
  if (e.kind === 'escalated' && e.data?.level !== undefined) extra = esc(t('alerts.escalation', { n: fmtNumber(e.data.level) }));
  return `<li><time>${esc(fmtDateTime(e.at, tz))}</time> <strong>${esc(tv('timeline', e.kind))}</strong> — ${who} ${extra}</li>`;
}

export async function render(main, args) {
  html(main, `<section class="view view-alerts">
<h1 data-i18n="alerts.title"></h1>
<p><button type="button" id="notify" data-i18n="alerts.enable_notifications"></button></p>
<div class="split">
  <div><p class="muted" id="alert-count" role="status"></p><ul class="alert-list" id="alert-list" aria-live="polite"></ul></div>
  <div id="alert-detail" class="detail"><p class="muted" data-i18n="alerts.pick"></p></div>
</div></section>`);
  const list = main.querySelector('#alert-list');
  const detail = main.querySelector('#alert-detail');
  const alerts = new Map();
  let selected = args[0] || null;
  let detailMap = null;

  const draw = () => {
    const items = [...alerts.values()].filter((a) => a.status !== 'resolved').sort(alertOrder);
    list.innerHTML = items.map((a) => item(a, a.id === selected)).join('');
    main.querySelector('#alert-count').textContent = t('alerts.count', { n: fmtNumber(items.length) });
  };

  const facts = (a) => {
    const tz = caseTz(a.case_id);
    const ev = a.evidence || {};
    return `<dl class="facts">
<dt data-i18n="alerts.person"></dt><dd><a href="#/case/${a.case_id}" translate="no">${esc(caseName(a.case_id))}</a></dd>
<dt data-i18n="alerts.severity"></dt><dd><span class="badge sev-${a.severity}">${esc(tv('severity', a.severity))}</span></dd>
<dt data-i18n="alerts.status"></dt><dd data-testid="alert-status">${esc(tv('alert_status', a.status))}</dd>
<dt data-i18n="alerts.escalation_level"></dt><dd>${fmtNumber(a.escalation_level)}</dd>
<dt data-i18n="alerts.started"></dt><dd>${esc(fmtDateTime(a.started_at, tz))}</dd>
<dt data-i18n="alerts.duration"></dt><dd>${esc(fmtDuration(a.duration_s))}</dd>
${a.zone ? `<dt data-i18n="alerts.zone"></dt><dd><span translate="no">${esc(a.zone.name)}</span> · ${esc(tv('zone_kind', a.zone.kind))}</dd>` : ''}
${ev.max_depth_m !== undefined ? `<dt data-i18n="alerts.depth"></dt><dd>${esc(t('unit.meters', { n: fmtNumber(ev.max_depth_m, { maximumFractionDigits: 0 }) }))}</dd>` : ''}
</dl>`;
  };

  /** Refresh the selected alert's facts, timeline, map and buttons; the form keeps its input. */
  const refreshDetail = async (id) => {
    let a;
    try { a = await api(`/alerts/${id}`); } catch (e) { detail.textContent = e.message; return; }
    if (selected !== id || !detail.querySelector('#alert-facts')) return;
    const tz = caseTz(a.case_id);
    detail.querySelector('#alert-title').textContent = tv('alert_type', a.type);
    html(detail.querySelector('#alert-facts'), facts(a));
    detail.querySelector('.timeline').innerHTML = a.timeline.map((e) => timelineEntry(e, tz)).join('');
    detail.querySelector('#ack').disabled = a.status !== 'open';
    detail.querySelector('#resolve').disabled = a.status === 'resolved';
    detail.dataset.status = a.status;
    drawEvidence(a);
  };

  const drawEvidence = async (a) => {
    const tz = caseTz(a.case_id);
    const ev = a.evidence || {};
    if (!detailMap) detailMap = makeMap(detail.querySelector('#evidence-map'), { zoom: 15 });
    if (detailMap.evidence) detailMap.removeLayer(detailMap.evidence);
    const group = L.featureGroup().addTo(detailMap);
    detailMap.evidence = group;
    for (const f of [ev.first_fix, ev.last_fix].filter(Boolean)) {
      L.circle([f.lat, f.lon], { radius: f.acc, color: '#8e24aa', weight: 1, fillOpacity: 0.1 }).addTo(group);
      L.circleMarker([f.lat, f.lon], { radius: 4, color: '#8e24aa' }).bindTooltip(fmtDateTime(f.ts, tz)).addTo(group);
    }
    if (a.zone_id) {
      const zone = await api(`/zones/${a.zone_id}`).catch(() => null);
      if (!detailMap || detailMap.evidence !== group) return; // redrawn meanwhile
      if (zone) group.addLayer(zoneLayer(zone));
    }
    if (group.getLayers().length) detailMap.fitBounds(group.getBounds().pad(0.3), { maxZoom: 17 });
  };

  const showDetail = async (id) => {
    selected = id;
    draw();
    if (detailMap) { detailMap.remove(); detailMap = null; }
    html(detail, `<h2 id="alert-title"></h2><div id="alert-facts"></div>
<div id="evidence-map" class="map small-map" role="region" data-i18n-aria-label="alerts.evidence"></div>
<form id="alert-actions" class="actions">
  <button type="button" id="ack" data-i18n="alerts.acknowledge" disabled></button>
  <label><span data-i18n="alerts.resolution"></span> <select name="resolution" data-field="resolution">${RESOLUTIONS.map((r) => `<option value="${r}">${esc(tv('resolution', r))}</option>`).join('')}</select></label>
  <label><span data-i18n="alerts.note"></span> <textarea name="note" data-field="note" rows="2"></textarea></label>
  <button type="button" id="resolve" data-i18n="alerts.resolve" disabled></button>
  <button type="button" id="add-note" data-i18n="alerts.add_note"></button>
  <button type="button" id="alert-report" data-i18n="report.button"></button>
</form>
<h3 data-i18n="alerts.timeline"></h3>
<ol class="timeline"></ol>`);
    const form = detail.querySelector('#alert-actions');
    const act = async (path, body, done) => {
      try {
        const updated = await api(`/alerts/${id}/${path}`, { method: 'POST', body });
        if (updated && updated.status) { alerts.set(id, updated); draw(); }
        form.note.value = '';
        toast(t(done));
        await refreshDetail(id);
      } catch (e) { showFieldErrors(form, e); }
    };
    const note = () => form.note.value.trim() || undefined;
    detail.querySelector('#ack').onclick = () => act('acknowledge', note() ? { note: note() } : {}, 'alerts.acknowledged');
    detail.querySelector('#resolve').onclick = () => act('resolve', { resolution: form.resolution.value, note: note() }, 'alerts.resolved');
    detail.querySelector('#add-note').onclick = () => act('notes', { text: form.note.value }, 'alerts.noted');
    detail.querySelector('#alert-report').onclick = async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      toast(t('report.downloading'));
      try {
        await download(`/alerts/${id}/report.pdf`, `alert-${id}.pdf`);
        toast(t('report.done'));
      } catch (err) { toast(err.message, 'error'); } finally { button.disabled = false; }
    };
    await refreshDetail(id);
  };

  list.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-id]');
    if (b) showDetail(b.dataset.id);
  });
  main.querySelector('#notify').onclick = () => { if ('Notification' in window) Notification.requestPermission(); };

  const unsub = subscribe('alert', (a) => {
    const before = alerts.get(a.id);
    alerts.set(a.id, a);
    if (!before && a.severity === 'critical' && a.status === 'open') announce(a);
    draw();
    if (a.id === selected) refreshDetail(a.id);
  });
  loadCaseload().then(draw);
  const [open, acked] = await Promise.all([all('/alerts?status=open'), all('/alerts?status=acknowledged')]);
  for (const a of [...open, ...acked]) if (!alerts.has(a.id)) alerts.set(a.id, a);
  draw();
  if (selected) showDetail(selected);
  main.dataset.loaded = '1';
  return () => { unsub(); if (detailMap) detailMap.remove(); };
}
