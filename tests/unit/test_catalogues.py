"""Every message in Kazakh, Russian and English: the console's catalogues and the API's
(problems, field messages, the reasons of the geometry and schedule checks) have the same
keys and placeholders in every language, and no English in the kk and ru entries."""

from __future__ import annotations

import ast
import json
import re
import string
from pathlib import Path

import pytest

from probation.i18n import FIELDS, PROBLEMS, REASONS, field_text, reason_text

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "console" / "src" / "i18n"
LATIN = re.compile(r"[A-Za-z]")
#: Names that stay as they are in every language: JSON literals, field and enum names of
#: the API, standards and acronyms.
TECHNICAL = {"true", "false", "null", "geometry", "circle", "center", "radius_m", "from", "to",
             "inclusion", "exclusion", "Polygon", "MultiPolygon", "GeoJSON", "JSON", "UUID",
             "RFC", "IANA", "UTC", "ASCII", "NUL", "HTTP", "API", "Bearer", "Idempotency-Key"}


def _placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def _words(text: str) -> str:
    """`text` without its placeholders and technical names."""
    text = re.sub(r"\{[a-z_]+\}", "", text)
    return re.sub(r"[A-Za-z_]+(?:-[A-Za-z_]+)*", lambda m: "" if m.group(0) in TECHNICAL else m.group(0), text)


def _console(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((CONSOLE / f"{lang}.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_console_catalogues_complete_and_translated(lang: str) -> None:
    en, other = _console("en"), _console(lang)
    assert set(other) == set(en)
    for key, text in other.items():
        assert text.strip(), key
        assert _placeholders(text) == _placeholders(en[key]), key
        plain = re.sub(r"\{[a-z_]+\}", "", text)
        assert not LATIN.search(plain), (key, text)


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_api_messages_have_no_english(lang: str) -> None:
    texts = [(code, m.title) for code, m in PROBLEMS[lang].items()]
    texts += [(code, m.detail) for code, m in PROBLEMS[lang].items()]
    texts += list(FIELDS[lang].items())
    texts += [(en, pair[0 if lang == "ru" else 1]) for en, pair in REASONS.items()]
    for key, text in texts:
        assert not LATIN.search(_words(text)), (key, text)


def _raised_reasons() -> list[str]:
    """The message of every `InvalidGeometry(...)`/`InvalidSchedule(...)` in geofence/,
    f-string parts as `{x}`."""
    found: list[str] = []
    for path in (ROOT / "geofence").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("InvalidGeometry", "InvalidSchedule")
                    and len(node.args) == 2):
                continue
            msg = node.args[1]
            if isinstance(msg, ast.Constant) and isinstance(msg.value, str):
                found.append(msg.value)
            elif isinstance(msg, ast.JoinedStr):
                found.append("".join(v.value if isinstance(v, ast.Constant) else "SOMETHING"
                                     for v in msg.values))
    return found


def test_every_reason_the_checks_give_is_translated() -> None:
    reasons = _raised_reasons()
    assert len(reasons) > 30
    missing = [r for r in reasons if reason_text(r, "ru") is None or reason_text(r, "kk") is None]
    assert missing == []


def test_validation_messages_come_whole_in_the_language() -> None:
    msg = field_text("geometry_invalid", "ru", {"reason": "ring crosses geometry.coordinates[0][1]"})
    assert msg == "Некорректная геометрия: контур пересекает geometry.coordinates[0][1]."
    # a reason nobody translated: the generic message, not English
    assert field_text("value_error", "kk", {"reason": "something new"}) == FIELDS["kk"]["invalid"]
    assert field_text("brand_new_pydantic_type", "ru", {}, "Input should be x") == FIELDS["ru"]["invalid"]
    assert field_text("brand_new_pydantic_type", "en", {}, "Input should be x") == "Input should be x"
    assert field_text("enum", "ru", {"expected": "'low', 'medium' or 'high'"}) == (
        "Допустимые значения: 'low', 'medium' или 'high'.")
