"""Rows to typed values by column name, so a reordered SELECT can never shift a value into the
wrong field: every field of the dataclass is read from the column of the same name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class NamedRow(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...


def mapped(cls: type[T], row: NamedRow | Mapping[str, Any], prefix: str = "", **given: Any) -> T:
    """`cls` built from `row`'s columns named like its fields (after `prefix`); `given` values win."""
    assert dataclasses.is_dataclass(cls)
    values = {f.name: row[prefix + f.name] for f in dataclasses.fields(cls) if f.name not in given}
    return cls(**values, **given)
