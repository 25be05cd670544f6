"""Errors whose text is meant for the member who caused them."""

from __future__ import annotations

from typing import Any


class UserFacingError(Exception):
    """An expected refusal. `key` is a message id in the i18n catalog; `params` fill it in.

    The tree's error handler renders it in the member's language and shows it ephemerally. A
    parameter that is itself text (a list of reasons) is a `Localizable` or `Lines` value
    (bot/domain/text.py), so it is rendered in that language too.
    """

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r})"


class NotModerator(UserFacingError):
    def __init__(self) -> None:
        super().__init__("error.not_moderator")


class GuildOnly(UserFacingError):
    def __init__(self) -> None:
        super().__init__("error.guild_only")
