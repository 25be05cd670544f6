"""Text for people, kept as data until the reader's language is known.

A service that refuses something does not know who will read the refusal, or in which language:
it raises an error holding a `Localizable` (a message id and its parameters), and whoever shows
it renders it in the reader's locale (bot.i18n does). A parameter may itself be `Localizable`, or
`Lines` of them, so a message listing reasons is rendered in one language from the header to
the last line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Localizable:
    """Catalog message `key` with `params`; rendered later in the reader's language."""

    key: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lines:
    """Localizable lines shown one under another."""

    items: tuple[Localizable, ...]
