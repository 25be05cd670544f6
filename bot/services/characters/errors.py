"""The refusals of the character service, each a message id in bot/locales/*/characters.json.

Messages are rendered by the tree's error handler in the member's language. UnknownCharacters
carries one line per name as Localizable values, so every line is rendered in that language too.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from bot.domain.text import Lines, Localizable
from bot.errors import UserFacingError
from bot.prompts import name_key
from bot.services.characters.text import shown


class InvalidCharacterName(UserFacingError):
    def __init__(self, reason: str, detail: str, name: str) -> None:
        super().__init__(f"characters.name.{reason}", name=shown(name), detail=detail)
        self.reason = reason


class NameTaken(UserFacingError):
    """The name, or one that looks like it (`holder`, e.g. Latin `mossa` for Cyrillic `mоssа`), is taken."""

    def __init__(self, name: str, suggestion: str | None, holder: str | None = None) -> None:
        self.holder = holder
        if holder is not None and name_key(holder) != name_key(name):
            super().__init__("characters.name_lookalike", name=shown(name), existing=holder)
        elif suggestion:
            super().__init__("characters.name_taken", name=shown(name), suggestion=suggestion)
        else:
            super().__init__("characters.name_taken_no_suggestion", name=shown(name))
        self.suggestion = suggestion


class UploadRefused(UserFacingError):
    """The attachment is refused from its metadata or while downloading; nothing was stored."""


class ClipRefused(UserFacingError):
    """The downloaded clip is not usable (media.ClipRejected); nothing was stored."""

    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(f"characters.clip.{problem}", detail=detail)
        self.problem = problem


class CharacterNotFound(UserFacingError):
    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        if suggestions:
            listed = ", ".join(f"`@{s}`" for s in suggestions)
            super().__init__("characters.not_found_suggest", name=shown(name), suggestions=listed)
        else:
            super().__init__("characters.not_found", name=shown(name))


class NotOwner(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("characters.not_owner", name=name)


class CannotDelete(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("characters.cannot_delete", name=name)


class CannotDeleteImport(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("characters.cannot_delete_import", name=name)


class ShareImport(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("characters.share.import", name=name)


class UnknownShareCode(UserFacingError):
    def __init__(self, code: str) -> None:
        super().__init__("characters.import.unknown_code", code=shown(code, 20))


class ImportFromSameGuild(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("characters.import.same_guild", name=name)


class AlreadyImported(UserFacingError):
    def __init__(self, alias: str) -> None:
        super().__init__("characters.import.already", name=alias)


class JobNotFound(UserFacingError):
    def __init__(self) -> None:
        super().__init__("characters.extract.no_job")


class VideoNotKept(UserFacingError):
    """The job's video was deleted by the storage janitor (bot/services/storage.py)."""

    def __init__(self) -> None:
        super().__init__("characters.extract.video_not_kept")


class BadChoice(UserFacingError):
    def __init__(self, option: str, value: str) -> None:
        super().__init__("characters.bad_choice", option=option, value=shown(value, 20))


class Unusable(enum.StrEnum):
    UNKNOWN = "unknown"  # no such name in this server (close matches offered)
    PRIVATE = "private"  # someone else's private character
    REVOKED = "revoked"  # an import whose owner stopped sharing it publicly
    DELETED = "deleted"  # deleted by its owner or a moderator (here or, for imports, at home)
    TAKEN_DOWN = "taken_down"  # an operator took it down (bot/services/trust.py)


@dataclass(frozen=True)
class UnusableName:
    key: str  # the name_key as mentioned
    reason: Unusable
    suggestions: tuple[str, ...] = ()

    @property
    def line(self) -> Localizable:
        """Why this name cannot be used, as one bullet of the refusal."""
        name = shown(self.key)
        if self.reason is Unusable.UNKNOWN and self.suggestions:
            listed = ", ".join(f"`@{s}`" for s in self.suggestions)
            why = Localizable("characters.unusable.unknown_suggest", {"name": name, "suggestions": listed})
        else:
            why = Localizable(f"characters.unusable.{self.reason}", {"name": name})
        return Localizable("characters.unusable.line", {"line": why})


MAX_LINES = 8  # of a refusal listing names: 8 lines of at most ~200 characters fit in one message


class UnknownCharacters(UserFacingError):
    """Some @names of a prompt cannot be used; `problems` says why for each, in prompt order.

    One line per name; past MAX_LINES the rest are counted ("…and 38 more"), so the refusal
    always fits in one Discord message.
    """

    def __init__(self, problems: Sequence[UnusableName]) -> None:
        self.problems = tuple(problems)
        lines = [p.line for p in self.problems[:MAX_LINES]]
        hidden = len(self.problems) - MAX_LINES
        if hidden > 0:
            lines.append(Localizable("characters.unusable.more", {"count": hidden}))
        super().__init__("characters.unusable", lines=Lines(tuple(lines)))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.problems)
