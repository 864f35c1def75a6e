// Proximity search (supervisors, investigators): a place drawn on the map (a circle or a
// polygon), a window of at most 7 days, a mandatory reason and case number; the cases
// whose person may have been there, listed and drawn with their supporting fixes.
/* global L */
import { api, me } from '../api.js';
import { fmtDateTime, fmtNumber, t } from '../i18n.js';
import { geomanStrings, makeMap } from '../maps.js';
import { loadCaseload, store } from '../store.js';
import { isoToLocal, localToIso } from '../tz.js';
import { clearFieldErrors, esc, html, showFieldErrors } from '../util.js';

const TZ = 'Asia/Almaty'; // the service's home timezone (the cases' default)
const MAX_WINDOW_MS = 7 * 24 * 3600e3;
const PALETTE = ['#6a1b9a', '#00838f', '#ef6c00', '#2e7d32', '#ad1457', '#4527a0', '#5d4037'];

const meters = (m) => t('unit.meters', { n: fmtNumber(m, { maximumFractionDigits: 0 }) });
const percent = (p) => fmtNumber(p, { style: 'percent', maximumFractionDigits: 1 });

function caseLabel(m) {
  const c = store.cases.get(m.case_id);
  if (c) return `<a href="#/case/${m.case_id}" translate="no">${esc(c.subject_name)}</a>`;
  return `<span translate="no">${esc(m.case_id)}</span>`; // an investigator has no caseload
}

function gapsCell(m) {
  if (!m.gaps.length) return esc(t('inv.no_gaps'));
  return `<ul class="plain">${m.gaps.map((g) => `<li>${esc(t('inv.gap', {
    from: fmtDateTime(g.from, TZ), to: fmtDateTime(g.to, TZ),
    m: t('unit.minutes', { n: fmtNumber(Math.round(g.minutes)) }),
  }))}${g.near_place ? ` · <strong>${esc(t('inv.gap_near'))}</strong>` : ''}</li>`).join('')}</ul>`;
}

function row(m, i) {
  return `<tr data-case="${m.case_id}" data-probability="${m.probability}">
<td><span class="swatch sw-${i % PALETTE.length}" aria-hidden="true"></span> ${caseLabel(m)}</td>
<td>${esc(percent(m.probability))}</td>
<td>${esc(t('inv.closest_at', { d: meters(m.closest.distance_m), time: fmtDateTime(m.closest.ts, TZ) }))}</td>
<td>${esc(t('inv.fixes_of', { n: fmtNumber(m.supporting_fixes), total: fmtNumber(m.fixes_in_window) }))}</td>
<td>${gapsCell(m)}</td>
<td><button type="button" class="link" data-show="${i}">${esc(t('inv.show'))}</button></td></tr>`;
}

export async function render(main) {
  html(main, `<section class="view view-investigate">
<h1 data-i18n="inv.title"></h1>
<p class="muted" data-i18n="inv.intro"></p>
<div class="editor">
<div id="inv-map" class="map big" role="region" data-i18n-aria-label="inv.map"></div>
<form id="inv-form" class="zone-form" novalidate>
<h2 data-i18n="inv.place"></h2>
<p class="muted small" data-i18n="inv.place_hint"></p>
<p id="place-state" class="shape-state" data-field="geometry" role="status"></p>
<fieldset id="circle-fields" data-field="circle"><legend data-i18n="inv.circle"></legend>
<label><span data-i18n="inv.lat"></span> <input type="number" name="lat" step="any" min="-90" max="90" translate="no"></label>
<label><span data-i18n="inv.lon"></span> <input type="number" name="lon" step="any" min="-180" max="180" translate="no"></label>
<label><span data-i18n="inv.radius"></span> <input type="number" name="radius_m" step="1" min="1" max="10000" data-field="circle.radius_m"></label>
</fieldset>
<p class="muted small">${esc(t('inv.timezone', { tz: '\u0001' })).replace('\u0001', `<span translate="no">${TZ}</span>`)}</p>
<label><span data-i18n="inv.from"></span> <input type="datetime-local" name="from" data-field="from" required></label>
<label><span data-i18n="inv.to"></span> <input type="datetime-local" name="to" data-field="to" required></label>
<label><span data-i18n="inv.reason"></span> <textarea name="reason" rows="3" data-field="reason" required minlength="10"></textarea></label>
<label><span data-i18n="inv.reference"></span> <input name="reference" data-field="reference" required></label>
<button type="submit" data-i18n="inv.search"></button>
</form></div>
<h2 data-i18n="inv.results"></h2>
<p id="inv-count" class="muted" role="status"></p>
<table class="grid" id="inv-results" hidden><thead><tr><th data-i18n="inv.case"></th><th data-i18n="inv.probability"></th>
<th data-i18n="inv.closest"></th><th data-i18n="inv.fixes"></th><th data-i18n="inv.gaps"></th><th></th></tr></thead><tbody></tbody></table>
<details id="inv-model" hidden><summary data-i18n="inv.model"></summary><p translate="no"></p></details>
</section>`);

  const map = makeMap(main.querySelector('#inv-map'), { zoom: 13 });
  const results = L.featureGroup().addTo(map);
  const form = main.querySelector('#inv-form');
  let shape = null;
  let groups = [];

  map.pm.setLang('console', geomanStrings(), 'en');
  map.pm.addControls({
    position: 'topleft', drawMarker: false, drawCircleMarker: false, drawPolyline: false,
    drawText: false, rotateMode: false, dragMode: false, cutPolygon: false, removalMode: false,
    drawRectangle: true, drawPolygon: true, drawCircle: true, editMode: true,
  });
  main.querySelectorAll('.button-container[title] > .leaflet-buttons-control-button').forEach((a) => {
    a.setAttribute('aria-label', a.parentElement.getAttribute('title'));
  });
  const state = main.querySelector('#place-state');
  const describe = () => {
    if (!shape) state.textContent = t('inv.place_none');
    else if (shape instanceof L.Circle) state.textContent = t('inv.place_circle', { r: meters(shape.getRadius()) });
    else state.textContent = t('inv.place_polygon');
    form.dataset.place = shape ? (shape instanceof L.Circle ? 'circle' : 'polygon') : '';
  };
  // a circle's centre and radius are also typed (a crime scene's coordinates), both ways
  const toFields = () => {
    if (!(shape instanceof L.Circle)) { form.lat.value = ''; form.lon.value = ''; form.radius_m.value = ''; return; }
    const ll = shape.getLatLng();
    form.lat.value = ll.lat.toFixed(6);
    form.lon.value = ll.lng.toFixed(6);
    form.radius_m.value = String(Math.round(shape.getRadius()));
  };
  const useShape = (layer) => {
    if (shape && shape !== layer) map.removeLayer(shape);
    shape = layer;
    shape.setStyle({ color: '#000', weight: 2, dashArray: '6 4', fillOpacity: 0.05 });
    shape.on('pm:edit', () => { toFields(); describe(); });
    shape.pm.enable({ allowSelfIntersection: false });
    toFields();
    describe();
  };
  map.on('pm:create', (e) => useShape(e.layer));
  const fromFields = () => {
    const lat = parseFloat(form.lat.value);
    const lon = parseFloat(form.lon.value);
    const r = parseFloat(form.radius_m.value);
    if (![lat, lon, r].every(Number.isFinite) || Math.abs(lat) > 90 || Math.abs(lon) > 180 || r <= 0) return;
    if (shape instanceof L.Circle) {
      shape.setLatLng([lat, lon]);
      shape.setRadius(r);
      describe();
    } else {
      useShape(L.circle([lat, lon], { radius: r }).addTo(map));
    }
    map.fitBounds(shape.getBounds().pad(0.3), { maxZoom: 17 });
  };
  for (const name of ['lat', 'lon', 'radius_m']) form[name].addEventListener('change', fromFields);
  describe();

  const now = Date.now();
  form.from.value = isoToLocal(new Date(now - 24 * 3600e3).toISOString(), TZ);
  form.to.value = isoToLocal(new Date(now + 60e3).toISOString(), TZ);

  const table = main.querySelector('#inv-results');
  table.addEventListener('click', (e) => {
    const b = e.target.closest('[data-show]');
    const g = b && groups[Number(b.dataset.show)];
    if (g && g.getLayers().length) map.fitBounds(g.getBounds().pad(0.3), { maxZoom: 17 });
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const local = { fieldErrors: () => ({}), message: '' };
    const errs = {};
    if (!shape) errs.geometry = t('inv.need_place');
    const from = form.from.value ? localToIso(form.from.value, TZ) : '';
    const to = form.to.value ? localToIso(form.to.value, TZ) : '';
    if (from && to && new Date(to) - new Date(from) > MAX_WINDOW_MS) errs.to = t('inv.too_long');
    if (Object.keys(errs).length) { local.fieldErrors = () => errs; showFieldErrors(form, local); return; }
    const body = { from, to, reason: form.reason.value, reference: form.reference.value };
    if (shape instanceof L.Circle) {
      const ll = shape.getLatLng();
      body.circle = { center: [ll.lng, ll.lat], radius_m: shape.getRadius() };
    } else {
      body.geometry = shape.toGeoJSON().geometry;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    let answer;
    try {
      answer = await api('/investigations/proximity', { method: 'POST', body });
    } catch (err) { showFieldErrors(form, err); return; } finally { button.disabled = false; }
    clearFieldErrors(form);
    show(answer);
  });

  const show = (answer) => {
    results.clearLayers();
    groups = answer.matches.map((m, i) => {
      const color = PALETTE[i % PALETTE.length];
      const g = L.featureGroup().addTo(results);
      for (const f of m.fixes) {
        const tip = t('inv.fix_tip', { time: fmtDateTime(f.ts, TZ), acc: meters(f.acc), p: percent(f.p) });
        L.circle([f.lat, f.lon], { radius: f.acc, color, weight: 1, fillOpacity: 0.08, className: 'inv-acc' }).addTo(g);
        L.circleMarker([f.lat, f.lon], { radius: 4, color, fillOpacity: 0.9, className: 'inv-fix' }).bindTooltip(tip).addTo(g);
      }
      const c = m.closest;
      L.circleMarker([c.lat, c.lon], { radius: 7, color, weight: 3, fillOpacity: 0, className: 'inv-closest' })
        .bindTooltip(`${t('inv.closest')} · ${meters(c.distance_m)} · ${fmtDateTime(c.ts, TZ)}`).addTo(g);
      return g;
    });
    table.querySelector('tbody').innerHTML = answer.matches.map(row).join('');
    table.hidden = answer.matches.length === 0;
    table.dataset.count = String(answer.matches.length);
    main.querySelector('#inv-count').textContent = answer.matches.length
      ? t('inv.count', { n: fmtNumber(answer.matches.length), id: answer.query_id }) : t('inv.none');
    const model = main.querySelector('#inv-model');
    model.querySelector('p').textContent = answer.model;
    model.hidden = false;
    const b = L.latLngBounds([]);
    if (shape) b.extend(shape.getBounds());
    if (results.getLayers().length) b.extend(results.getBounds());
    if (b.isValid()) map.fitBounds(b.pad(0.2), { maxZoom: 17 });
  };

  const relabel = () => {
    // names arrive with the caseload after the first answer may be shown
    table.querySelectorAll('tbody tr').forEach((tr) => {
      const c = store.cases.get(tr.dataset.case);
      const cell = tr.querySelector('td span[translate=no]');
      if (c && cell) cell.outerHTML = `<a href="#/case/${tr.dataset.case}" translate="no">${esc(c.subject_name)}</a>`;
    });
  };
  if (me().role !== 'investigator') loadCaseload().then(relabel); // the supervisor's names
  main.dataset.loaded = '1';
  return () => map.remove();
}
