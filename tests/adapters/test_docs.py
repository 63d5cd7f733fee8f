"""Docs name only what exists: every code identifier, file path and setting in backticks in
the README and docs/ is found in the code (a renamed function leaves no stale name behind)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE_DIRS = ("app", "bench", "tests", "triggers_config", ".ci")

_BACKTICKED = re.compile(r"`([^`\n]+)`")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\(\))?")
_PATH = re.compile(r"(?:app|tests|bench|docs|triggers_config|\.ci)/[\w./*-]*")
_SETTING = re.compile(r"\b(?:TRIGGERS|KAFKA)_[A-Z0-9_]+\b")

# Names the docs quote that are not identifiers of this code, and why.
NOT_OURS = {
    "consistent_random": "librdkafka's default partitioner",
    # `reason` labels of the dead-letter metric, made from the reason text by metrics.reason_code
    "missing_required_field": "a reason code", "not_valid_json": "a reason code",
    "gave_up_after_attempts": "a reason code", "unknown_journey": "a reason code",
}


@cache
def code_text() -> str:
    files = [REPO / "Makefile", REPO / "pyproject.toml"]
    for folder in CODE_DIRS:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in
                  {".py", ".json", ".jsonl", ".csv", ".toml", ""} and "__pycache__" not in p.parts]
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


def _code_tokens(doc: Path) -> list[str]:
    return [m.group(1).strip() for m in _BACKTICKED.finditer(doc.read_text(encoding="utf-8"))]


def _is_code_identifier(token: str) -> bool:
    """A Python name as docs write it: snake_case with an underscore, or Class.member."""
    if not _IDENTIFIER.fullmatch(token):
        return False
    parts = token.removesuffix("()").split(".")
    return any("_" in part.strip("_") for part in parts) or (len(parts) > 1 and parts[0][:1].isupper())


def _missing_identifier(token: str) -> str | None:
    text = code_text()
    if token in NOT_OURS:
        return None
    if token.endswith(".py"):  # a file named without its folder
        return None if any(REPO.glob(f"**/{token}")) else token
    if token.startswith("triggers_"):  # a Prometheus metric: the client adds `_total`
        token = token.removesuffix("_total")
    for part in token.removesuffix("()").split("."):
        if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(part)}(?![A-Za-z0-9_])", text):
            return part
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_identifier_named_in_the_docs_exists(doc: Path) -> None:
    missing = {token: part for token in _code_tokens(doc) if _is_code_identifier(token)
               if (part := _missing_identifier(token)) is not None}
    assert not missing, f"{doc.name} names what the code does not have: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_named_in_the_docs_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = set()
    for match in _PATH.finditer(text):
        path = match.group(0).rstrip(".,:;)")
        if not any(True for _ in REPO.glob(path)) and not (REPO / path).exists():
            missing.add(path)
    assert not missing, f"{doc.name} names files that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_setting_named_in_the_docs_is_read_by_the_code(doc: Path) -> None:
    named = set(_SETTING.findall(doc.read_text(encoding="utf-8")))
    missing = sorted(name for name in named if name not in code_text())
    assert not missing, f"{doc.name} names settings the code does not read: {missing}"
