"""/settings: anyone sees the server's settings; moderators change them (checked in the service)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import Castbot
from bot.domain.locales import LOCALES, display_name
from bot.i18n import t
from bot.services.server_settings import SettingsService, timezones_matching
from bot.ui.replies import actor_of, locale_of
from bot.ui.settings import settings_embed
from bot.ui.translator import cmd
from bot.ui.trust import add_trust_fields


class SettingsCog(commands.Cog):
    def __init__(self, bot: Castbot, service: SettingsService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(name=cmd("cmd.settings.name"), description=cmd("cmd.settings.description"))
    @app_commands.describe(
        moderator_role=cmd("cmd.settings.moderator_role"),
        timezone=cmd("cmd.settings.timezone"),
        locale=cmd("cmd.settings.locale"),
        providers=cmd("cmd.settings.providers"),
        priority=cmd("cmd.settings.priority"),
        fallback=cmd("cmd.settings.fallback"),
        enable_provider=cmd("cmd.settings.enable_provider"),
        allow_imports=cmd("cmd.settings.allow_imports"),
        report_channel=cmd("cmd.settings.report_channel"),
        require_consent=cmd("cmd.settings.require_consent"),
    )
    @app_commands.choices(
        locale=[app_commands.Choice(name=display_name(code), value=code) for code in LOCALES],
        priority=[
            app_commands.Choice(name=cmd("settings.choice.cost"), value="cost"),
            app_commands.Choice(name=cmd("settings.choice.stability"), value="stability"),
        ],
    )
    @app_commands.guild_only()
    async def settings(
        self,
        interaction: discord.Interaction[Castbot],
        moderator_role: discord.Role | None = None,
        timezone: app_commands.Range[str, 1, 64] | None = None,
        locale: str | None = None,
        providers: app_commands.Range[str, 1, 200] | None = None,
        priority: str | None = None,
        fallback: bool | None = None,
        enable_provider: app_commands.Range[str, 1, 32] | None = None,
        allow_imports: bool | None = None,
        report_channel: discord.TextChannel | None = None,
        require_consent: bool | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True)
        actor = actor_of(interaction)
        reader = locale_of(interaction)
        wants_change = any(
            v is not None for v in (moderator_role, timezone, locale, providers, priority, fallback, enable_provider)
        )
        saved: list[str] = []
        enabled = None
        if not wants_change:
            current = await self.service.show(actor)
        else:
            change = await self.service.change(
                actor,
                moderator_role_id=moderator_role.id if moderator_role else None,
                timezone=timezone,
                locale=locale,
                providers=providers,
                priority=priority,
                fallback=fallback,
                enable_provider=enable_provider,
            )
            current, enabled = change.settings, change.enabled_provider
            saved += change.changed
        if any(v is not None for v in (allow_imports, report_channel, require_consent)):
            # after the others were validated and saved: these cannot be invalid, and
            # bot/services/trust.py refuses them to a non-moderator
            _, trust_saved = await self.bot.services.trust.change_settings(
                actor,
                allow_imports=allow_imports,
                report_channel_id=report_channel.id if report_channel else None,
                require_consent=require_consent,
            )
            saved += trust_saved
        lines = []
        if saved:
            lines.append(t("settings.saved", reader, names=", ".join(f"`{n}`" for n in saved)))
        if enabled:
            lines.append(t("settings.enabled", reader, provider=enabled))
        if not wants_change and not saved:
            lines.append(t("settings.unchanged", reader))
        content = "\n".join(lines)
        embed = settings_embed(current, reader, self.service.configured_providers)
        add_trust_fields(embed, await self.bot.services.trust.settings(current.guild_id), reader)
        if content:
            await interaction.followup.send(content=content, embed=embed, ephemeral=True)
        else:
            await interaction.followup.send(embed=embed, ephemeral=True)

    @settings.autocomplete("timezone")
    async def timezone_autocomplete(
        self, interaction: discord.Interaction[Castbot], current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=z, value=z) for z in timezones_matching(current)]

    @settings.autocomplete("enable_provider")
    async def provider_autocomplete(
        self, interaction: discord.Interaction[Castbot], current: str
    ) -> list[app_commands.Choice[str]]:
        typed = current.strip().lower()
        names = [n for n in self.service.configured_providers if typed in n]
        return [app_commands.Choice(name=n, value=n) for n in names[:25]]


async def setup(bot: Castbot) -> None:
    await bot.add_cog(SettingsCog(bot, bot.services.settings))
