"""A `Report` as an A4 PDF (fpdf2), fonts embedded, map drawn without any tile service.

The font is DejaVu Sans (Latin, Cyrillic with every Kazakh letter), taken from
matplotlib's package data, so that no system font and no download is needed; fpdf2
embeds the subset it uses. The map is vector drawing in the PDF itself: the zones,
the track, the evidence fixes with their 68 % accuracy circles, a scale bar and a
north arrow, in a local equirectangular projection (metres) of the area shown.
"""

from __future__ import annotations

import importlib.util
import math
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fpdf import FPDF

from probation.reports.document import Fix, Place, Report
from probation.reports.strings import label

M_PER_DEG = 111_195.0
MAP_H = 95.0  # mm
EVIDENCE_ROWS = 60  # evidence fixes listed at most (all are in the map and the hash)


@lru_cache(maxsize=1)
def font_dir() -> Path:
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("matplotlib (which ships the DejaVu fonts) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


class _Pdf(FPDF):
    def __init__(self, report: Report) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report = report
        self.sha = report.content_sha256()
        fonts = font_dir()
        self.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(15, 15, 15)
        created = datetime.fromisoformat(report.generated_at)
        self.set_creation_date(created)
        self.set_title(label(report.lang, f"title_{report.kind}"))
        self.set_creator("probation-monitoring")
        self.set_lang(report.lang)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("DejaVu", "", 6.5)
        self.set_text_color(60, 60, 60)
        text = label(self.report.lang, "footer", sha=self.sha, page=self.page_no(),
                     pages="{nb}")
        self.multi_cell(0, 3.2, text, align="L", new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0, 0, 0)


def render(report: Report) -> bytes:
    """The report as PDF bytes (deterministic for the same `Report`)."""
    pdf = _Pdf(report)
    lang = report.lang
    pdf.add_page()
    _heading(pdf, report)
    _section(pdf, label(lang, "person"))
    _pairs(pdf, [(label(lang, "full_name"), report.subject.get("full_name", "")),
                 (label(lang, "iin"), report.subject.get("iin", "")),
                 (label(lang, "birth_date"), report.subject.get("birth_date", ""))])
    _section(pdf, label(lang, "order"))
    c = report.case
    _pairs(pdf, [(label(lang, "order_ref"), c.get("court_order_ref", "")),
                 (label(lang, "order_period"), f"{c.get('starts_on', '')} — {c.get('ends_on', '')}"),
                 (label(lang, "risk"), c.get("risk_level", "")),
                 (label(lang, "officer"), c.get("officer", ""))])
    if report.summary:
        _section(pdf, label(lang, "episode"))
        _pairs(pdf, [(label(lang, k), v) for k, v in report.summary.items()])
    _map(pdf, report)
    _timeline(pdf, report)
    _evidence(pdf, report)
    _devices(pdf, report)
    return bytes(pdf.output())


def _heading(pdf: _Pdf, r: Report) -> None:
    pdf.set_font("DejaVu", "B", 13)
    pdf.multi_cell(0, 6.5, label(r.lang, f"title_{r.kind}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 8.5)
    pdf.multi_cell(0, 4.5, f"{label(r.lang, 'report_id')} {r.report_id} · "
                   f"{label(r.lang, 'generated')} {r.generated_at} · "
                   f"{label(r.lang, 'by')} {r.generated_by}", new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 4.5, f"{label(r.lang, 'period')}: {r.period.get('from', '')} — "
                   f"{r.period.get('to', '')}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)


def _section(pdf: _Pdf, title: str) -> None:
    pdf.ln(1.5)
    pdf.set_font("DejaVu", "B", 10)
    pdf.set_fill_color(230, 234, 240)
    pdf.cell(0, 6, title, new_x="LMARGIN", new_y="NEXT", fill=True)
    pdf.set_font("DejaVu", "", 8.5)


def _pairs(pdf: _Pdf, pairs: list[tuple[str, str]]) -> None:
    for k, v in pairs:
        pdf.set_font("DejaVu", "B", 8.5)
        pdf.cell(45, 4.8, k)
        pdf.set_font("DejaVu", "", 8.5)
        pdf.multi_cell(0, 4.8, v or "—", new_x="LMARGIN", new_y="NEXT")


def _table(pdf: _Pdf, head: list[str], rows: list[list[str]], widths: list[int]) -> None:
    pdf.set_font("DejaVu", "", 7.5)
    with pdf.table(col_widths=widths, line_height=4.2, text_align="LEFT",
                   headings_style=_heading_style()) as table:
        table.row(head)
        for r in rows:
            table.row(r)


def _heading_style() -> Any:
    from fpdf.fonts import FontFace

    return FontFace(emphasis="BOLD", fill_color=(245, 245, 245))


def _timeline(pdf: _Pdf, r: Report) -> None:
    _section(pdf, label(r.lang, "timeline"))
    if not r.timeline:
        pdf.cell(0, 5, label(r.lang, "none"), new_x="LMARGIN", new_y="NEXT")
        return
    rows = [[e.ts[:19].replace("T", " "), label(r.lang, e.what), e.detail] for e in r.timeline]
    _table(pdf, [label(r.lang, "time"), label(r.lang, "event"), label(r.lang, "detail")],
           rows, [32, 38, 110])


def _evidence(pdf: _Pdf, r: Report) -> None:
    _section(pdf, label(r.lang, "evidence"))
    ev = [f for f in r.fixes if f.evidence]
    pdf.multi_cell(0, 4.5, label(r.lang, "fixes_total", n=len(r.fixes), m=len(ev)),
                   new_x="LMARGIN", new_y="NEXT")
    if not ev:
        return
    rows = [[f.ts[:19].replace("T", " "), f"{f.lat:.6f}", f"{f.lon:.6f}", f"{f.acc:.0f}", f.src]
            for f in ev[:EVIDENCE_ROWS]]
    _table(pdf, [label(r.lang, k) for k in ("time", "lat", "lon", "acc", "src")], rows,
           [40, 35, 35, 30, 40])


def _devices(pdf: _Pdf, r: Report) -> None:
    _section(pdf, label(r.lang, "devices"))
    if not r.devices:
        pdf.cell(0, 5, label(r.lang, "none"), new_x="LMARGIN", new_y="NEXT")
        return
    keys = ("serial", "kind", "battery", "online", "last_seen")
    rows = [[d.get(k, "") for k in keys] for d in r.devices]
    _table(pdf, [label(r.lang, k) for k in keys], rows, [40, 25, 25, 25, 65])


# ----------------------------------------------------------------------------- map


class _Frame:
    """Degrees → millimetres on the page: equirectangular around the area's centre."""

    def __init__(self, lats: list[float], lons: list[float], x: float, y: float, w: float,
                 h: float) -> None:
        lat0 = (min(lats) + max(lats)) / 2
        lon0 = (min(lons) + max(lons)) / 2
        self.kx = M_PER_DEG * math.cos(math.radians(lat0))
        self.lat0, self.lon0 = lat0, lon0
        span_x = max((max(lons) - min(lons)) * self.kx, 100.0) * 1.15
        span_y = max((max(lats) - min(lats)) * M_PER_DEG, 100.0) * 1.15
        self.mm_per_m = min(w / span_x, h / span_y)
        self.cx, self.cy = x + w / 2, y + h / 2

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (self.cx + (lon - self.lon0) * self.kx * self.mm_per_m,
                self.cy - (lat - self.lat0) * M_PER_DEG * self.mm_per_m)


def _zone_rings(z: Place) -> list[list[tuple[float, float]]]:
    g = z.geometry or {}
    polys = [g["coordinates"]] if g.get("type") == "Polygon" else g.get("coordinates", [])
    return [[(float(p[1]), float(p[0])) for p in ring] for poly in polys for ring in poly]


def _extent(r: Report) -> tuple[list[float], list[float]]:
    lats = [f.lat for f in r.fixes]
    lons = [f.lon for f in r.fixes]
    for z in r.zones:
        if z.circle:
            lon, lat = z.circle["center"]
            d = float(z.circle["radius_m"]) / M_PER_DEG
            lats += [lat - d, lat + d]
            lons += [lon - d / math.cos(math.radians(lat)), lon + d / math.cos(math.radians(lat))]
        for ring in _zone_rings(z):
            lats += [p[0] for p in ring]
            lons += [p[1] for p in ring]
    return lats, lons


def _map(pdf: _Pdf, r: Report) -> None:
    lats, lons = _extent(r)
    if not lats:
        return
    if pdf.get_y() + MAP_H + 16 > pdf.h - 18:
        pdf.add_page()
    _section(pdf, label(r.lang, "map"))
    x, y, w = pdf.l_margin, pdf.get_y() + 1, pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_draw_color(120, 120, 120)
    pdf.set_line_width(0.2)
    pdf.rect(x, y, w, MAP_H)
    fr = _Frame(lats, lons, x, y, w, MAP_H)
    # No font change inside the clipping context: fpdf2 would not re-select the font
    # after the context restores the graphics state (the glyphs came out wrong).
    with pdf.rect_clip(x, y, w, MAP_H):
        _draw_zones(pdf, fr, r.zones)
        _draw_track(pdf, fr, r.fixes)
    _zone_labels(pdf, fr, r.zones)
    _scale_bar(pdf, fr, x + 4, y + MAP_H - 5, w)
    _north(pdf, x + w - 8, y + 5)
    _legend(pdf, r, x, y + MAP_H + 1.5)
    pdf.set_y(y + MAP_H + 8)
    pdf.set_font("DejaVu", "", 7)
    pdf.multi_cell(0, 3.6, label(r.lang, "map_note"), new_x="LMARGIN", new_y="NEXT")


def _draw_zones(pdf: _Pdf, fr: _Frame, zones: list[Place]) -> None:
    for z in zones:
        red = z.kind == "exclusion"
        pdf.set_fill_color(*((250, 210, 210) if red else (210, 240, 215)))
        pdf.set_draw_color(*((200, 40, 40) if red else (40, 150, 60)))
        pdf.set_line_width(0.4)
        if z.circle:
            lon, lat = z.circle["center"]
            cx, cy = fr.xy(float(lat), float(lon))
            rad = float(z.circle["radius_m"]) * fr.mm_per_m
            pdf.circle(cx, cy, rad, style="DF")
        for ring in _zone_rings(z):
            pdf.polygon([fr.xy(la, lo) for la, lo in ring], style="DF")


def _zone_labels(pdf: _Pdf, fr: _Frame, zones: list[Place]) -> None:
    pdf.set_font("DejaVu", "", 6.5)
    # text is painted with the fill colour in PDF: set both after the clipping context
    pdf.set_fill_color(20, 20, 20)
    pdf.set_text_color(20, 20, 20)
    for z in zones:
        first = _zone_anchor(z)
        if first is not None:
            px, py = fr.xy(*first)
            if pdf.l_margin <= px <= pdf.w - pdf.r_margin - 20:
                pdf.text(px + 1, py - 1, z.name)


def _zone_anchor(z: Place) -> tuple[float, float] | None:
    if z.circle:
        return float(z.circle["center"][1]), float(z.circle["center"][0])
    rings = _zone_rings(z)
    return rings[0][0] if rings and rings[0] else None


def _draw_track(pdf: _Pdf, fr: _Frame, fixes: list[Fix]) -> None:
    pts = [fr.xy(f.lat, f.lon) for f in fixes]
    pdf.set_draw_color(30, 80, 200)
    pdf.set_line_width(0.35)
    if len(pts) > 1:
        pdf.polyline(pts)
    pdf.set_line_width(0.15)
    for f, (px, py) in zip(fixes, pts, strict=True):
        if f.evidence:
            pdf.set_draw_color(230, 120, 0)
            pdf.circle(px, py, max(f.acc * fr.mm_per_m, 0.3), style="D")
            pdf.set_fill_color(230, 120, 0)
            pdf.circle(px, py, 0.6, style="F")
    if pts:
        for (px, py), colour in ((pts[0], (20, 150, 20)), (pts[-1], (0, 0, 0))):
            pdf.set_fill_color(*colour)
            pdf.circle(px, py, 1.1, style="F")


def _nice(length_m: float) -> float:
    """The largest 1, 2 or 5 x 10^k metres not above `length_m`."""
    k = 10 ** math.floor(math.log10(length_m))
    return max(m * k for m in (1, 2, 5) if m * k <= length_m)


def _scale_bar(pdf: _Pdf, fr: _Frame, x: float, y: float, w: float) -> None:
    metres = _nice(w * 0.25 / fr.mm_per_m)
    length = metres * fr.mm_per_m
    pdf.set_fill_color(255, 255, 255)
    pdf.rect(x - 1.5, y - 4.5, length + 3, 7, style="F")
    pdf.set_draw_color(0, 0, 0)
    pdf.set_line_width(0.5)
    pdf.line(x, y, x + length, y)
    pdf.line(x, y - 1.2, x, y + 0.6)
    pdf.line(x + length, y - 1.2, x + length, y + 0.6)
    pdf.set_font("DejaVu", "", 6.5)
    text = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    pdf.text(x, y - 1.8, text)


def _north(pdf: _Pdf, x: float, y: float) -> None:
    pdf.set_fill_color(0, 0, 0)
    pdf.polygon([(x, y - 3), (x - 1.6, y + 2), (x + 1.6, y + 2)], style="F")
    pdf.set_font("DejaVu", "B", 7)
    pdf.text(x - 1.2, y + 5.5, label(pdf.report.lang, "north"))


def _legend(pdf: _Pdf, r: Report, x: float, y: float) -> None:
    pdf.set_font("DejaVu", "", 7)
    items = [((30, 80, 200), label(r.lang, "track")), ((200, 40, 40), label(r.lang, "exclusion")),
             ((40, 150, 60), label(r.lang, "inclusion")), ((230, 120, 0), label(r.lang, "evidence")),
             ((20, 150, 20), label(r.lang, "start")), ((0, 0, 0), label(r.lang, "end"))]
    cx = x
    for colour, text in items:
        pdf.set_fill_color(*colour)
        pdf.rect(cx, y + 1, 3, 2.4, style="F")
        pdf.text(cx + 4, y + 3.2, text)
        cx += 6 + pdf.get_string_width(text)
