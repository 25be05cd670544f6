"""The owner's side of sharing a likeness: consent before it is shared, and which servers
imported it, with a way to withdraw it from one.

The consent button's custom id carries the character and the visibility asked for
(`castbot:consent:<character>:<server|public>`), the importers' select the character
(`castbot:revoke:<character>`, its options the servers' ids), so both work after a restart; the
services check that whoever clicks is the owner."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.actions import actions_of
from bot.i18n import t
from bot.services.characters import CharacterService
from bot.services.trust import TrustService
from bot.ui.characters import send, shared_reply
from bot.ui.replies import actor_of, locale_of, report_error
from bot.ui.trust import consent_prompt_text, importers_text


class ConsentButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"castbot:consent:(?P<id>\d+):(?P<visibility>server|public)",
):
    def __init__(self, character_id: int, visibility: str, label: str = "") -> None:
        super().__init__(
            discord.ui.Button(
                label=label or "I confirm",
                style=discord.ButtonStyle.success,
                custom_id=f"castbot:consent:{character_id}:{visibility}",
            )
        )
        self.character_id = character_id
        self.visibility = visibility

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ConsentButton:
        label = item.label if isinstance(item, discord.ui.Button) else None
        return cls(int(match["id"]), match["visibility"], label or "")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # discord.py only logs what a dynamic item's callback raises: answer it here instead
        try:
            await actions_of(interaction).sharing.confirm(interaction, self.character_id, self.visibility)
        except Exception as exc:
            await report_error(interaction, exc)


class RevokeImportSelect(
    discord.ui.DynamicItem[discord.ui.Select[discord.ui.View]], template=r"castbot:revoke:(?P<id>\d+)"
):
    def __init__(self, character_id: int, options: list[discord.SelectOption] | None = None, placeholder: str = ""):
        super().__init__(
            discord.ui.Select(
                custom_id=f"castbot:revoke:{character_id}",
                placeholder=placeholder or None,
                options=options or [discord.SelectOption(label="-", value="0")],
                min_values=1,
                max_values=1,
            )
        )
        self.character_id = character_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> RevokeImportSelect:
        options = item.options if isinstance(item, discord.ui.Select) else None
        return cls(int(match["id"]), options)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            chosen = self.item.values[0] if self.item.values else ""
            guild_id = int(chosen) if chosen.isdigit() else 0
            await actions_of(interaction).sharing.revoke(interaction, self.character_id, guild_id)
        except Exception as exc:
            await report_error(interaction, exc)


SHARING_ITEMS = (ConsentButton, RevokeImportSelect)


class SharingActions:
    def __init__(self, client: discord.Client, characters: CharacterService, trust: TrustService) -> None:
        self._client = client
        self._characters = characters
        self._trust = trust

    def _guild_name(self, guild_id: int, locale: str) -> str:
        guild = self._client.get_guild(guild_id)
        return guild.name if guild is not None else t("trust.importers.unknown_server", locale, id=guild_id)

    async def show_importers(self, interaction: discord.Interaction[Any], character_id: int) -> None:
        """For the owner, after /character info: the importing servers by name, and a select to
        withdraw the character from one (a followup: the info was the answer)."""
        locale = locale_of(interaction)
        name, importers = await self._trust.importers(actor_of(interaction), character_id)
        if not importers:
            return
        names = [self._guild_name(i.guild_id, locale) for i in importers]
        options = [
            discord.SelectOption(label=n[:100], value=str(i.guild_id)) for n, i in zip(names, importers, strict=True)
        ]
        view = discord.ui.View(timeout=None)
        view.add_item(RevokeImportSelect(character_id, options, t("trust.importers.placeholder", locale)[:150]))
        await interaction.followup.send(importers_text(name, names, locale), view=view, ephemeral=True)
        view.stop()  # the registered dynamic item handles the choice

    async def revoke(self, interaction: discord.Interaction[Any], character_id: int, guild_id: int) -> None:
        locale = locale_of(interaction)
        await interaction.response.defer()  # the write may wait for the database: acknowledge first
        name = await self._trust.revoke_import(actor_of(interaction), character_id, guild_id)
        text = t("trust.importers.revoked", locale, name=name, server=self._guild_name(guild_id, locale))
        await interaction.edit_original_response(content=text, view=None)

    async def ask(self, interaction: discord.Interaction[Any], character_id: int, name: str, visibility: str) -> None:
        """Ask the owner to confirm consent (a reply, or a followup after another answer)."""
        locale = locale_of(interaction)
        view = discord.ui.View(timeout=None)
        view.add_item(ConsentButton(character_id, visibility, t("trust.consent.button", locale)))
        text = consent_prompt_text(name, visibility, locale)
        if interaction.response.is_done():
            await interaction.followup.send(text, view=view, ephemeral=True)
        else:
            await interaction.response.send_message(text, view=view, ephemeral=True)
        view.stop()  # the registered dynamic item handles the click

    async def confirm(self, interaction: discord.Interaction[Any], character_id: int, visibility: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        view = await self._characters.share_with_consent(actor_of(interaction), character_id, visibility)
        await send(interaction, shared_reply(view, locale_of(interaction)))
