"""A report PDF: rendered to PNG by poppler, its text extracted, in kk, ru and en."""

# ruff: noqa: RUF001
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from probation.reports.document import Event, Fix, Place, Report, file_sha256
from probation.reports.pdf import render

LAT0, LON0 = 43.238, 76.945


def sample(lang: str) -> Report:
    fixes = [Fix(ts=f"2026-12-01T10:{i:02d}:00+00:00", lat=LAT0 + 0.00004 * i,
                 lon=LON0 + 0.00006 * i, acc=12.0 + i % 5, evidence=20 <= i <= 30)
             for i in range(60)]
    return Report(
        report_id="r-1", kind="alert", lang=lang, generated_at="2026-12-07T01:00:00+00:00",
        generated_by="supervisor1",
        subject={"full_name": "Әлібек Қайратұлы Нұрғалиев", "iin": "900101300123",
                 "birth_date": "1990-01-01"},
        case={"court_order_ref": "2-1234/2026", "starts_on": "2026-01-01",
              "ends_on": "2027-01-01", "risk_level": "high", "officer": "Өмірзақ"},
        period={"from": "2026-12-01T10:00:00+00:00", "to": "2026-12-01T11:00:00+00:00"},
        summary={"type": "exclusion_zone_entered", "severity": "critical"},
        timeline=[Event(ts="2026-12-01T10:20:00+00:00", what="ev_alert_opened"),
                  Event(ts="2026-12-01T10:25:00+00:00", what="ev_acknowledged",
                        detail="supervisor1")],
        fixes=fixes,
        zones=[Place(name="School", kind="exclusion",
                     circle={"center": [LON0 + 0.0012, LAT0 + 0.0008], "radius_m": 80.0})],
        devices=[{"serial": "BR-1", "kind": "bracelet", "battery": "80", "online": "yes",
                  "last_seen": "2026-12-01T11:00:00+00:00"}],
    )


EXPECTED = {
    "kk": ["Электрондық мониторинг есебі", "Қадағаланатын тұлға", "Дәлелдік координаттар",
           "Трек пен аймақтар картасы"],
    "ru": ["Отчёт электронного мониторинга", "Поднадзорное лицо", "Доказательные координаты",
           "Карта трека и зон"],
    "en": ["Electronic monitoring report", "Person under supervision", "Evidence fixes",
           "Map of the track and zones"],
}


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_report_renders_and_reads_back(lang: str, tmp_path: Path) -> None:
    report = sample(lang)
    pdf = render(report)
    assert render(report) == pdf  # deterministic: the same report, the same bytes
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")],
                   check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages and pages[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True).stdout
    for phrase in EXPECTED[lang]:
        assert phrase in text
    assert "Әлібек Қайратұлы Нұрғалиев" in text  # Kazakh letters embedded and extractable
    assert report.content_sha256() in text.replace("\n", "")
    assert "200 m" in text or "100 m" in text or "50 m" in text  # the scale bar
    fonts = subprocess.run(["pdffonts", str(path)], check=True, capture_output=True,
                           text=True).stdout
    assert "DejaVuSans" in fonts and " yes yes yes " in fonts  # embedded, subset, unicode
    assert file_sha256(pdf) != report.content_sha256()


def test_content_hash_changes_with_what_the_report_says() -> None:
    a = sample("en")
    b = sample("ru")
    assert a.content_sha256() != b.content_sha256()
    assert a.content_sha256() == sample("en").content_sha256()
