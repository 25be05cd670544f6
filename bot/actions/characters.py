"""Making a character from a video: ask for its name in a modal, then create it."""

from __future__ import annotations

from typing import Any

import discord

from bot.actions import actions_of
from bot.i18n import t
from bot.services.characters import CharacterService, Upload
from bot.ui.characters import created_reply, page_reply, send
from bot.ui.replies import actor_of, locale_of, report_error


class MakeCharacterModal(discord.ui.Modal):
    """Asked by the "Make character" menu and button: the name (and a description) for the video."""

    def __init__(
        self, service: CharacterService, locale: str, *, upload: Upload | None = None, job_id: int | None = None
    ):
        super().__init__(title=t("characters.make.title", locale)[:45], timeout=900)
        self.service = service
        self.upload = upload  # from a message's attachment, or
        self.job_id = job_id  # from one of the member's finished videos (the Make character button)
        self.name_input: discord.ui.TextInput[MakeCharacterModal] = discord.ui.TextInput(
            label=t("characters.make.name", locale)[:45], custom_id="name", min_length=1, max_length=100
        )
        self.description_input: discord.ui.TextInput[MakeCharacterModal] = discord.ui.TextInput(
            label=t("characters.make.description", locale)[:45],
            custom_id="description",
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=500,
        )
        self.add_item(self.name_input)
        self.add_item(self.description_input)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        description = self.description_input.value or ""
        if self.upload is not None:
            created = await self.service.create_from_upload(
                actor_of(interaction), name=self.name_input.value, upload=self.upload, description=description
            )
        else:
            assert self.job_id is not None
            created = await self.service.create_from_job(
                actor_of(interaction), job_id=self.job_id, name=self.name_input.value, description=description
            )
        await send(interaction, created_reply(created, locale_of(interaction)))
        if created.character.visibility != "server":  # private until the owner confirms consent
            await actions_of(interaction).sharing.ask(
                interaction, created.character.id, created.character.name, "server"
            )

    # discord.py 2.7 calls Modal.on_error(interaction, error); its stubs inherit View's signature
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_error(interaction, error)


class CharacterActions:
    def __init__(self, characters: CharacterService) -> None:
        self._characters = characters

    async def ask_name_for_upload(self, interaction: discord.Interaction[Any], upload: Upload) -> None:
        """The "Make character" message menu: ask for a name, then create from the attachment."""
        self._characters.check_upload(upload)  # the cheap checks (type, size) answer before the modal
        modal = MakeCharacterModal(self._characters, locale_of(interaction), upload=upload)
        await interaction.response.send_modal(modal)

    async def show_page(self, interaction: discord.Interaction[Any], scope: str, page: int) -> None:
        """A character list's page button: the page rebuilt for the member who clicked."""
        result = await self._characters.list_page(actor_of(interaction), scope, page)
        reply = page_reply(result, locale_of(interaction))
        await interaction.response.edit_message(**reply.edit_kwargs())

    async def ask_name_for_job(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """The Make character button on a delivered video: ask for a name, then extract."""
        await self._characters.check_finished_job(actor_of(interaction), job_id)  # refuse before the modal
        modal = MakeCharacterModal(self._characters, locale_of(interaction), job_id=job_id)
        await interaction.response.send_modal(modal)
