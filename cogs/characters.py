"""/character create|extract|list|info|share|delete|import|browse|edit and the "Make character" message menu."""

from __future__ import annotations

import logging
import mimetypes

import discord
from discord import app_commands
from discord.ext import commands

from bot.actions.buttons import PageButton
from bot.actions.gallery import GALLERY_BUTTONS
from bot.actions.reports import card_report_view
from bot.app import Castbot
from bot.i18n import t
from bot.services.characters import CharacterService, Upload
from bot.services.characters.errors import UploadRefused
from bot.services.characters.gallery import MAX_QUERY
from bot.services.trust_rules import ConsentRequired
from bot.ui.characters import (
    COG_NAME,
    Reply,
    created_reply,
    deleted_text,
    info_reply,
    job_choices,
    name_choices,
    page_reply,
    send,
    shared_reply,
)
from bot.ui.gallery import edited_reply
from bot.ui.replies import actor_of, locale_of
from bot.ui.translator import cmd

log = logging.getLogger(__name__)

Interaction = discord.Interaction[Castbot]

VISIBILITY_CHOICES = [
    app_commands.Choice(name=cmd("cmd.character.choice.private"), value="private"),
    app_commands.Choice(name=cmd("cmd.character.choice.server"), value="server"),
    app_commands.Choice(name=cmd("cmd.character.choice.public"), value="public"),
]
SCOPE_CHOICES = [
    app_commands.Choice(name=cmd("cmd.character.choice.scope.server"), value="server"),
    app_commands.Choice(name=cmd("cmd.character.choice.scope.mine"), value="mine"),
    app_commands.Choice(name=cmd("cmd.character.choice.scope.community"), value="community"),
]
SORT_CHOICES = [
    app_commands.Choice(name=cmd("cmd.character.choice.sort.popular"), value="popular"),
    app_commands.Choice(name=cmd("cmd.character.choice.sort.newest"), value="newest"),
    app_commands.Choice(name=cmd("cmd.character.choice.sort.by_name"), value="name"),
]


def upload_of(attachment: discord.Attachment) -> Upload:
    return Upload(attachment.url, attachment.filename, attachment.content_type, attachment.size)


def _is_video(attachment: discord.Attachment) -> bool:
    kind = attachment.content_type or mimetypes.guess_type(attachment.filename)[0] or ""
    return kind.lower().startswith("video/")


class CharactersCog(commands.Cog, name=COG_NAME):
    character = app_commands.Group(
        name=cmd("cmd.character.name"), description=cmd("cmd.character.description"), guild_only=True
    )

    def __init__(self, bot: Castbot, service: CharacterService) -> None:
        self.bot = bot
        self.service = service
        self.make_menu = app_commands.ContextMenu(
            name=cmd("cmd.character.make.name"),
            callback=self.make_character,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.make_menu)
        self.bot.add_dynamic_items(PageButton, *GALLERY_BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.make_menu.name, type=self.make_menu.type)
        self.bot.remove_dynamic_items(PageButton, *GALLERY_BUTTONS)

    # --- create -----------------------------------------------------------------------------------

    @character.command(name=cmd("cmd.character.create.name"), description=cmd("cmd.character.create.description"))
    @app_commands.rename(
        name=cmd("cmd.character.opt.name"),
        video=cmd("cmd.character.opt.video"),
        description=cmd("cmd.character.opt.description"),
        visibility=cmd("cmd.character.opt.visibility"),
    )
    @app_commands.describe(
        name=cmd("cmd.character.opt.name.new"),
        video=cmd("cmd.character.opt.video.about"),
        description=cmd("cmd.character.opt.description.about"),
        visibility=cmd("cmd.character.opt.visibility.about"),
    )
    @app_commands.choices(visibility=VISIBILITY_CHOICES)
    async def create(
        self,
        interaction: Interaction,
        name: app_commands.Range[str, 1, 100],
        video: discord.Attachment,
        description: app_commands.Range[str, 1, 500] | None = None,
        visibility: app_commands.Choice[str] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        wanted = visibility.value if visibility else "server"
        created = await self.service.create_from_upload(
            actor_of(interaction), name=name, upload=upload_of(video), description=description or "", visibility=wanted
        )
        await send(interaction, created_reply(created, locale_of(interaction)))
        if created.character.visibility != wanted:  # kept private until its owner confirms consent
            await self.bot.actions.sharing.ask(interaction, created.character.id, created.character.name, wanted)

    @character.command(name=cmd("cmd.character.extract.name"), description=cmd("cmd.character.extract.description"))
    @app_commands.rename(
        job=cmd("cmd.character.opt.job"),
        name=cmd("cmd.character.opt.name"),
        description=cmd("cmd.character.opt.description"),
    )
    @app_commands.describe(
        job=cmd("cmd.character.opt.job.about"),
        name=cmd("cmd.character.opt.name.new"),
        description=cmd("cmd.character.opt.description.about"),
    )
    async def extract(
        self,
        interaction: Interaction,
        job: app_commands.Range[str, 1, 100],
        name: app_commands.Range[str, 1, 100],
        description: app_commands.Range[str, 1, 500] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        job_id = int(job.strip().lstrip("#")) if job.strip().lstrip("#").isdigit() else -1
        created = await self.service.create_from_job(
            actor_of(interaction), job_id=job_id, name=name, description=description or ""
        )
        await send(interaction, created_reply(created, locale_of(interaction)))

    @extract.autocomplete("job")
    async def _job_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        jobs = await self.service.finished_jobs(actor_of(interaction), current)
        return job_choices(jobs, locale_of(interaction))

    async def make_character(self, interaction: Interaction, message: discord.Message) -> None:
        video = next((a for a in message.attachments if _is_video(a)), None)
        if video is None:
            raise UploadRefused("characters.make.no_video")
        await self.bot.actions.characters.ask_name_for_upload(interaction, upload_of(video))

    # --- reading ----------------------------------------------------------------------------------

    @character.command(name=cmd("cmd.character.list.name"), description=cmd("cmd.character.list.description"))
    @app_commands.rename(scope=cmd("cmd.character.opt.scope"))
    @app_commands.describe(scope=cmd("cmd.character.opt.scope.about"))
    @app_commands.choices(scope=SCOPE_CHOICES)
    async def list_(self, interaction: Interaction, scope: app_commands.Choice[str] | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        page = await self.service.list_page(actor_of(interaction), scope.value if scope else "server", 0)
        await send(interaction, page_reply(page, locale_of(interaction)))

    @character.command(name=cmd("cmd.character.info.name"), description=cmd("cmd.character.info.description"))
    @app_commands.rename(name=cmd("cmd.character.opt.name"))
    @app_commands.describe(name=cmd("cmd.character.opt.name.pick"))
    async def info(self, interaction: Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        view = await self.service.info(actor_of(interaction), name)
        reply = info_reply(view, locale_of(interaction))
        if view.visibility == "public" and not view.is_owner:  # a public card: others can report it
            reply.view = card_report_view(view.id, locale_of(interaction))
        await send(interaction, reply)
        if reply.view is not None:
            reply.view.stop()  # the registered dynamic item handles the click
        if view.is_owner and view.import_count:  # which servers imported it, to withdraw it from one
            await self.bot.actions.sharing.show_importers(interaction, view.id)

    # --- sharing ----------------------------------------------------------------------------------

    @character.command(name=cmd("cmd.character.share.name"), description=cmd("cmd.character.share.description"))
    @app_commands.rename(name=cmd("cmd.character.opt.name"), visibility=cmd("cmd.character.opt.visibility"))
    @app_commands.describe(
        name=cmd("cmd.character.opt.name.pick"), visibility=cmd("cmd.character.opt.visibility.about")
    )
    @app_commands.choices(visibility=VISIBILITY_CHOICES)
    async def share(
        self, interaction: Interaction, name: app_commands.Range[str, 1, 100], visibility: app_commands.Choice[str]
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            view = await self.service.share(actor_of(interaction), name, visibility.value)
        except ConsentRequired as needed:
            await self.bot.actions.sharing.ask(interaction, needed.character_id, needed.name, needed.visibility)
            return
        await send(interaction, shared_reply(view, locale_of(interaction)))

    @character.command(name=cmd("cmd.character.delete.name"), description=cmd("cmd.character.delete.description"))
    @app_commands.rename(name=cmd("cmd.character.opt.name"))
    @app_commands.describe(name=cmd("cmd.character.opt.name.pick"))
    async def delete(self, interaction: Interaction, name: app_commands.Range[str, 1, 100]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        deleted = await self.service.delete(actor_of(interaction), name)
        await send(interaction, Reply(content=deleted_text(deleted, locale_of(interaction))))

    @character.command(name=cmd("cmd.character.import.name"), description=cmd("cmd.character.import.description"))
    @app_commands.rename(code=cmd("cmd.character.opt.code"), name=cmd("cmd.character.opt.name"))
    @app_commands.describe(code=cmd("cmd.character.opt.code.about"), name=cmd("cmd.character.opt.name.alias"))
    async def import_(
        self,
        interaction: Interaction,
        code: app_commands.Range[str, 1, 40],
        name: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        view = await self.service.import_character(actor_of(interaction), code, name)
        locale = locale_of(interaction)
        await send(interaction, info_reply(view, locale, t("characters.imported", locale, name=view.name)))

    # --- name autocomplete ------------------------------------------------------------------------

    @info.autocomplete("name")
    async def _usable_names(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        choices = await self.service.autocomplete(actor_of(interaction), current, "use")
        return name_choices(choices, locale_of(interaction))

    @share.autocomplete("name")
    async def _own_names(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        choices = await self.service.autocomplete(actor_of(interaction), current, "share")
        return name_choices(choices, locale_of(interaction))

    @delete.autocomplete("name")
    async def _deletable_names(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        choices = await self.service.autocomplete(actor_of(interaction), current, "delete")
        return name_choices(choices, locale_of(interaction))

    # --- the community gallery and editing (bot/services/characters/gallery.py) -------------------

    @character.command(name=cmd("cmd.character.browse.name"), description=cmd("cmd.character.browse.description"))
    @app_commands.rename(query=cmd("cmd.character.opt.query"), sort=cmd("cmd.character.opt.sort"))
    @app_commands.describe(query=cmd("cmd.character.opt.query.about"), sort=cmd("cmd.character.opt.sort.about"))
    @app_commands.choices(sort=SORT_CHOICES)
    async def browse(
        self,
        interaction: Interaction,
        query: app_commands.Range[str, 1, MAX_QUERY] | None = None,
        sort: app_commands.Choice[str] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.actions.gallery.browse(interaction, query or "", sort.value if sort else "popular")

    @character.command(name=cmd("cmd.character.edit.name"), description=cmd("cmd.character.edit.description"))
    @app_commands.rename(
        name=cmd("cmd.character.opt.name"),
        new_name=cmd("cmd.character.opt.new_name"),
        description=cmd("cmd.character.opt.description"),
        tags=cmd("cmd.character.opt.tags"),
        video=cmd("cmd.character.opt.video"),
    )
    @app_commands.describe(
        name=cmd("cmd.character.opt.name.own"),
        new_name=cmd("cmd.character.opt.new_name.about"),
        description=cmd("cmd.character.opt.description.edit"),
        tags=cmd("cmd.character.opt.tags.about"),
        video=cmd("cmd.character.opt.video.edit"),
    )
    async def edit(
        self,
        interaction: Interaction,
        name: app_commands.Range[str, 1, 100],
        new_name: app_commands.Range[str, 1, 100] | None = None,
        description: app_commands.Range[str, 1, 500] | None = None,
        tags: app_commands.Range[str, 1, 300] | None = None,
        video: discord.Attachment | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        edited = await self.bot.services.gallery.edit(
            actor_of(interaction),
            name,
            new_name=new_name,
            description=description,
            tags=tags,
            upload=upload_of(video) if video is not None else None,
        )
        await send(interaction, edited_reply(edited, locale_of(interaction)))

    @edit.autocomplete("name")
    async def _editable_names(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        choices = await self.service.autocomplete(actor_of(interaction), current, "share")
        return name_choices(choices, locale_of(interaction))


async def setup(bot: Castbot) -> None:
    await bot.add_cog(CharactersCog(bot, bot.services.characters))
