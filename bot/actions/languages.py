"""Which language a server's channel posts are written in."""

from __future__ import annotations

import discord

from bot.services.guilds import GuildService


async def guild_language(client: discord.Client, guilds: GuildService, guild_id: int, fallback: str = "en-US") -> str:
    """A server's /settings language, else the one Discord reports for it (its community
    language), else `fallback`."""
    settings = await guilds.get(guild_id)
    if settings.locale:
        return settings.locale
    guild = client.get_guild(guild_id)
    return guild.preferred_locale.value if guild else fallback
