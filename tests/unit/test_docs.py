"""The user docs in docs/ say what the code does, and nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from datetime import date
from pathlib import Path

from alerts.models import DEFAULT_SEVERITY, AlertType
from devices.protocol import EVENT_TYPES, Reason
from probation.subjects.iin import validate_iin

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _section(doc: str, heading: str, level: int = 2) -> str:
    """The text of a section whose heading starts with `heading` (up to the next heading
    of the same or a higher level)."""
    text = (DOCS / doc).read_text()
    start = text.index("\n" + "#" * level + " " + heading) + 1
    ends = [i for i in (text.find("\n" + "#" * k + " ", start + level) for k in range(1, level + 1))
            if i >= 0]
    return text[start:min(ends)] if ends else text[start:]


def _first_column_codes(section: str) -> list[list[str]]:
    """Per table row, the backticked codes of its first cell."""
    rows = []
    lines = section.splitlines()
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if line.startswith("| `") and not after.startswith("|-"):  # not a header row
            rows.append(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return rows


def test_reason_codes_table_matches_the_decoder() -> None:
    rows = _first_column_codes(_section("device-protocol.md", "What happens to bad input"))
    documented = [code for row in rows for code in row]
    assert sorted(documented) == sorted(r.value for r in Reason)


def test_event_types_table_matches_the_decoder() -> None:
    rows = _first_column_codes(_section("device-protocol.md", "Device events", level=3))
    documented = [code for row in rows for code in row]
    assert sorted(documented) == sorted(EVENT_TYPES)


def test_alert_types_and_severities_match_the_code() -> None:
    section = _section("api.md", "Alerts")
    seen: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split("|")
        severity = cells[2].split()[0]
        for code in re.findall(r"`([a-z_]+)`", cells[1]):
            seen[code] = severity
    assert seen == {t.value: s.value for t, s in DEFAULT_SEVERITY.items()}
    assert set(seen) == {t.value for t in AlertType}


def test_iin_examples_in_the_docs_are_valid() -> None:
    text = (DOCS / "api.md").read_text()
    examples = set(re.findall(r"\b\d{12}\b", text))
    assert examples
    for iin in examples:
        validate_iin(iin)
    validate_iin("900101300017", date(1990, 1, 1))


def test_nothing_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    outside = []
    missing = []
    for name in files:
        path = ROOT / name
        if path == Path(__file__).resolve():
            continue
        if path.suffix not in (".py", ".md", ".conf", ".yaml", ".toml", "") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if "shared/contracts" in text or "../shared/" in text:
            outside.append(name)
        missing += [f"{name}: {ref}" for ref in re.findall(r"\bdocs/[\w.-]+\.md\b", text)
                    if not (ROOT / ref).exists()]
    assert outside == []
    assert missing == []
