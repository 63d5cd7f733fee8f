"""A catalog of definitions: what `validate` answers, and that it does not compile twice."""

from __future__ import annotations

import json

import pytest

from app.errors import InvalidDefinition
from app.registry.catalogs import Catalog


def counting_catalog() -> tuple[Catalog[dict[str, object]], list[bytes]]:
    compiled: list[bytes] = []

    def compile_(value: bytes, key: str) -> dict[str, object]:
        compiled.append(value)
        data = json.loads(value)
        if "bad" in data:
            raise InvalidDefinition(key, ["bad is not allowed"])
        return dict(data)

    return Catalog("thing", compile_), compiled


def test_validating_what_was_just_applied_does_not_compile_again() -> None:
    catalog, compiled = counting_catalog()
    catalog.apply("a", b'{"x": 1}')
    catalog.apply("b", b'{"bad": 1}')
    assert catalog.validate(b'{"x": 1}', "a") == {"x": 1}
    with pytest.raises(InvalidDefinition, match="bad is not allowed"):
        catalog.validate(b'{"bad": 1}', "b")
    assert compiled == [b'{"x": 1}', b'{"bad": 1}']


def test_a_value_not_applied_is_compiled() -> None:
    catalog, compiled = counting_catalog()
    catalog.apply("a", b'{"x": 1}')
    with pytest.raises(InvalidDefinition):
        catalog.validate(b'{"bad": 2}', "a")  # a newer, invalid version not yet applied
    assert catalog.validate(b'{"x": 2}', "a") == {"x": 2}
    catalog.apply("a", None)
    assert catalog.validate(b'{"x": 1}', "a") == {"x": 1}
    assert len(compiled) == 4


def test_a_validation_bug_rejects_the_definition_instead_of_stopping_the_reader() -> None:
    def broken(value: bytes, key: str) -> str:
        raise ZeroDivisionError("a bug in a validator")

    catalog: Catalog[str] = Catalog("journey", broken)
    catalog.apply("j-1", b"{}")
    assert catalog.items == {}
    assert catalog.rejected["j-1"] == ["could not be validated: ZeroDivisionError: a bug in a validator"]
    with pytest.raises(InvalidDefinition):
        catalog.validate(b"{}", "j-1")
