"""The trust checks the character service makes at import and admission (bot/services/trust.py
has the rest). Kept apart so the character service can use them without importing the trust
service, which imports the character package's helpers."""

from __future__ import annotations

from collections.abc import Sequence

from bot.db import Database
from bot.errors import UserFacingError
from bot.store import trust as store
from bot.store.characters import CharacterRow


class ImportsOff(UserFacingError):
    def __init__(self) -> None:
        super().__init__("trust.error.imports_off")


class ImportTakenDown(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("trust.error.import_taken_down", name=name)


class ImportWithdrawn(UserFacingError):
    def __init__(self, name: str) -> None:
        super().__init__("trust.error.import_withdrawn", name=name)


class ConsentRequired(UserFacingError):
    """The owner must confirm consent before the character gets `visibility` (a prompt with a
    button answers this; the text is the fallback)."""

    def __init__(self, character_id: int, name: str, visibility: str) -> None:
        super().__init__("trust.consent.required", name=name)
        self.character_id = character_id
        self.name = name
        self.visibility = visibility


async def consent_needed(db: Database, guild_id: int, current: str, wanted: str) -> bool:
    """Making a character public always asks its owner to confirm consent; `server` does too
    where the guild's moderators require it. Narrowing (public → server) never asks again."""
    if wanted == current or wanted == "private" or (wanted == "server" and current == "public"):
        return False
    if wanted == "public":
        return True
    return (await store.settings(db, guild_id)).require_consent


async def taken_down_among(db: Database, character_ids: Sequence[int]) -> set[int]:
    """Which of these characters an operator took down."""
    found = await store.flags(db, character_ids)
    return {i for i, f in found.items() if f.taken_down_at is not None}


async def check_importable(db: Database, guild_id: int, character: CharacterRow) -> None:
    """Refuse an import the guild's moderators, the owner or an operator ruled out."""
    if character.id in await taken_down_among(db, [character.id]):
        raise ImportTakenDown(character.name)
    if not (await store.settings(db, guild_id)).allow_imports:
        raise ImportsOff()
    if await store.import_banned(db, character.id, guild_id):
        raise ImportWithdrawn(character.name)
