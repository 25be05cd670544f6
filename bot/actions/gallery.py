"""The community gallery's actions: a card for /character browse, its page, Import and Info
buttons (persistent: all state in the custom id, see bot/ui/gallery.py), the Import modal that asks
for the name in this server, and /character edit's reply.

The owner's display name is looked up from Discord here (the services keep only ids): the cached
user, else one REST call, else the mention.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import discord

from bot.actions import actions_of
from bot.i18n import t
from bot.services.characters.gallery import GalleryCard, GalleryService
from bot.ui.characters import info_reply as character_info_reply
from bot.ui.characters import send
from bot.ui.gallery import (
    IMPORT_TEMPLATE,
    INFO_TEMPLATE,
    PAGE_TEMPLATE,
    SORTS_BY_LETTER,
    info_reply,
    page_reply,
)
from bot.ui.replies import actor_of, locale_of, report_error

log = logging.getLogger(__name__)

Button = discord.ui.Button[discord.ui.View]
OWNER_NAME_TTL = 3600.0  # seconds a fetched display name is reused
OWNER_NAMES_KEPT = 2048


class ImportModal(discord.ui.Modal):
    """A card's Import: the character's name in this server (its own name unless changed)."""

    def __init__(self, service: GalleryService, character_id: int, name: str, locale: str) -> None:
        super().__init__(title=t("gallery.import.title", locale, name=name)[:45], timeout=900)
        self.service = service
        self.character_id = character_id
        self.alias: discord.ui.TextInput[ImportModal] = discord.ui.TextInput(
            label=t("gallery.import.alias", locale)[:45], custom_id="alias", default=name, min_length=1, max_length=100
        )
        self.add_item(self.alias)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        view = await self.service.import_from_card(actor_of(interaction), self.character_id, self.alias.value)
        locale = locale_of(interaction)
        await send(interaction, character_info_reply(view, locale, t("characters.imported", locale, name=view.name)))

    # discord.py 2.7 calls Modal.on_error(interaction, error); its stubs inherit View's signature
    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await report_error(interaction, error)


class GalleryActions:
    def __init__(self, client: discord.Client, gallery: GalleryService) -> None:
        self._client = client
        self._gallery = gallery
        # owner id -> (display name, when looked up): a page turn costs no REST call for a while
        self._owners: dict[int, tuple[str, float]] = {}

    async def browse(self, interaction: discord.Interaction[Any], query: str, sort: str) -> None:
        """/character browse (deferred by the cog): the first card."""
        page = await self._gallery.browse(actor_of(interaction), query, sort, 0)
        owner = await self._owner(page.card)
        await send(interaction, page_reply(page, owner, locale_of(interaction)))

    async def show_page(self, interaction: discord.Interaction[Any], query: str, sort: str, page: int) -> None:
        """◀ / ▶: the card is rebuilt for whoever clicks (the gallery may have changed)."""
        await interaction.response.defer()  # the card may make a preview: edit it when ready
        result = await self._gallery.browse(actor_of(interaction), query, sort, page)
        reply = page_reply(result, await self._owner(result.card), locale_of(interaction))
        await interaction.edit_original_response(**reply.edit_kwargs())

    async def ask_import(self, interaction: discord.Interaction[Any], character_id: int) -> None:
        name = await self._gallery.name_of(actor_of(interaction), character_id)
        await interaction.response.send_modal(ImportModal(self._gallery, character_id, name, locale_of(interaction)))

    async def info(self, interaction: discord.Interaction[Any], character_id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        card = await self._gallery.card(actor_of(interaction), character_id)
        sheet = await self._gallery.frames_sheet(card)
        await send(interaction, info_reply(card, await self._owner(card), sheet, locale_of(interaction)))

    async def _owner(self, card: GalleryCard | None) -> str:
        if card is None:
            return ""
        owner_id = card.character.owner_id
        user = self._client.get_user(owner_id)
        if user is not None:
            return discord.utils.escape_markdown(user.display_name)
        known = self._owners.get(owner_id)
        if known is not None and time.monotonic() - known[1] < OWNER_NAME_TTL:
            return known[0]
        try:
            fetched = await self._client.fetch_user(owner_id)
        except discord.HTTPException as exc:
            log.info("owner %s of a gallery card not found: %s", owner_id, exc.status)
            return f"<@{owner_id}>"  # in an embed: shown as a mention, never a ping
        name = discord.utils.escape_markdown(fetched.display_name)
        if len(self._owners) >= OWNER_NAMES_KEPT:
            self._owners.clear()
        self._owners[owner_id] = (name, time.monotonic())
        return name


class _GalleryButton(discord.ui.DynamicItem[Button], template=r"castbot:gal:(?P<rest>x)"):
    def __init__(self, item: Button) -> None:
        super().__init__(item)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        # discord.py only logs what a dynamic item's callback raises: answer it here instead
        try:
            await self.handle(interaction)
        except Exception as exc:
            await report_error(interaction, exc)

    async def handle(self, interaction: discord.Interaction[Any]) -> None:
        raise NotImplementedError


def _button(item: discord.ui.Item[Any], match: re.Match[str]) -> Button:
    return item if isinstance(item, discord.ui.Button) else discord.ui.Button(custom_id=match.string)


class GalleryPageButton(_GalleryButton, template=PAGE_TEMPLATE):
    def __init__(self, item: Button, sort: str, page: int, query: str) -> None:
        super().__init__(item)
        self.sort, self.page, self.query = sort, page, query

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> GalleryPageButton:
        return cls(_button(item, match), SORTS_BY_LETTER[match["sort"]], int(match["page"]), match["query"])

    async def handle(self, interaction: discord.Interaction[Any]) -> None:
        await actions_of(interaction).gallery.show_page(interaction, self.query, self.sort, self.page)


class _CardButton(_GalleryButton, template=r"castbot:gal:(?P<id>x)"):
    """A button about one character's card: its id is in the custom id."""

    def __init__(self, item: Button, character_id: int) -> None:
        super().__init__(item)
        self.character_id = character_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _CardButton:
        return cls(_button(item, match), int(match["id"]))


class GalleryImportButton(_CardButton, template=IMPORT_TEMPLATE):
    async def handle(self, interaction: discord.Interaction[Any]) -> None:
        await actions_of(interaction).gallery.ask_import(interaction, self.character_id)


class GalleryInfoButton(_CardButton, template=INFO_TEMPLATE):
    async def handle(self, interaction: discord.Interaction[Any]) -> None:
        await actions_of(interaction).gallery.info(interaction, self.character_id)


GALLERY_BUTTONS = (GalleryPageButton, GalleryImportButton, GalleryInfoButton)
