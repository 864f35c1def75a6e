"""Message catalogues: complete in every language, placeholders consistent, negotiation."""

from __future__ import annotations

import string

import pytest

from probation.i18n import FIELDS, LANGUAGES, PROBLEMS, field_text, negotiate, problem_text


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_has_every_message(lang: str) -> None:
    assert set(PROBLEMS[lang]) == set(PROBLEMS["en"])
    assert set(FIELDS[lang]) == set(FIELDS["en"])


@pytest.mark.parametrize("lang", ["ru", "kk"])
def test_placeholders_match_english(lang: str) -> None:
    for code, msg in PROBLEMS["en"].items():
        other = PROBLEMS[lang][code]
        assert _fields(other.title) == _fields(msg.title), code
        assert _fields(other.detail) == _fields(msg.detail), code
        assert other.title != msg.title, code
    for code, template in FIELDS["en"].items():
        assert _fields(FIELDS[lang][code]) == _fields(template), code


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "en"), ("", "en"), ("ru", "ru"), ("kk-KZ", "kk"), ("KK", "kk"),
        ("fr, ru;q=0.5", "ru"), ("en;q=0.2, kk;q=0.9", "kk"), ("de", "en"), ("*", "en"),
        ("ru;q=0, kk;q=0.1", "kk"), ("ru;q=abc, kk;q=0.5", "kk"), ("ru-RU,ru;q=0.9,en;q=0.8", "ru"),
    ],
)
def test_negotiate(header: str | None, lang: str) -> None:
    assert negotiate(header) == lang


def test_fill_and_fallbacks() -> None:
    msg = problem_text("serial_taken", "ru", {"serial": "BR-1"})
    assert "BR-1" in msg.detail
    assert problem_text("serial_taken", "ru").detail.count("{serial}") == 1  # missing param kept
    assert problem_text("no_such_code", "kk").title == PROBLEMS["kk"]["bad_request"].title
    assert field_text("string_too_long", "kk", {"max_length": 5}).startswith("Ең көбі 5")
    assert field_text("unheard_of", "en", {}, fallback="pydantic says") == "pydantic says"
    assert field_text("unheard_of", "ru", {}, fallback="pydantic says") == FIELDS["ru"]["invalid"]
    # alert states are words of the language too
    msg = problem_text("alert_transition", "ru", {"current": "resolved", "target": "acknowledged"})
    assert "«решена»" in msg.detail and "«подтверждена»" in msg.detail
    assert problem_text("alert_transition", "en", {"current": "resolved", "target": "acknowledged"}
                        ).detail == "An alert that is resolved cannot be acknowledged."
