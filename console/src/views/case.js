// Case page: the person and the order, devices, zones (listed, drawn, edited), and the
// track playback with crossings, outliers, events and check-ins on one timeline.
/* global L */
import { all, api, download, me } from '../api.js';
import { fmtDate, fmtDateTime, fmtNumber, t, tv } from '../i18n.js';
import { COLORS, geomanStrings, makeMap, zoneLayer } from '../maps.js';
import { isoToLocal, localToIso } from '../tz.js';
import { clearFieldErrors, esc, html, showFieldErrors, toast } from '../util.js';

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
const OUTLIER_ACC_M = 100;

function policy(c) {
  const p = c.checkin_policy;
  if (!p) return esc(t('case.policy_default'));
  return esc(t('case.policy', { n: fmtNumber(p.per_day), from: fmtNumber(p.from_hour), to: fmtNumber(p.to_hour) }));
}

function windowRow(w = { days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '22:00', end: '06:00' }, i = 0) {
  return `<fieldset class="window" data-field="schedule.windows.${i}"><legend>${esc(t('zone.window'))}</legend>
${DAYS.map((d) => `<label class="day"><input type="checkbox" name="day" value="${d}"${w.days.includes(d) ? ' checked' : ''}> ${esc(tv('day', d))}</label>`).join('')}
<label>${esc(t('zone.start'))} <input type="time" name="start" value="${w.start}" data-field="schedule.windows.${i}.start"></label>
<label>${esc(t('zone.end'))} <input type="time" name="end" value="${w.end}" data-field="schedule.windows.${i}.end"></label>
<button type="button" class="remove">${esc(t('zone.remove'))}</button></fieldset>`;
}

function exceptionRow(x, i, tz) {
  const from = x ? isoToLocal(x.from, tz) : '';
  const to = x ? isoToLocal(x.to, tz) : '';
  return `<fieldset class="exception" data-field="exceptions.${i}"><legend>${esc(t('zone.exception'))}</legend>
<label>${esc(t('zone.from'))} <input type="datetime-local" name="from" value="${from}" data-field="exceptions.${i}.from"></label>
<label>${esc(t('zone.to'))} <input type="datetime-local" name="to" value="${to}" data-field="exceptions.${i}.to"></label>
<label>${esc(t('zone.reason'))} <input name="reason" value="${esc(x?.reason || '')}" data-field="exceptions.${i}.reason"></label>
<button type="button" class="remove">${esc(t('zone.remove'))}</button></fieldset>`;
}

export async function render(main, args) {
  const id = args[0];
  const c = await api(`/cases/${id}`).catch(() => null);
  if (!c) { html(main, '<section class="view"><h1 data-i18n="case.not_found"></h1></section>'); return null; }
  const tz = c.timezone;
  const [subject, devices, zones] = await Promise.all([
    api(`/subjects/${c.subject_id}`), all(`/cases/${id}/devices`), all(`/cases/${id}/zones`),
  ]);
  html(main, `<section class="view view-case" data-case="${id}">
<h1 translate="no">${esc(subject.full_name)}</h1>
<div class="cols">
<dl class="facts">
<dt data-i18n="case.iin"></dt><dd translate="no">${esc(subject.iin)}</dd>
<dt data-i18n="case.birth_date"></dt><dd>${esc(fmtDate(subject.birth_date))}</dd>
<dt data-i18n="case.order"></dt><dd translate="no">${esc(c.court_order_ref)}</dd>
<dt data-i18n="case.period"></dt><dd>${esc(fmtDate(c.starts_on))} – ${esc(fmtDate(c.ends_on))}</dd>
<dt data-i18n="case.status"></dt><dd>${esc(tv('case_status', c.status))}</dd>
<dt data-i18n="case.risk"></dt><dd><span class="badge risk-${c.risk_level}">${esc(tv('risk', c.risk_level))}</span></dd>
<dt data-i18n="case.compliance"></dt><dd><span class="badge c-${c.compliance}">${esc(tv('compliance', c.compliance))}</span></dd>
<dt data-i18n="case.timezone"></dt><dd translate="no">${esc(tz)}</dd>
<dt data-i18n="case.checkins"></dt><dd>${policy(c)}</dd>
<dt data-i18n="case.last_fix"></dt><dd>${c.last_fix ? esc(fmtDateTime(c.last_fix.ts, tz)) : '—'}</dd>
</dl>
<div><h2 data-i18n="case.devices"></h2>
<table class="grid"><thead><tr><th data-i18n="case.serial"></th><th data-i18n="case.assigned"></th><th data-i18n="case.unassigned"></th></tr></thead>
<tbody>${devices.map((d) => `<tr><td translate="no">${esc(d.serial)}</td><td>${esc(fmtDateTime(d.assigned_at, tz))}</td><td>${d.unassigned_at ? esc(fmtDateTime(d.unassigned_at, tz)) : esc(t('case.current'))}</td></tr>`).join('') || `<tr><td colspan="3">${esc(t('device.none'))}</td></tr>`}</tbody></table>
${c.device ? `<p>${esc(t('case.battery'))}: ${c.device.battery === null ? '—' : fmtNumber(c.device.battery / 100, { style: 'percent' })} · ${esc(t(c.device.online ? 'device.online' : 'device.offline'))}</p>` : ''}
</div></div>
<h2 data-i18n="case.zones"></h2>
<ul id="zone-list" class="zone-list"></ul>
<div class="editor">
<div id="case-map" class="map big" role="region" data-i18n-aria-label="case.map"></div>
<form id="zone-form" class="zone-form" novalidate>
<h3 id="zone-form-title"></h3>
<p class="muted small" data-i18n="zone.draw_hint"></p>
<p data-field="geometry" class="shape-state" id="shape-state"></p>
<label><span data-i18n="zone.name"></span> <input name="name" data-field="name" required></label>
<label><span data-i18n="zone.kind"></span> <select name="kind" data-field="kind"><option value="exclusion">${esc(tv('zone_kind', 'exclusion'))}</option><option value="inclusion">${esc(tv('zone_kind', 'inclusion'))}</option></select></label>
<label><span data-i18n="zone.buffer"></span> <input name="buffer_m" type="number" min="0" step="1" value="0" data-field="buffer_m"></label>
<fieldset><legend data-i18n="zone.schedule"></legend>
<label><input type="checkbox" name="always" checked> <span data-i18n="zone.always"></span></label>
<div id="windows" data-field="schedule"></div>
<button type="button" id="add-window" data-i18n="zone.add_window"></button></fieldset>
<fieldset><legend data-i18n="zone.exceptions"></legend><div id="exceptions" data-field="exceptions"></div>
<button type="button" id="add-exception" data-i18n="zone.add_exception"></button></fieldset>
<button type="submit" data-i18n="zone.save"></button>
<button type="button" id="zone-new" data-i18n="zone.new"></button>
${me().role !== 'officer' ? `<fieldset><legend data-i18n="zone.attach"></legend>
<label><span data-i18n="zone.shared_pick"></span> <select name="shared_id" data-field="zone_id"></select></label>
<button type="button" id="attach" data-i18n="zone.attach_button"></button></fieldset>` : ''}
</form></div>
<h2 data-i18n="report.case_title"></h2>
<form id="case-report" class="playback">
<label><span data-i18n="report.from"></span> <input type="datetime-local" name="from" data-field="from"></label>
<label><span data-i18n="report.to"></span> <input type="datetime-local" name="to" data-field="to"></label>
<button type="submit" data-i18n="report.button"></button>
</form>
<h2 data-i18n="playback.title"></h2>
<form id="playback" class="playback">
<label><span data-i18n="playback.from"></span> <input type="datetime-local" name="from" data-field="from"></label>
<label><span data-i18n="playback.to"></span> <input type="datetime-local" name="to" data-field="to"></label>
<button type="submit" data-i18n="playback.load"></button>
<span id="track-stats" class="muted" role="status"></span>
<label class="slider"><span data-i18n="playback.position"></span> <input type="range" name="pos" min="0" max="0" value="0" disabled></label>
<output id="pos-time" name="pos-time"></output>
</form>
<ol id="track-timeline" class="timeline"></ol>
</section>`);

  const map = makeMap(main.querySelector('#case-map'), { zoom: 14 });
  const zoneGroup = L.featureGroup().addTo(map);
  const trackGroup = L.featureGroup().addTo(map);
  const form = main.querySelector('#zone-form');
  let editing = null; // the zone being edited (null: a new one)
  let shape = null; // the drawn layer

  map.pm.setLang('console', geomanStrings(), 'en');
  map.pm.addControls({
    position: 'topleft', drawMarker: false, drawCircleMarker: false, drawPolyline: false,
    drawText: false, rotateMode: false, dragMode: false, drawRectangle: true,
    drawPolygon: true, drawCircle: true, cutPolygon: true, editMode: true, removalMode: false,
  });
  // the plugin puts its titles on the buttons' containers: name the buttons themselves
  main.querySelectorAll('.button-container[title] > .leaflet-buttons-control-button').forEach((a) => {
    a.setAttribute('aria-label', a.parentElement.getAttribute('title'));
  });
  const setShape = (layer) => {
    if (shape && shape !== layer) map.removeLayer(shape);
    shape = layer;
    main.querySelector('#shape-state').textContent = layer ? t(layer instanceof L.Circle ? 'zone.shape_circle' : 'zone.shape_polygon') : t('zone.shape_none');
    main.querySelector('#zone-form').dataset.shape = layer ? '1' : '';
  };
  map.on('pm:create', (e) => { setShape(e.layer); e.layer.pm.enable({ allowSelfIntersection: false }); });
  map.on('pm:cut', (e) => { if (e.originalLayer === shape) setShape(e.layer); });

  const drawZones = (list) => {
    zoneGroup.clearLayers();
    for (const z of list) {
      const layer = zoneLayer(z).bindTooltip(esc(z.name));
      layer.on('click', () => edit(z));
      zoneGroup.addLayer(layer);
    }
    main.querySelector('#zone-list').innerHTML = list.map((z) => `<li data-zone="${z.id}">
<button type="button" class="link" data-edit="${z.id}"><span translate="no">${esc(z.name)}</span></button> · ${esc(tv('zone_kind', z.kind))}${z.shared ? ` · ${esc(t('zone.shared'))}` : ''}
${z.buffer_m ? ` · ${esc(t('zone.buffer_of', { n: fmtNumber(z.buffer_m) }))}` : ''} · ${esc(z.schedule ? t('zone.scheduled') : t('zone.always'))}</li>`).join('') || `<li>${esc(t('zone.none'))}</li>`;
  };
  let zoneList = zones;
  drawZones(zoneList);
  const fit = () => {
    const b = L.latLngBounds([]);
    if (zoneGroup.getLayers().length) b.extend(zoneGroup.getBounds());
    if (c.last_fix) b.extend([c.last_fix.lat, c.last_fix.lon]);
    if (b.isValid()) map.fitBounds(b.pad(0.2), { maxZoom: 16 });
  };
  if (c.last_fix) L.circleMarker([c.last_fix.lat, c.last_fix.lon], { radius: 6, color: COLORS[c.compliance], fillOpacity: 0.9 }).addTo(map);
  fit();

  const windowsEl = main.querySelector('#windows');
  const excEl = main.querySelector('#exceptions');
  const fillForm = (z) => {
    editing = z;
    main.querySelector('#zone-form-title').textContent = z ? t('zone.edit_title', { name: z.name }) : t('zone.new_title');
    form.name.value = z?.name || '';
    form.kind.value = z?.kind || 'exclusion';
    form.buffer_m.value = z?.buffer_m ?? 0;
    form.always.checked = !z?.schedule;
    windowsEl.innerHTML = (z?.schedule?.windows || []).map((w, i) => windowRow(w, i)).join('');
    excEl.innerHTML = (z?.exceptions || []).map((x, i) => exceptionRow(x, i, tz)).join('');
    form.querySelectorAll('.field-error').forEach((e) => e.remove());
  };
  const edit = (z) => {
    fillForm(z);
    let layer;
    if (z.circle) layer = L.circle([z.circle.center[1], z.circle.center[0]], { radius: z.circle.radius_m });
    else [layer] = L.geoJSON(z.geometry).getLayers();
    layer.addTo(map);
    setShape(layer);
    layer.pm.enable({ allowSelfIntersection: false });
  };
  fillForm(null);
  setShape(null);

  main.querySelector('#zone-list').addEventListener('click', (e) => {
    const b = e.target.closest('[data-edit]');
    if (b) edit(zoneList.find((z) => z.id === b.dataset.edit));
  });
  main.querySelector('#zone-new').onclick = () => { fillForm(null); setShape(null); };
  main.querySelector('#add-window').onclick = () => {
    windowsEl.insertAdjacentHTML('beforeend', windowRow(undefined, windowsEl.children.length));
    form.always.checked = false;
  };
  main.querySelector('#add-exception').onclick = () => excEl.insertAdjacentHTML('beforeend', exceptionRow(null, excEl.children.length, tz));
  form.addEventListener('click', (e) => { if (e.target.classList.contains('remove')) e.target.closest('fieldset').remove(); });

  const body = () => {
    const out = { name: form.name.value, kind: form.kind.value, buffer_m: Number(form.buffer_m.value || 0) };
    if (shape instanceof L.Circle) {
      const ll = shape.getLatLng();
      out.circle = { center: [ll.lng, ll.lat], radius_m: shape.getRadius() };
      out.geometry = null;
    } else if (shape) {
      out.geometry = shape.toGeoJSON().geometry;
      out.circle = null;
    }
    const windows = [...windowsEl.querySelectorAll('.window')].map((f) => ({
      days: [...f.querySelectorAll('input[name=day]:checked')].map((i) => i.value),
      start: f.querySelector('[name=start]').value, end: f.querySelector('[name=end]').value,
    }));
    out.schedule = form.always.checked || !windows.length ? null : { windows };
    out.exceptions = [...excEl.querySelectorAll('.exception')].map((f) => {
      const from = f.querySelector('[name=from]').value;
      const to = f.querySelector('[name=to]').value;
      return { from: from ? localToIso(from, tz) : '', to: to ? localToIso(to, tz) : '', reason: f.querySelector('[name=reason]').value };
    });
    return out;
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = body();
    try {
      if (editing) {
        if (!shape) { delete data.geometry; delete data.circle; }
        await api(`/zones/${editing.id}`, { method: 'PATCH', body: data });
      } else {
        if (!data.geometry && !data.circle) data.geometry = null;
        await api(`/cases/${id}/zones`, { method: 'POST', body: data });
      }
      toast(t('zone.saved'));
      if (shape) { shape.pm.disable(); map.removeLayer(shape); }
      setShape(null);
      fillForm(null);
      zoneList = await all(`/cases/${id}/zones`);
      drawZones(zoneList);
      form.dataset.saved = String(Date.now());
    } catch (err) { showFieldErrors(form, err); }
  });
  const attach = main.querySelector('#attach');
  if (attach) {
    // the shared zones not attached yet (name, kind): picked, not typed
    const fillShared = async () => {
      const shared = await all('/zones').catch(() => []);
      const attached = new Set(zoneList.map((z) => z.id));
      const free = shared.filter((z) => !attached.has(z.id));
      form.shared_id.innerHTML = free.length
        ? `<option value="">${esc(t('zone.shared_choose'))}</option>${free.map((z) => `<option value="${z.id}">${esc(z.name)} · ${esc(tv('zone_kind', z.kind))}</option>`).join('')}`
        : `<option value="">${esc(t('zone.shared_none'))}</option>`;
      form.shared_id.disabled = !free.length;
      attach.disabled = !free.length;
      form.shared_id.dataset.count = String(free.length);
    };
    attach.onclick = async () => {
      if (!form.shared_id.value) return;
      try {
        await api(`/cases/${id}/zones/${encodeURIComponent(form.shared_id.value)}`, { method: 'POST' });
        zoneList = await all(`/cases/${id}/zones`);
        await fillShared(); // the picker first: the listed zone then says it is done
        drawZones(zoneList);
        toast(t('zone.attached'));
      } catch (err) { showFieldErrors(form, err); }
    };
    await fillShared();
  }

  // ---- court report of a period ----
  const rep = main.querySelector('#case-report');
  rep.from.value = isoToLocal(new Date(Date.now() - 7 * 24 * 3600e3).toISOString(), tz);
  rep.to.value = isoToLocal(new Date(Date.now() + 60e3).toISOString(), tz);
  rep.addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = rep.querySelector('button[type=submit]');
    const q = new URLSearchParams();
    if (rep.from.value) q.set('from', localToIso(rep.from.value, tz));
    if (rep.to.value) q.set('to', localToIso(rep.to.value, tz));
    button.disabled = true;
    toast(t('report.downloading'));
    try {
      await download(`/cases/${id}/report.pdf?${q}`, `case-${id}.pdf`);
      clearFieldErrors(rep);
      toast(t('report.done'));
    } catch (err) { showFieldErrors(rep, err); } finally { button.disabled = false; }
  });

  // ---- playback ----
  const pb = main.querySelector('#playback');
  const now = Date.now();
  pb.from.value = isoToLocal(new Date(now - 24 * 3600e3).toISOString(), tz);
  pb.to.value = isoToLocal(new Date(now + 60e3).toISOString(), tz);
  let points = [];
  let cursor = null;
  const moveTo = (i) => {
    const p = points[i];
    if (!p) return;
    if (!cursor) cursor = L.circleMarker(p.ll, { radius: 8, color: '#000', fillColor: '#ffeb3b', fillOpacity: 1 }).addTo(trackGroup);
    cursor.setLatLng(p.ll);
    pb.querySelector('#pos-time').textContent = `${fmtDateTime(p.ts, tz)} · ±${fmtNumber(Math.round(p.acc))} ${t('unit.m')}`;
  };
  pb.pos.addEventListener('input', () => moveTo(Number(pb.pos.value)));
  pb.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!pb.from.value || !pb.to.value) return;
    const from = localToIso(pb.from.value, tz);
    const to = localToIso(pb.to.value, tz);
    let track; let events; let checkins;
    try {
      [track, events, checkins] = await Promise.all([
        api(`/cases/${id}/track?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}&max_points=2000`),
        api(`/cases/${id}/events?since=${encodeURIComponent(from)}&limit=200`),
        api(`/cases/${id}/checkins?since=${encodeURIComponent(from)}&limit=200`),
      ]);
    } catch (err) { showFieldErrors(pb, err); return; }
    trackGroup.clearLayers();
    cursor = null;
    const [line, ...pts] = track.features;
    points = pts.map((f) => ({ ll: [f.geometry.coordinates[1], f.geometry.coordinates[0]], ts: f.properties.ts, acc: f.properties.acc, crossing: f.properties.crossing }));
    if (line?.geometry) L.geoJSON(line.geometry, { style: { color: '#283593', weight: 3 } }).addTo(trackGroup);
    let crossings = 0; let outliers = 0;
    for (const p of points) {
      if (p.crossing) {
        crossings += 1;
        L.circleMarker(p.ll, { radius: 7, color: '#e65100', weight: 3, className: 'crossing' }).bindTooltip(`${t('playback.crossing')} · ${fmtDateTime(p.ts, tz)}`).addTo(trackGroup);
      } else if (p.acc > OUTLIER_ACC_M) {
        outliers += 1;
        L.circle(p.ll, { radius: p.acc, color: '#757575', weight: 1, dashArray: '4', fillOpacity: 0.05, className: 'outlier' }).addTo(trackGroup);
      }
    }
    pb.pos.max = String(Math.max(points.length - 1, 0));
    pb.pos.disabled = points.length === 0;
    pb.pos.value = '0';
    moveTo(0);
    const stats = main.querySelector('#track-stats');
    stats.textContent = t('playback.stats', { n: fmtNumber(points.length), c: fmtNumber(crossings), o: fmtNumber(outliers) });
    stats.dataset.crossings = String(crossings);
    const rows = [
      ...points.filter((p) => p.crossing).map((p) => ({ ts: p.ts, label: t('playback.crossing'), cls: 'crossing' })),
      ...events.items.filter((ev) => ev.ts < to).map((ev) => ({ ts: ev.ts, label: tv('event', ev.type), cls: 'event' })),
      ...checkins.items.filter((ck) => ck.ts < to).map((ck) => ({ ts: ck.ts, label: t(ck.passed ? 'playback.checkin_passed' : 'playback.checkin_failed'), cls: 'checkin' })),
    ].sort((a, b) => new Date(a.ts) - new Date(b.ts));
    main.querySelector('#track-timeline').innerHTML = rows.map((r) => `<li class="${r.cls}"><button type="button" class="link" data-ts="${r.ts}"><time>${esc(fmtDateTime(r.ts, tz))}</time></button> ${esc(r.label)}</li>`).join('')
      || `<li>${esc(t('playback.nothing'))}</li>`;
    if (trackGroup.getLayers().length) map.fitBounds(trackGroup.getBounds().pad(0.1), { maxZoom: 17 });
  });
  main.querySelector('#track-timeline').addEventListener('click', (e) => {
    const b = e.target.closest('[data-ts]');
    if (!b || !points.length) return;
    const ts = new Date(b.dataset.ts).getTime();
    let best = 0;
    points.forEach((p, i) => { if (Math.abs(new Date(p.ts) - ts) < Math.abs(new Date(points[best].ts) - ts)) best = i; });
    pb.pos.value = String(best);
    moveTo(best);
  });
  main.dataset.loaded = '1';
  return () => map.remove();
}
