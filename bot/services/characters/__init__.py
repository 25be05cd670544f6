"""Characters: a member's clip made into a reusable character, its files, its provider handles,
its names and who may use it.

The modules: service (the use cases), values (what they return), errors (the refusals), text
(names and share codes), files (clips and frames on disk), handles (the provider-side cache).
"""

from bot.services.characters.service import CharacterService
from bot.services.characters.values import (
    CharacterView,
    Created,
    Deleted,
    JobChoice,
    NameChoice,
    Page,
    Upload,
    UsableCharacter,
)

__all__ = [
    "CharacterService",
    "CharacterView",
    "Created",
    "Deleted",
    "JobChoice",
    "NameChoice",
    "Page",
    "Upload",
    "UsableCharacter",
]
