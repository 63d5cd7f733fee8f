"""Versions and the audit trail, the pure parts: an audit record, history read back from the
trail, the diff between versions, masking, and which versions can be restored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.domain.encoding import encode
from app.domain.versions import (
    AuditEntry,
    NotRestorable,
    UnknownVersion,
    actor_of_headers,
    audit_record,
    diff,
    history,
    history_json,
    history_text,
    masked,
    parse_version,
    parsed_value,
    restorable,
)

AT = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
V1 = {"id": "t", "source": "streaming", "eventType": "purchase", "conditions": ["event.amount > 100"],
      "action": {"type": "webhook", "url": "https://u:pw@crm.example/h?key=abc", "secret": "s3cret",
                 "headers": {"X-Api-Key": "k3y"}}}
V2 = {**V1, "conditions": ["event.amount > 200"]}


def entry(version: int, before: Any, after: Any, actor: str = "alice", **extra: Any) -> AuditEntry:
    parsed = AuditEntry.from_json(audit_record("trigger", "t", version, AT, actor, before, after, **extra))
    assert parsed is not None
    return parsed


def test_an_audit_record_has_the_contract_fields_and_errors_only_when_rejected() -> None:
    record = audit_record("trigger", "t", 7, AT, "alice", V1, V2)
    assert record == {"kind": "trigger", "id": "t", "version": 7, "at": "2026-12-02T09:30:00+00:00",
                      "actor": "alice", "before": V1, "after": V2}
    rejected = audit_record("trigger", "t", 8, AT, "unknown", V2, "{not json", errors=["not JSON"])
    assert rejected["errors"] == ["not JSON"] and rejected["after"] == "{not json"


def test_a_record_too_large_for_kafka_drops_before_then_after_and_says_so() -> None:
    big = {**V1, "name": "x" * 600}
    limit = len(encode(audit_record("trigger", "t", 1, AT, "a", None, big))) + 40
    record = audit_record("trigger", "t", 1, AT, "a", big, big, limit=limit)
    assert (record["before"], record["after"], record["omitted"]) == (None, big, ["before"])
    record = audit_record("trigger", "t", 1, AT, "a", big, big, limit=100)
    assert (record["before"], record["after"], record["omitted"]) == (None, None, ["before", "after"])
    dropped = AuditEntry.from_json(record)
    assert dropped is not None and dropped.omitted == ("before", "after") and not dropped.is_deletion


def test_history_is_oldest_first_one_entry_per_version_of_that_kind_and_id() -> None:
    duplicate = entry(5, V1, V2, actor="bob")
    other_id = AuditEntry.from_json(audit_record("trigger", "u", 4, AT, "x", None, V1))
    other_kind = AuditEntry.from_json(audit_record("journey", "t", 3, AT, "x", None, {"id": "t"}))
    found = history([duplicate, entry(2, None, V1), duplicate, other_id, other_kind], "trigger", "t")  # type: ignore[list-item]
    assert [(e.version, e.actor) for e in found] == [(2, "alice"), (5, "bob")]


@pytest.mark.parametrize("junk", [None, [], "text", {"kind": "trigger", "id": "t"},
                                  {"kind": "trigger", "id": "t", "version": "7"}])
def test_a_record_that_is_not_an_audit_record_is_skipped(junk: Any) -> None:
    assert AuditEntry.from_json(junk) is None


def test_the_diff_is_of_sorted_indented_json_with_secrets_masked() -> None:
    lines = diff(V1, V2, "version 1", "version 2")
    assert lines[:2] == ["--- version 1", "+++ version 2"]
    assert '-    "event.amount > 100"' in lines and '+    "event.amount > 200"' in lines
    assert not any(secret in line for line in diff(None, V1) for secret in ("s3cret", "k3y", "pw@", "abc"))
    assert diff(V1, V1) == []
    assert all(line.startswith(("---", "+++", "@@", "-")) for line in diff(V1, None))


def test_masking_hides_secrets_header_values_and_url_credentials_only() -> None:
    shown = masked(V1)
    action = shown["action"]
    assert action["secret"] == "**********" and action["headers"] == {"X-Api-Key": "**********"}
    assert "pw" not in action["url"] and "abc" not in action["url"] and "crm.example" in action["url"]
    assert shown["conditions"] == V1["conditions"] and V1["action"]["secret"] == "s3cret"  # a copy


def test_reasons_of_a_rejected_version_are_shown_with_urls_masked() -> None:
    rejected = entry(2, None, V1, errors=["action.url: https://u:pw@crm.example/h?key=abc is private"])
    assert "pw@" not in rejected.to_json()["errors"][0] and "crm.example" in rejected.to_json()["errors"][0]
    assert rejected.to_json(mask=False)["errors"] == rejected.errors


def test_history_text_names_each_change_its_actor_and_diff() -> None:
    entries = [entry(1, None, V1), entry(3, V1, V2, actor="bob"), entry(4, V2, None, actor="carol"),
               entry(6, None, "{bad", actor="unknown", errors=["not JSON"])]
    text = "\n".join(history_text("trigger", "t", entries))
    assert "version 1  2026-12-02T09:30:00+00:00  by alice  (created)" in text
    assert "version 3  2026-12-02T09:30:00+00:00  by bob  (updated)" in text
    assert "by carol  (deleted)" in text and "(rejected)" in text and "rejected: not JSON" in text
    assert "--- version 1\n    +++ version 3" in text
    assert history_json("trigger", "t", entries[:1]) == {"kind": "trigger", "id": "t", "versions": [
        {"version": 1, "at": "2026-12-02T09:30:00+00:00", "actor": "alice", "before": None, "after": masked(V1)}]}


def test_only_a_valid_published_value_can_be_restored() -> None:
    entries = [entry(1, None, V1), entry(2, V1, None), entry(3, None, "{bad", errors=["not JSON"]),
               AuditEntry("trigger", "t", 4, "2026-12-02T09:30:00+00:00", "a", None, None, None, ("after",))]
    assert restorable(entries, "trigger", "t", 1).after == V1
    with pytest.raises(UnknownVersion, match=r"has no version 9 \(its versions: 1, 2, 3, 4\)"):
        restorable(entries, "trigger", "t", 9)
    with pytest.raises(NotRestorable, match="is its deletion"):
        restorable(entries, "trigger", "t", 2)
    with pytest.raises(NotRestorable, match="was rejected: not JSON"):
        restorable(entries, "trigger", "t", 3)
    with pytest.raises(NotRestorable, match="too large"):
        restorable(entries, "trigger", "t", 4)


def test_a_version_is_a_number() -> None:
    assert parse_version("12") == 12
    for bad in (None, "abc", "1.5", ""):
        with pytest.raises(UnknownVersion):
            parse_version(bad)


def test_the_actor_is_the_last_actor_header_or_unknown() -> None:
    assert actor_of_headers([("x", b"1"), ("actor", b"alice"), ("actor", b"bob")]) == "bob"
    assert actor_of_headers({"actor": b"carol"}) == "carol"
    assert actor_of_headers(None) == actor_of_headers([("actor", b"")]) == "unknown"


def test_a_stored_value_is_its_json_or_its_text() -> None:
    assert parsed_value(b'{"a": 1}') == {"a": 1}
    assert parsed_value(b"{nope") == "{nope"
    assert parsed_value(None) is None
