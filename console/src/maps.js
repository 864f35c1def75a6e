// Leaflet maps with the configured tiles; without reachable tiles, a plain background
// with a scale (zones, tracks and positions still drawn).
/* global L */
import { config } from './app.js';
import { t } from './i18n.js';
import { esc } from './util.js';

const ALMATY = [43.238, 76.945];

export function makeMap(el, { zoom = 12, center = ALMATY } = {}) {
  const map = L.map(el, {
    center, zoom, keyboard: true, zoomControl: false, maxZoom: 19,
    // no zoom animation: a view left mid-animation would leave Leaflet's timers behind
    zoomAnimation: false, markerZoomAnimation: false,
  });
  L.control.zoom({ zoomInTitle: t('map.zoom_in'), zoomOutTitle: t('map.zoom_out') }).addTo(map);
  const scale = L.control.scale({ metric: true, imperial: false });
  scale._updateMetric = function updateMetric(maxMeters) { // units in the console's language
    const meters = this._getRoundNum(maxMeters);
    const label = meters < 1000 ? t('unit.meters', { n: meters }) : t('unit.km', { n: meters / 1000 });
    this._updateScale(this._mScale, label, meters / maxMeters);
  };
  scale.addTo(map);
  map.attributionControl.setPrefix('<span translate="no">Leaflet</span>');
  el.classList.add('plain-map');
  if (config.tiles) {
    const layer = L.tileLayer(config.tiles, {
      attribution: esc(config.attribution), maxZoom: 19, crossOrigin: false,
    });
    let loaded = 0;
    let failed = 0;
    layer.on('tileload', () => { loaded += 1; el.dataset.tiles = 'ok'; });
    layer.on('tileerror', () => {
      failed += 1;
      if (!loaded && failed >= 4) { // unreachable: drop them, keep the plain background
        map.removeLayer(layer);
        el.dataset.tiles = 'none';
      }
    });
    layer.addTo(map);
  } else {
    el.dataset.tiles = 'none';
  }
  return map;
}

export const COLORS = {
  compliant: '#1b7f3b', violation: '#c62828', unknown: '#6b6b6b',
  inclusion: '#1565c0', exclusion: '#c62828',
};

/** A zone (ZonePublic) as a Leaflet layer. */
export function zoneLayer(zone, opts = {}) {
  const style = { color: COLORS[zone.kind], weight: 2, fillOpacity: 0.12, ...opts };
  if (zone.circle) {
    const [lon, lat] = zone.circle.center;
    return L.circle([lat, lon], { radius: zone.circle.radius_m, ...style });
  }
  return L.geoJSON(zone.geometry, { style: () => style });
}

export function markerIcon(compliance, label = '') {
  return L.divIcon({
    className: `pm pm-${compliance}`,
    html: `<span aria-hidden="true">${esc(label)}</span>`,
    iconSize: [16, 16],
  });
}

const GEOMAN = {
  tooltips: ['firstVertex', 'continueLine', 'finishPoly', 'finishRect', 'startCircle', 'finishCircle'],
  actions: ['finish', 'cancel', 'removeLastVertex'],
  buttonTitles: ['drawPolyButton', 'drawCircleButton', 'drawRectButton', 'editButton', 'cutButton'],
};

/** The drawing plugin's labels from our catalogues. */
export function geomanStrings() {
  const out = {};
  for (const [group, keys] of Object.entries(GEOMAN)) {
    out[group] = Object.fromEntries(keys.map((k) => [k, t(`geoman.${group}.${k}`)]));
  }
  return out;
}
