// Live map: the caseload's last positions coloured by compliance, clustered at low zoom;
// the zones of the cases in view when zoomed in; a click leads to the case page.
/* global L */
import { api } from '../api.js';
import { fmtAge, tv } from '../i18n.js';
import { makeMap, markerIcon, zoneLayer } from '../maps.js';
import { loadCaseload, store, watch } from '../store.js';
import { esc, html } from '../util.js';

const ZONES_MIN_ZOOM = 14;
const ZONES_MAX_CASES = 40;

export async function render(main) {
  html(main, `<section class="view view-map">
<h1 data-i18n="map.title"></h1>
<div class="legend" aria-hidden="true">
  <span><i class="pm pm-compliant"></i> <span data-i18n="compliance.compliant"></span></span>
  <span><i class="pm pm-violation"></i> <span data-i18n="compliance.violation"></span></span>
  <span><i class="pm pm-unknown"></i> <span data-i18n="compliance.unknown"></span></span>
  <span class="muted" data-i18n="map.zones_hint"></span>
</div>
<div id="live-map" class="map big" role="region" data-i18n-aria-label="map.title"></div>
</section>`);
  const el = main.querySelector('#live-map');
  const map = makeMap(el, { zoom: 11 });
  const cluster = L.markerClusterGroup({ chunkedLoading: true, disableClusteringAtZoom: 15, maxClusterRadius: 50 });
  map.addLayer(cluster);
  const markers = new Map();
  let recent = [];
  const zones = L.layerGroup().addTo(map);
  const zonesOf = new Map();

  const tip = (m) => {
    const c = store.cases.get(m.caseId);
    return `<span translate="no">${esc(c.subject_name)}</span><br>${esc(tv('compliance', c.compliance))} · ${esc(fmtAge(c.last_fix.ts))}`;
  };
  const make = (c) => {
    const m = L.marker([c.last_fix.lat, c.last_fix.lon], { icon: markerIcon(c.compliance), title: c.subject_name, keyboard: true });
    m.caseId = c.id;
    m.compliance = c.compliance;
    m.bindTooltip(() => tip(m));
    m.on('click keypress', () => { location.hash = `#/case/${m.caseId}`; });
    markers.set(c.id, m);
    return m;
  };
  const place = (c) => {
    const m = markers.get(c.id);
    if (!c.last_fix || c.status !== 'active') {
      if (m) { cluster.removeLayer(m); markers.delete(c.id); }
      return;
    }
    if (!m) { cluster.addLayer(make(c)); return; }
    m.setLatLng([c.last_fix.lat, c.last_fix.lon]);
    if (m.compliance !== c.compliance) {
      m.compliance = c.compliance;
      m.setIcon(markerIcon(c.compliance));
      cluster.refreshClusters(m);
    }
  };
  const placeAll = () => {
    const fresh = [];
    for (const c of store.cases.values()) {
      if (!markers.has(c.id) && c.last_fix && c.status === 'active') fresh.push(make(c));
      else place(c);
    }
    if (fresh.length) cluster.addLayers(fresh);
    el.dataset.markers = String(markers.size);
  };

  const loadZones = async () => {
    if (map.getZoom() < ZONES_MIN_ZOOM) { zones.clearLayers(); zonesOf.clear(); return; }
    const bounds = map.getBounds();
    const ids = [...markers.values()].filter((m) => bounds.contains(m.getLatLng()))
      .slice(0, ZONES_MAX_CASES).map((m) => m.caseId);
    for (const id of ids) {
      if (zonesOf.has(id)) continue;
      zonesOf.set(id, []);
      const list = (await api(`/cases/${id}/zones`).catch(() => ({ items: [] }))).items;
      for (const z of list) {
        const layer = zoneLayer(z).bindTooltip(`${esc(z.name)} · ${esc(tv('zone_kind', z.kind))}`);
        zones.addLayer(layer);
      }
    }
  };
  map.on('moveend', loadZones);

  const unwatch = watch((ids, full) => {
    if (full || !ids) { placeAll(); return; }
    for (const id of ids) { const c = store.cases.get(id); if (c) place(c); }
    el.dataset.markers = String(markers.size);
    el.dataset.updated = String(Date.now());
    // the people whose markers changed lately, and how many are red (tests, bench)
    recent = [...ids, ...recent].slice(0, 50);
    el.dataset.recent = recent.join(' ');
    el.dataset.violations = String([...markers.values()].filter((m) => m.compliance === 'violation').length);
  });
  placeAll();
  await loadCaseload();
  placeAll();
  if (markers.size) {
    const b = L.latLngBounds([...markers.values()].map((m) => m.getLatLng()));
    map.fitBounds(b.pad(0.1), { maxZoom: 15 });
  }
  main.dataset.loaded = '1';
  return () => {
    unwatch();
    map.off('moveend', loadZones);
    map.stop();
    cluster.clearLayers();
    map.removeLayer(cluster);
    map.remove();
  };
}
