// Small DOM helpers.
import { applyStatic } from './i18n.js';

/** Escape text for innerHTML. */
export function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

/** Set `root`'s HTML and translate its data-i18n labels. */
export function html(root, markup) {
  root.innerHTML = markup;
  applyStatic(root);
  return root;
}

export function toast(message, kind = 'info') {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.className = `show ${kind}`;
  clearTimeout(el.timer);
  el.timer = setTimeout(() => { el.className = ''; }, 5000);
}

/** Remove the field errors shown in `form` (after a request went through). */
export function clearFieldErrors(form) {
  form.querySelectorAll('.field-error').forEach((e) => e.remove());
  form.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
}

/** Show a 422's field errors next to the inputs they name (data-field="<name>"). */
export function showFieldErrors(form, err) {
  clearFieldErrors(form);
  const fields = err.fieldErrors ? err.fieldErrors() : {};
  let shown = 0;
  for (const [name, message] of Object.entries(fields)) {
    let target = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    for (let n = name; !target && n.includes('.'); ) {
      n = n.slice(0, n.lastIndexOf('.'));
      target = form.querySelector(`[data-field="${CSS.escape(n)}"]`);
    }
    if (!target) continue;
    const p = document.createElement('p');
    p.className = 'field-error error';
    p.textContent = message;
    p.dataset.for = name;
    target.setAttribute('aria-invalid', 'true');
    target.insertAdjacentElement('afterend', p);
    shown += 1;
  }
  if (!shown) toast(err.message, 'error');
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
