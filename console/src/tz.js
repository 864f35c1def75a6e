// Local wall-clock time in an IANA timezone <-> instants, with Intl only.
function offsetMs(instant, timeZone) {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).formatToParts(new Date(instant));
  const v = Object.fromEntries(parts.map((p) => [p.type, p.value]));
  const asUtc = Date.UTC(+v.year, +v.month - 1, +v.day, +v.hour, +v.minute, +v.second);
  return asUtc - Math.floor(instant / 1000) * 1000;
}

/** "YYYY-MM-DDTHH:MM" read in `timeZone` -> RFC 3339 in UTC. */
export function localToIso(local, timeZone) {
  const [d, tm] = local.split('T');
  const [y, mo, da] = d.split('-').map(Number);
  const [h, mi] = tm.split(':').map(Number);
  const naive = Date.UTC(y, mo - 1, da, h, mi);
  let guess = naive - offsetMs(naive, timeZone);
  guess = naive - offsetMs(guess, timeZone);
  return new Date(guess).toISOString();
}

/** An instant -> "YYYY-MM-DDTHH:MM" in `timeZone` (for datetime-local inputs). */
export function isoToLocal(iso, timeZone) {
  const ms = new Date(iso).getTime();
  const shifted = new Date(ms + offsetMs(ms, timeZone));
  return shifted.toISOString().slice(0, 16);
}
