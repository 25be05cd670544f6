"""Consent before a likeness is shared: the prompt with its confirm button, and what the button
does. The button's custom id carries the character and the visibility asked for
(`castbot:consent:<character>:<server|public>`), so it works after a restart; the service
checks that whoever clicks is the owner."""

from __future__ import annotations

import re
from typing import Any

import discord

from bot.actions import actions_of
from bot.i18n import t
from bot.services.characters import CharacterService
from bot.ui.characters import send, shared_reply
from bot.ui.replies import actor_of, locale_of, report_error
from bot.ui.trust import consent_prompt_text


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
            await actions_of(interaction).consent.confirm(interaction, self.character_id, self.visibility)
        except Exception as exc:
            await report_error(interaction, exc)


class ConsentActions:
    def __init__(self, characters: CharacterService) -> None:
        self._characters = characters

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
