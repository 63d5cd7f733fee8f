"""Versions of definitions and their audit trail: the record of one change, the history of
an id read back from the trail, and a readable diff between two versions. Pure: no I/O."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.domain.deadletters import MAX_RECORD_BYTES
from app.domain.encoding import encode
from app.domain.secrets import mask_url, mask_urls_in_text
from app.errors import TriggerEngineError

# The actor of a definition record without an `actor` header: a raw Kafka producer.
UNKNOWN_ACTOR = "unknown"
ACTOR_HEADER = "actor"
MASK = "**********"
# Fields whose string value is a URL (secrets in its userinfo or query are masked in reads).
_URL_FIELDS = frozenset({"url", "deliveryUrl"})


@dataclass(frozen=True)
class DefinitionVersion:
    """Which version of a definition is current: its record's offset, when it was published
    (the record's timestamp) and by whom (the record's `actor` header)."""

    version: int
    at: datetime
    actor: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "changedAt": self.at.isoformat(), "actor": self.actor}


def actor_of_headers(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None) -> str:
    """The `actor` header of a definition record (the last one if repeated), or `unknown`."""
    actor = None
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == ACTOR_HEADER and value:
            actor = value.decode("utf-8", "replace")[:256]
    return actor or UNKNOWN_ACTOR


def parsed_value(value: bytes | None) -> Any:
    """A definition record's value as the trail stores it: its JSON, or its text when it is
    not JSON (a rejected record), None for a deletion."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def audit_record(kind: str, item_id: str, version: int, at: datetime, actor: str, before: Any, after: Any,
                 errors: list[str] | None = None, limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """One change on `triggers.audit`. A rejected change carries its `errors`. A record that
    would be too large for Kafka drops `before` (it is the previous record's `after`), then
    `after`, and names what it dropped in `omitted`."""
    record: dict[str, Any] = {"kind": kind, "id": item_id, "version": version, "at": at.isoformat(),
                              "actor": actor, "before": before, "after": after}
    if errors is not None:
        record["errors"] = errors
    omitted: list[str] = []
    for field in ("before", "after"):
        if len(encode(record)) <= limit:
            break
        record[field] = None
        omitted.append(field)
        record["omitted"] = omitted
    return record


@dataclass(frozen=True)
class AuditEntry:
    """One audit record read back, as history lists it."""

    kind: str
    id: str
    version: int
    at: str
    actor: str
    before: Any
    after: Any
    errors: list[str] | None = None
    # What the agent left out of a record too large for Kafka ("before", "after").
    omitted: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> AuditEntry | None:
        """The entry, or None for a record that is not an audit record (skipped, not fatal)."""
        if not isinstance(data, dict):
            return None
        kind, item_id, version = data.get("kind"), data.get("id"), data.get("version")
        if not (isinstance(kind, str) and isinstance(item_id, str) and isinstance(version, int)):
            return None
        errors, omitted = data.get("errors"), data.get("omitted")
        return cls(kind, item_id, version, str(data.get("at", "")), str(data.get("actor", UNKNOWN_ACTOR)),
                   data.get("before"), data.get("after"), errors if isinstance(errors, list) else None,
                   tuple(str(f) for f in omitted) if isinstance(omitted, list) else ())

    @property
    def is_deletion(self) -> bool:
        return self.after is None and "after" not in self.omitted

    def to_json(self, mask: bool = True) -> dict[str, Any]:
        shown = masked if mask else (lambda value: value)
        data = {"version": self.version, "at": self.at, "actor": self.actor,
                "before": shown(self.before), "after": shown(self.after)}
        if self.errors is not None:  # a reason may quote a URL of the value
            data["errors"] = [mask_urls_in_text(str(error)) if mask else error for error in self.errors]
        if self.omitted:
            data["omitted"] = list(self.omitted)
        return data


def history(entries: Iterable[AuditEntry], kind: str, item_id: str) -> list[AuditEntry]:
    """The versions of one definition, oldest first, each once: a record the audit agent
    wrote twice (a worker that lost its partition while writing) is listed once."""
    by_version = {entry.version: entry for entry in entries if entry.kind == kind and entry.id == item_id}
    return [by_version[version] for version in sorted(by_version)]


def diff(before: Any, after: Any, before_name: str = "before", after_name: str = "after") -> list[str]:
    """A unified diff of two definitions as sorted, indented JSON (secrets masked)."""
    return list(difflib.unified_diff(_lines(masked(before)), _lines(masked(after)), before_name, after_name,
                                     lineterm=""))


def _lines(value: Any) -> list[str]:
    if value is None:
        return []
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def masked(value: Any) -> Any:
    """A copy of a definition as reads show it: webhook secrets and header values masked,
    secrets inside URLs masked; everything else as it was."""
    if isinstance(value, list):
        return [masked(item) for item in value]
    if not isinstance(value, dict):
        return value
    shown: dict[str, Any] = {}
    for name, item in value.items():
        if name == "secret" and item is not None:
            shown[name] = MASK
        elif name == "headers" and isinstance(item, dict):
            shown[name] = {header: MASK for header in item}
        elif name in _URL_FIELDS and isinstance(item, str):
            shown[name] = mask_url(item)
        else:
            shown[name] = masked(item)
    return shown


class UnknownVersion(TriggerEngineError):
    """The kind, id or version asked for is not known."""


class NotRestorable(TriggerEngineError):
    """The version exists but cannot be published again: a deletion, rejected, too large."""


def history_json(kind: str, item_id: str, entries: list[AuditEntry]) -> dict[str, Any]:
    """What `history --json` and GET /triggers/{id}/history answer: secrets masked."""
    return {"kind": kind, "id": item_id, "versions": [entry.to_json() for entry in entries]}


def history_text(kind: str, item_id: str, entries: list[AuditEntry]) -> list[str]:
    """Each version with its time and actor, and what changed from the version before."""
    lines = [f"{kind} {item_id}: {len(entries)} version(s), oldest first"]
    previous: AuditEntry | None = None
    for entry in entries:
        lines.append(f"version {entry.version}  {entry.at}  by {entry.actor}  ({change_of(entry)})")
        lines.extend(f"    rejected: {error}" for error in entry.to_json().get("errors", ()))
        before_name = f"version {previous.version}" if previous is not None else "(none)"
        lines.extend("    " + line for line in diff(entry.before, entry.after, before_name,
                                                      f"version {entry.version}"))
        previous = entry
    return lines


def change_of(entry: AuditEntry) -> str:
    if entry.is_deletion:
        return "deleted"
    if entry.errors:
        return "rejected"
    return "created" if entry.before is None else "updated"


def parse_version(text: str | None) -> int:
    """`--to` or a request's `to`: a version number, or UnknownVersion saying why not."""
    if text is None:
        raise UnknownVersion("give the version to restore (see `triggers history ID`)")
    try:
        return int(text)
    except ValueError:
        raise UnknownVersion(f"a version is a number (an offset), not {text!r}") from None


def restorable(entries: list[AuditEntry], kind: str, item_id: str, version: int) -> AuditEntry:
    """The entry of `version`, if it can be published again."""
    entry = next((e for e in entries if e.version == version), None)
    if entry is None:
        known = ", ".join(str(e.version) for e in entries)
        raise UnknownVersion(f"{kind} {item_id!r} has no version {version} (its versions: {known})")
    if entry.is_deletion:
        raise NotRestorable(f"version {version} of {kind} {item_id!r} is its deletion: nothing to restore")
    if entry.errors:
        raise NotRestorable(f"version {version} of {kind} {item_id!r} was rejected: {'; '.join(entry.errors)}")
    if entry.after is None:
        raise NotRestorable(f"version {version} of {kind} {item_id!r} was too large for the audit trail")
    return entry
