"""Command names, options and descriptions in each member's Discord language, from the same
catalogs as every reply (bot/i18n.py), within Discord's rules for each place."""

from __future__ import annotations

import logging
import re
import unicodedata

from discord import Locale, app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot.domain.locales import language
from bot.i18n import DEFAULT_LOCALE, catalog, resolve_locale, t

log = logging.getLogger(__name__)

# Options whose names are not renamed with `cmd(...)` are looked up as `cmd.option.<name>`.
OPTION_PREFIX = "cmd.option."

NAME_MAX, DESCRIPTION_MAX, CHOICE_MAX = 32, 100, 100


def cmd(key: str) -> app_commands.locale_str:
    """A command name/description: Discord gets the English text; the translator looks up `key`."""
    return app_commands.locale_str(t(key, DEFAULT_LOCALE), key=key)


def is_command_name(text: str) -> bool:
    """Discord's rule for slash command, subcommand and option names: 1–32 of `-`, `_`, letters
    and digits (any script), lowercase where the script has case."""
    if not 1 <= len(text) <= NAME_MAX or text != text.lower():
        return False
    return all(c in "-_" or unicodedata.category(c)[0] in "LN" or _indic(c) for c in text)


_INDIC = re.compile(r"[\u0900-\u097f\u0e00-\u0e7f]")  # Devanagari and Thai marks are allowed too


def _indic(char: str) -> bool:
    return bool(_INDIC.match(char))


def fits_discord(text: str, location: Where, data: object = None) -> bool:
    """Whether Discord accepts `text` at this place of a command payload."""
    if location in (Where.command_description, Where.group_description, Where.parameter_description):
        return 1 <= len(text) <= DESCRIPTION_MAX
    if location is Where.choice_name:
        return 1 <= len(text) <= CHOICE_MAX
    if location is Where.command_name and isinstance(data, app_commands.ContextMenu):
        return 1 <= len(text) <= NAME_MAX  # menu names may have spaces and capitals
    if location in (Where.command_name, Where.group_name, Where.parameter_name):
        return is_command_name(text)
    return True


class CastbotTranslator(app_commands.Translator):
    """Localises command metadata from the catalogs; None means 'keep the English default'."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        key = string.extras.get("key")
        if not key and context.location is Where.parameter_name:
            key = OPTION_PREFIX + string.message
        if not key:
            return None
        code = resolve_locale(locale)
        if language(code) == language(DEFAULT_LOCALE):
            return None
        text = catalog(code).get(key)
        if text is None:
            return None
        if not fits_discord(text, context.location, context.data):
            # Discord would refuse the whole sync for one bad name: keep the English one instead.
            log.error("translation %s of %r is not allowed by Discord here: %r", code, key, text)
            return None
        return text
