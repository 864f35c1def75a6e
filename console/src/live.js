// Live updates: the API's alert and position streams (Server-Sent Events). A stream ends
// when the token expires; it is opened again, with the new token, after sign-in.
import { token } from './api.js';

const handlers = { alert: new Set(), position: new Set(), reconnect: new Set() };
const sources = {};
let lastAlertId = null;

export function subscribe(kind, fn) {
  handlers[kind].add(fn);
  return () => handlers[kind].delete(fn);
}

function open(kind, path, event) {
  const tk = token();
  if (!tk) return;
  const src = new EventSource(`/api/v1/${path}?access_token=${encodeURIComponent(tk)}`);
  sources[kind] = src;
  src.addEventListener(event, (e) => {
    if (kind === 'alert') lastAlertId = e.lastEventId;
    const data = JSON.parse(e.data);
    for (const fn of handlers[kind]) fn(data);
  });
  src.addEventListener('open', () => { document.body.dataset[`${kind}Stream`] = 'open'; });
  src.addEventListener('error', () => {
    // the browser retries on its own unless the server refused (a 401 ends the stream)
    if (src.readyState === EventSource.CLOSED) {
      document.body.dataset[`${kind}Stream`] = 'closed';
      setTimeout(() => { if (sources[kind] === src && token()) restart(kind); }, 2000);
    }
  });
}

function restart(kind) {
  sources[kind]?.close();
  if (kind === 'alert') open('alert', 'alerts/stream', 'alert');
  else open('position', 'positions/stream', 'position');
  for (const fn of handlers.reconnect) fn(kind);
}

export function start() {
  stop();
  open('alert', 'alerts/stream', 'alert');
  open('position', 'positions/stream', 'position');
}

export function stop() {
  for (const k of Object.keys(sources)) { sources[k].close(); delete sources[k]; }
}

export function lastAlertEvent() { return lastAlertId; }
