"""The officers' console in a real headless Chromium against `probation serve` on real
PostgreSQL/TimescaleDB and mosquitto: sign-in, caseload, live alerts and positions from an
MQTT fix, acknowledge/resolve, the zone editor, playback, languages, scoping, session expiry,
offline API docs and accessibility. Screenshots go to tests/e2e/artefacts/."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from db.server import free_port
from tests.e2e.conftest import (
    ADMIN_PASSWORD,
    JWT_SECRET,
    PROBATION,
    Service,
    _env,
    stop,
    wait_healthy,
)
from tests.e2e.console_world import HOME, PASSWORD, ZONE_CENTER, World, make_world, wait_for

CONSOLE = Path(__file__).resolve().parents[2] / "console"
CATALOGUES = {lang: json.loads((CONSOLE / "src" / "i18n" / f"{lang}.json").read_text())
              for lang in ("en", "ru", "kk")}


@pytest.fixture(scope="module")
def world(service: Service) -> World:
    w = make_world(service.base, service.mqtt_url, ADMIN_PASSWORD, service.prefix)
    # ingestion stored every person's position
    token = w.token("sup1")
    wait_for(lambda: all(c["last_fix"] for c in httpx.get(
        f"{service.base}/api/v1/cases", headers={"Authorization": f"Bearer {token}"}
    ).json()["items"]), what="the first fixes")
    return w


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-US")
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    ctx.on("console", lambda m: errors.append(m.text) if m.type == "error"
           and "Content Security Policy" in m.text
           and "cdn.redoc.ly" not in m.text  # ReDoc's vendor logo: refused on purpose
           else None)
    try:
        yield ctx
    finally:
        ctx.close()
    assert errors == [], errors  # no uncaught error in the console's scripts, nothing blocked


def sign_in(page: Any, base: str, username: str, password: str = PASSWORD,
            hash_: str = "") -> None:
    page.goto(f"{base}/{hash_}")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#signin-form input[name=username]", username)
    page.fill("#signin-form input[name=password]", password)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("header.top:not([hidden])")


def open_view(page: Any, hash_: str) -> None:
    page.evaluate("document.querySelector('main').removeAttribute('data-loaded')")
    page.evaluate(f"location.hash = '{hash_}'")
    page.wait_for_selector("main[data-loaded='1']")


def api(w: World, who: str, path: str) -> Any:
    r = httpx.get(f"{w.base}/api/v1{path}", headers={"Authorization": f"Bearer {w.token(who)}"})
    r.raise_for_status()
    return r.json()


def download_report(page: Any, button: str, save_as: Path) -> Any:
    """Click a report button: the PDF is fetched with the in-memory token and saved."""
    with page.expect_download(timeout=30000) as info:
        page.click(button)
    download = info.value
    download.save_as(str(save_as))
    assert save_as.read_bytes()[:5] == b"%PDF-", save_as.read_bytes()[:200]
    text = subprocess.run(["pdftotext", "-l", "1", str(save_as), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "SHA-256" in text, text[:500]
    return download


def test_sign_in_caseload_and_scope(world: World, context: Any, artefacts: Path) -> None:
    page = context.new_page()
    page.goto(f"{world.base}/")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#signin-form input[name=username]", "off1")
    page.fill("#signin-form input[name=password]", "wrong-password")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:has-text('wrong')")
    page.fill("#signin-form input[name=password]", PASSWORD)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("main[data-loaded='1'] #caseload tbody tr")
    names = page.locator("#caseload tbody tr td:first-child a").all_inner_texts()
    assert sorted(names) == ["Асель Нурланова", "Бауыржан Сейткали"]
    assert page.locator("nav a[href='#/investigate']").is_hidden()  # supervisors, investigators
    # an officer never sees another officer's case: not listed, not searchable, not by URL
    page.fill("input[name=q]", "Дина")
    assert page.locator("#caseload tbody tr").count() == 0
    iin = api(world, "off1", f"/cases/{world.people['Асель Нурланова'].case_id}")["subject_iin"]
    page.fill("input[name=q]", iin)
    assert page.locator("#caseload tbody tr td:first-child a").all_inner_texts() == [
        "Асель Нурланова"]  # search by IIN
    page.fill("input[name=q]", "")
    open_view(page, f"#/case/{world.people['Дина Омарова'].case_id}")
    assert page.locator("main h1").inner_text() == CATALOGUES["en"]["case.not_found"]
    assert "Дина" not in page.inner_text("body")
    page.evaluate("location.hash = '#/cases'")
    page.wait_for_selector("#caseload tbody tr")
    page.screenshot(path=str(artefacts / "caseload.png"))
    # the session token is kept in memory only
    stored = page.evaluate("JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})"
                           " + document.cookie")
    assert world.token("off1")[:20] not in stored and "eyJ" not in stored
    # sign-out clears the page
    page.click("#signout")
    page.wait_for_selector("dialog#signin[open]")
    assert page.locator("#caseload").count() == 0


def test_live_alert_queue_map_and_resolution(world: World, context: Any, artefacts: Path) -> None:
    queue = context.new_page()
    sign_in(queue, world.base, "off1", hash_="#/alerts")
    queue.wait_for_selector("main[data-view=alerts][data-loaded='1']")
    live_map = context.new_page()
    sign_in(live_map, world.base, "off1", hash_="#/map")
    live_map.wait_for_selector("main[data-view=map][data-loaded='1']")
    assert live_map.get_attribute("#live-map", "data-markers") == "2"
    for page in (queue, live_map):  # both streams connected before the fix is published
        page.wait_for_selector("body[data-alert-stream=open][data-position-stream=open]")
    assert live_map.locator(".leaflet-marker-icon.pm-violation").count() == 0

    # a violation opens on the second of 2 fixes inside, at least 30 s apart (the rules)
    world.first_fix_inside("Асель Нурланова", *ZONE_CENTER)
    t0 = time.monotonic()
    world.publish_fix("Асель Нурланова", *ZONE_CENTER)
    # within 2 s, without a reload: in the queue and on the map
    queue.wait_for_selector(".alert-item[data-type=exclusion_zone_entered]", timeout=2000)
    live_map.wait_for_selector(".leaflet-marker-icon.pm-violation", timeout=max(
        1, 2000 - (time.monotonic() - t0) * 1000))
    elapsed = time.monotonic() - t0
    assert elapsed <= 2.0, elapsed
    live_map.screenshot(path=str(artefacts / "map.png"))

    queue.click(".alert-item[data-type=exclusion_zone_entered]")
    queue.wait_for_selector("#alert-actions")
    queue.wait_for_selector("#evidence-map .leaflet-interactive")  # fixes and zone drawn
    queue.screenshot(path=str(artefacts / "alerts.png"))
    alert_id = queue.get_attribute(".alert-item[data-type=exclusion_zone_entered]", "data-id")
    pdf = download_report(queue, "#alert-report", artefacts / "alert-report.pdf")
    assert pdf.suggested_filename == f"alert-{alert_id}.pdf"
    queue.fill("#alert-actions textarea[name=note]", "Позвонил, выехал")
    queue.click("#ack")
    queue.wait_for_selector(f"[data-testid=alert-status]:has-text('{CATALOGUES['en']['alert_status.acknowledged']}')")
    queue.select_option("#alert-actions select[name=resolution]", "violation_confirmed")
    queue.fill("#alert-actions textarea[name=note]", "Нарушение подтверждено на месте")
    queue.click("#resolve")
    queue.wait_for_selector(f"[data-testid=alert-status]:has-text('{CATALOGUES['en']['alert_status.resolved']}')")
    timeline = queue.inner_text(".timeline")
    assert "Позвонил, выехал" in timeline and "Нарушение подтверждено на месте" in timeline
    queue.wait_for_selector(".alert-item[data-type=exclusion_zone_entered]", state="detached")
    alerts = api(world, "off1", "/alerts?status=resolved")["items"]
    assert [a["resolution"] for a in alerts] == ["violation_confirmed"]
    world.publish_fix("Асель Нурланова", *HOME)  # back home for the tests that follow


def test_zone_editor_then_a_fix_inside_raises_an_alert(world: World, context: Any,
                                                       artefacts: Path) -> None:
    person = world.people["Бауыржан Сейткали"]
    page = context.new_page()
    sign_in(page, world.base, "off1", hash_=f"#/case/{person.case_id}")
    page.wait_for_selector("main[data-view=case][data-loaded='1']")
    # the case's devices (a page of assignments, api-v1.md's list shape): its bracelet, current
    assert person.serial in page.inner_text(".view-case table.grid tbody")
    box = page.locator("#case-map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.click(".leaflet-pm-icon-polygon")
    for dx, dy in ((-80, -60), (80, -60), (80, 60), (-80, 60), (-80, -60)):
        page.mouse.click(cx + dx, cy + dy)
    page.wait_for_selector("#zone-form[data-shape='1']")
    # the API's validation error is shown on the field it names
    page.click("#zone-form button[type=submit]")
    page.wait_for_selector("#zone-form .field-error[data-for=name]")
    page.fill("#zone-form input[name=name]", "Рынок")
    page.fill("#zone-form input[name=buffer_m]", "20")
    page.click("#add-window")
    page.fill("#windows input[name=start]", "22:00")
    page.fill("#windows input[name=end]", "06:00")
    page.uncheck("#zone-form input[name=always]")
    page.check("#zone-form input[name=always]")  # always active after all
    page.click("#zone-form button[type=submit]")
    page.wait_for_selector("#zone-form[data-saved]")
    page.wait_for_selector("#zone-list :text('Рынок')")
    page.screenshot(path=str(artefacts / "case.png"))
    zones = api(world, "off1", f"/cases/{person.case_id}/zones")["items"]
    zone = next(z for z in zones if z["name"] == "Рынок")
    assert zone["kind"] == "exclusion" and zone["buffer_m"] == 20
    assert zone["geometry"]["type"] == "Polygon" and zone["schedule"] is None
    ring = zone["geometry"]["coordinates"][0]
    lon = sum(p[0] for p in ring[:-1]) / (len(ring) - 1)
    lat = sum(p[1] for p in ring[:-1]) / (len(ring) - 1)
    world.first_fix_inside(person.name, lat, lon)
    world.publish_fix(person.name, lat, lon)
    found = wait_for(lambda: [a for a in api(world, "off1", f"/alerts?case_id={person.case_id}")[
        "items"] if a["zone_id"] == zone["id"] and a["type"] == "exclusion_zone_entered"],
        what="the alert of the drawn zone")
    assert found


def test_track_playback_shows_the_crossings(world: World, context: Any, artefacts: Path) -> None:
    person = world.people["Дина Омарова"]
    admin = world.token("admin", ADMIN_PASSWORD)
    r = httpx.post(f"{world.base}/api/v1/cases/{person.case_id}/zones", headers={
        "Authorization": f"Bearer {admin}"}, json={
        "name": "Школа", "kind": "exclusion",
        "circle": {"center": [HOME[1] + 0.01, HOME[0]], "radius_m": 200}})
    assert r.status_code == 201, r.text
    start = datetime.now(UTC) - timedelta(seconds=13)
    path = [(HOME[0], HOME[1] + 0.01 * k / 6) for k in range(13)]  # through the school and on
    for k, (lat, lon) in enumerate(path):
        world.publish_fix(person.name, lat, lon, ts=start + timedelta(seconds=k),
                          acc=250 if k == 2 else 10)
    wait_for(lambda: len(api(world, "off2", f"/cases/{person.case_id}/track")["features"]) >= 14,
             what="the track stored")
    page = context.new_page()
    sign_in(page, world.base, "off2", hash_=f"#/case/{person.case_id}")
    page.wait_for_selector("main[data-view=case][data-loaded='1']")
    page.click("#playback button[type=submit]")
    page.wait_for_selector("#track-stats[data-crossings]")
    assert int(page.get_attribute("#track-stats", "data-crossings")) >= 2
    assert page.locator("#case-map path.crossing").count() >= 2
    assert page.locator("#case-map path.outlier").count() >= 1
    assert page.locator("#track-timeline li.crossing").count() >= 2
    slider = page.locator("#playback input[name=pos]")
    slider.fill(str(int(slider.get_attribute("max")) // 2))
    assert page.inner_text("#pos-time")
    page.screenshot(path=str(artefacts / "playback.png"), full_page=True)
    # the court report of a period, from the case page
    page.fill("#case-report input[name=from]", page.input_value("#playback input[name=from]"))
    pdf = download_report(page, "#case-report button[type=submit]", artefacts / "case-report.pdf")
    assert pdf.suggested_filename == f"case-{person.case_id}.pdf"


def test_proximity_search_for_supervisors_and_investigators(world: World, context: Any,
                                                           artefacts: Path) -> None:
    """A place picked on the map (then its centre typed), the window and the mandatory
    reason checked, the cases listed and drawn; an investigator lands on the search."""
    # everyone near home now (the world's first fixes may predate the devices' assignment)
    published: dict[str, datetime] = {}
    for k, person in enumerate(world.people.values()):
        now = datetime.now(UTC)
        world.publish_fix(person.name, HOME[0] + 0.001 * k, HOME[1], ts=now)
        published[person.case_id] = now
    wait_for(lambda: all(datetime.fromisoformat(api(world, "sup1", f"/cases/{cid}")["last_fix"][
        "ts"]) >= ts for cid, ts in published.items()), what="the fixes near home")
    page = context.new_page()
    sign_in(page, world.base, "sup1", hash_="#/investigate")
    page.wait_for_selector("main[data-view=investigate][data-loaded='1']")
    box = page.locator("#inv-map").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.click(".leaflet-pm-icon-circle")
    page.mouse.click(cx, cy)
    page.mouse.click(cx + 60, cy)
    page.wait_for_selector("#inv-form[data-place=circle]")
    assert page.input_value("#inv-form input[name=lat]") != ""  # picked on the map
    page.fill("#inv-form input[name=lat]", str(HOME[0]))
    page.fill("#inv-form input[name=lon]", str(HOME[1]))
    page.fill("#inv-form input[name=radius_m]", "600")
    page.press("#inv-form input[name=radius_m]", "Tab")
    to = page.input_value("#inv-form input[name=to]")
    page.fill("#inv-form input[name=from]", (datetime.fromisoformat(to) - timedelta(days=8))
              .strftime("%Y-%m-%dT%H:%M"))
    page.click("#inv-form button[type=submit]")  # over 7 days: refused before asking
    page.wait_for_selector("#inv-form .field-error[data-for=to]")
    page.fill("#inv-form input[name=from]", (datetime.fromisoformat(to) - timedelta(hours=2))
              .strftime("%Y-%m-%dT%H:%M"))
    page.fill("#inv-form input[name=reference]", "УД 2026-0142-17")
    page.click("#inv-form button[type=submit]")  # no reason: the API's 422 on its field
    page.wait_for_selector("#inv-form .field-error[data-for=reason]")
    page.fill("#inv-form textarea[name=reason]", "Кража в доме 52, проверка по заявлению")
    page.click("#inv-form button[type=submit]")
    page.wait_for_selector("#inv-results[data-count]:not([hidden])")
    rows = page.locator("#inv-results tbody tr")
    names = {r.locator("td").first.inner_text().strip() for r in rows.all()}
    assert set(world.people) <= names, names  # sup1's three cases were all there
    asel = page.locator(f"#inv-results tr[data-case='{world.people['Асель Нурланова'].case_id}']")
    assert float(asel.get_attribute("data-probability")) > 0.9
    assert page.locator("#inv-map path.inv-acc").count() >= 3  # fixes with accuracy circles
    assert page.locator("#inv-form [aria-invalid]").count() == 0
    page.screenshot(path=str(artefacts / "investigate.png"), full_page=True)
    admin = {"Authorization": f"Bearer {world.token('admin', ADMIN_PASSWORD)}"}
    audit = httpx.get(f"{world.base}/api/v1/audit?limit=500", headers=admin).json()["items"]
    assert any(e["action"] == "investigation.proximity" and "Кража в доме 52" in json.dumps(
        e, ensure_ascii=False) for e in audit)
    r = httpx.post(f"{world.base}/api/v1/users", headers=admin, json={
        "username": "inv1", "password": PASSWORD, "role": "investigator",
        "full_name": "Нұрлан Тергеуші"})
    assert r.status_code == 201, r.text
    inv = context.new_page()
    sign_in(inv, world.base, "inv1")
    inv.wait_for_selector("main[data-view=investigate][data-loaded='1']")
    assert inv.locator("nav a:visible").all_inner_texts() == [CATALOGUES["en"]["nav.investigate"]]
    # a polygon (a rectangle, 8 km wide at zoom 12) west of the map's centre (the city
    # centre), over the people's homes 4.5 km west of it
    inv.click(".leaflet-control-zoom-out")
    ibox = inv.locator("#inv-map").bounding_box()
    icx, icy = ibox["x"] + ibox["width"] / 2, ibox["y"] + ibox["height"] / 2
    inv.click(".leaflet-pm-icon-rectangle")
    inv.mouse.click(icx - 250, icy - 60)
    inv.mouse.click(icx + 50, icy + 60)
    inv.wait_for_selector("#inv-form[data-place=polygon]")
    inv.fill("#inv-form textarea[name=reason]", "Грабёж на проспекте, запрос следователя")
    inv.fill("#inv-form input[name=reference]", "УД 2026-0150-02")
    inv.click("#inv-form button[type=submit]")
    inv.wait_for_selector("#inv-results[data-count]:not([hidden])")
    found = set(inv.locator("#inv-results tbody tr").evaluate_all(
        "rows => rows.map((r) => r.dataset.case)"))
    assert {p.case_id for p in world.people.values()} <= found
    # no caseload: the case is named by its id, not linked
    assert inv.locator("#inv-results tbody a").count() == 0
    inv.screenshot(path=str(artefacts / "investigate-investigator.png"), full_page=True)


UNTRANSLATED_JS = """(catalogue) => {
  const latin = /[A-Za-z]/;
  const bad = [];
  const skip = (el) => el.closest('[translate="no"], script, style, .leaflet-control-attribution');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode; const el = n.parentElement;
    const text = n.textContent.trim();
    if (!text || !el || skip(el) || !el.checkVisibility()) continue;
    if (latin.test(text)) bad.push(text);
  }
  for (const el of document.querySelectorAll('[title], [aria-label], [placeholder]')) {
    if (skip(el)) continue;
    for (const a of ['title', 'aria-label', 'placeholder']) {
      const v = el.getAttribute(a);
      if (v && latin.test(v)) bad.push(`${a}=${v}`);
    }
  }
  const wrong = [];
  for (const el of document.querySelectorAll('[data-i18n]')) {
    if (el.textContent !== catalogue[el.dataset.i18n]) wrong.push(el.dataset.i18n);
  }
  return { bad, wrong };
}"""


def test_kazakh_and_russian_with_no_untranslated_label(world: World, context: Any,
                                                      artefacts: Path) -> None:
    page = context.new_page()
    sign_in(page, world.base, "sup1")
    page.wait_for_selector("main[data-loaded='1']")
    asel = world.people["Асель Нурланова"].case_id
    views = ("#/cases", "#/map", "#/alerts", "#/team", f"#/case/{asel}", "#/investigate")
    for lang in ("kk", "ru"):
        page.select_option("#lang", lang)
        assert page.evaluate("document.documentElement.lang") == lang
        for view in views:
            open_view(page, view)
            found = page.evaluate(UNTRANSLATED_JS, CATALOGUES[lang])
            assert found == {"bad": [], "wrong": []}, (lang, view, found)
            name = view.strip("#/").split("/")[0]
            page.screenshot(path=str(artefacts / f"{name}-{lang}.png"))
    # the language is remembered for this user, on the server: not this browser's storage
    assert api(world, "sup1", "/me")["language"] == "ru"
    page.click("#signout")
    page.wait_for_selector("dialog#signin[open]")
    page.evaluate("localStorage.clear()")
    page.select_option("#lang-signin", "en")
    page.fill("#signin-form input[name=username]", "sup1")
    page.fill("#signin-form input[name=password]", PASSWORD)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("header.top:not([hidden])")
    page.wait_for_selector("main[data-loaded='1']")
    assert page.evaluate("document.documentElement.lang") == "ru"
    assert page.inner_text("nav a[href='#/cases']") == CATALOGUES["ru"]["nav.cases"]


def test_admin_and_team_views_and_accessibility(world: World, context: Any,
                                                artefacts: Path) -> None:
    axe = (CONSOLE / "node_modules" / "axe-core" / "axe.min.js").read_text()
    page = context.new_page()
    page.add_init_script(script=axe)  # as the browser's own: the page's CSP forbids inline scripts
    sign_in(page, world.base, "admin", ADMIN_PASSWORD)
    page.wait_for_selector("main[data-loaded='1']")
    results: dict[str, Any] = {}
    for view in ("#/cases", "#/alerts", "#/team", "#/admin",
                 f"#/case/{world.people['Асель Нурланова'].case_id}", "#/map", "#/investigate"):
        open_view(page, view)
        found = page.evaluate("""async () => {
          const r = await axe.run(document, { resultTypes: ['violations'] });
          return r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
            .map((v) => `${v.id}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
        }""")
        results[view] = found
        if view in ("#/admin", "#/team"):
            page.screenshot(path=str(artefacts / f"{view.strip('#/')}.png"), full_page=True)
    assert all(not v for v in results.values()), json.dumps(results, ensure_ascii=False)
    # a shared zone is attached from a picker of the shared zones (name, kind), not by id
    r = httpx.post(f"{world.base}/api/v1/zones", headers={
        "Authorization": f"Bearer {world.token('admin', ADMIN_PASSWORD)}"}, json={
        "name": "Школа №12", "kind": "exclusion",
        "circle": {"center": [HOME[1] - 0.05, HOME[0] + 0.05], "radius_m": 100}})
    assert r.status_code == 201, r.text
    bauyrzhan = world.people["Бауыржан Сейткали"].case_id
    open_view(page, f"#/case/{bauyrzhan}")
    label = f"Школа №12 · {CATALOGUES['en']['zone_kind.exclusion']}"
    free = int(page.get_attribute("#zone-form select[name=shared_id]", "data-count"))
    page.select_option("#zone-form select[name=shared_id]", label=label)
    page.click("#attach")
    page.wait_for_selector("#zone-list :text('Школа №12')")
    page.wait_for_selector(f"#zone-form select[name=shared_id][data-count='{free - 1}']")
    assert label not in page.locator("#zone-form select[name=shared_id] option").all_inner_texts()
    page.locator("#zone-form").screenshot(path=str(artefacts / "shared-zone-picker.png"))
    attached = api(world, "off1", f"/cases/{bauyrzhan}/zones")["items"]
    assert r.json()["id"] in [z["id"] for z in attached]
    open_view(page, "#/admin")
    page.click("#verify")
    page.wait_for_selector("#verify-result.ok")


def test_console_sets_up_the_second_factor(world: World, context: Any, artefacts: Path) -> None:
    """An admin who must have a second factor sets it up in the console (the key and the
    otpauth URI shown, confirmed with a code), then signs in with a code."""
    admin = {"Authorization": f"Bearer {world.token('admin', ADMIN_PASSWORD)}"}
    r = httpx.post(f"{world.base}/api/v1/users", headers=admin, json={
        "username": "adm2", "password": PASSWORD, "role": "admin", "full_name": "Айгерім Адмін"})
    assert r.status_code == 201, r.text
    r = httpx.patch(f"{world.base}/api/v1/users/{r.json()['id']}", headers=admin,
                    json={"totp_required": True})
    assert r.status_code == 200, r.text
    page = context.new_page()
    # jsQR (a dev dependency) reads the QR code back: as the browser's own script (the
    # page's CSP forbids inline scripts)
    page.add_init_script(path=str(CONSOLE / "node_modules" / "jsqr" / "dist" / "jsQR.js"))
    page.goto(f"{world.base}/")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#signin-form input[name=username]", "adm2")
    page.fill("#signin-form input[name=password]", PASSWORD)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#totp-setup:not([hidden]) #totp-secret:not(:empty)")
    assert page.locator("header.top").is_hidden()  # nothing else until the factor is on
    secret = page.inner_text("#totp-secret")
    uri = page.inner_text("#totp-uri")
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    # the QR code on screen reads back as the same URI (decoded with jsQR, a dev dependency)
    decoded = page.evaluate("""() => {
      const c = document.getElementById('totp-qr');
      const img = c.getContext('2d').getImageData(0, 0, c.width, c.height);
      return jsQR(img.data, img.width, img.height)?.data ?? null;
    }""")
    assert decoded == uri
    page.screenshot(path=str(artefacts / "totp-setup.png"))
    totp = pyotp.TOTP(secret)
    page.fill("#totp-setup input[name=code]", "000000" if totp.now() != "000000" else "111111")
    page.click("#totp-setup button[type=submit]")
    page.wait_for_selector("#totp-error:not(:empty)")  # a wrong code is refused
    now = time.time()
    page.fill("#totp-setup input[name=code]", totp.at(now))
    page.click("#totp-setup button[type=submit]")
    page.wait_for_selector("#totp-field:not([hidden])")
    assert page.inner_text("#signin-reason") == CATALOGUES["en"]["signin.totp_enabled"]
    # a fresh page: the password alone is answered with the code field (401 totp_required)
    page.goto(f"{world.base}/")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#signin-form input[name=username]", "adm2")
    page.fill("#signin-form input[name=password]", PASSWORD)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#totp-field:not([hidden])")
    assert page.inner_text("#signin-reason") == CATALOGUES["en"]["signin.totp_prompt"]
    page.get_by_label(CATALOGUES["en"]["signin.totp"]).fill(totp.at(now + 30))  # the next code
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("header.top:not([hidden]) nav a[href='#/admin']:not([hidden])")
    assert page.inner_text("#whoami") == "Айгерім Адмін"
    with page.expect_request(lambda q: q.url.endswith("/api/v1/auth/logout")):
        page.click("#signout")  # the refresh token is revoked too
    page.wait_for_selector("dialog#signin[open]")


def test_session_expiry_keeps_the_page(world: World, service: Service, context: Any,
                                       tmp_path: Path) -> None:
    """A short-lived token on a second API process of the same service."""
    port = free_port()
    log = tmp_path / "api.log"
    proc = subprocess.Popen(
        [PROBATION, "api", "--port", str(port)],
        env=_env(PROBATION_DATABASE_URL=service.database_url, PROBATION_MQTT_URL=service.mqtt_url,
                 PROBATION_JWT_SECRET=JWT_SECRET, PROBATION_JWT_TTL_S="6",
                 PROBATION_DATA_DIR=str(tmp_path / "data"), PROBATION_MAP_TILES=""),
        stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, log)
        page = context.new_page()
        person = world.people["Асель Нурланова"]
        sign_in(page, base, "off1", hash_=f"#/case/{person.case_id}")
        page.wait_for_selector("main[data-view=case][data-loaded='1']")
        page.evaluate("window.__notReloaded = true")
        page.fill("#zone-form input[name=name]", "Черновик зоны")
        page.wait_for_selector("dialog#signin[open]", timeout=15000)
        assert page.inner_text("#signin-reason") == CATALOGUES["en"]["signin.expired"]
        page.fill("#signin-form input[name=username]", "off1")
        page.fill("#signin-form input[name=password]", PASSWORD)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("dialog#signin", state="hidden")
        assert page.evaluate("window.__notReloaded") is True
        assert page.input_value("#zone-form input[name=name]") == "Черновик зоны"
        # a request after the next expiry waits for sign-in, then goes through
        page.wait_for_selector("dialog#signin[open]", timeout=15000)
        page.evaluate("location.hash = '#/cases'")
        page.fill("#signin-form input[name=username]", "off1")
        page.fill("#signin-form input[name=password]", PASSWORD)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#caseload tbody tr")
    finally:
        stop(proc)


def test_api_docs_work_without_internet(world: World, context: Any) -> None:
    page = context.new_page()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(world.base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{world.base}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
    page.goto(f"{world.base}/redoc")
    page.wait_for_selector("[role=search], .api-content", timeout=20000)
    assert outside == []
