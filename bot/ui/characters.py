"""Character embeds, the list paginator (buttons that survive restarts) and autocomplete choices.

Frames and previews are attached to the reply and referenced as `attachment://...`: Discord CDN
links to our own files would expire, and the files never leave the bot otherwise. A card shows the
animated preview as its image and the frontal frame as its thumbnail (the frame as its image when
there is no preview); a list page is one embed: numbered lines and one gallery picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
from discord import app_commands

from bot.i18n import t
from bot.services.characters import (
    CharacterView,
    Created,
    Deleted,
    JobChoice,
    NameChoice,
    Page,
)

COLOUR = discord.Colour(0x5865F2)
FRONTAL_FILE = "frontal.jpg"
PREVIEW_NAME = "preview"  # + the preview's suffix: preview.webp
GALLERY_FILE = "gallery.jpg"
COG_NAME = "Characters"
PAGE_ID = "castbot:chars:{scope}:{page}:{direction}"
PAGE_TEMPLATE = r"castbot:chars:(?P<scope>server|mine|community):(?P<page>[0-9]{1,7}):(?P<direction>[pn])"
_DESCRIPTION_MAX = 1000  # of Discord's 4096: a character card, not an essay
_CHOICE_MAX = 100  # Discord's limit on a choice's name and value
_LIST_MAX = 4096  # Discord's limit on an embed's description


@dataclass
class Reply:
    """Keyword arguments for a message: content, embeds, files, view."""

    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None

    def send_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"embeds": self.embeds, "files": self.files}
        if self.content is not None:
            kwargs["content"] = self.content
        if self.view is not None:
            kwargs["view"] = self.view
        return kwargs

    def edit_kwargs(self) -> dict[str, Any]:
        return {"content": self.content, "embeds": self.embeds, "attachments": self.files, "view": self.view}


async def send(interaction: discord.Interaction[Any], reply: Reply) -> None:
    """Answer ephemerally: a character's details are for the member who asked."""
    if interaction.response.is_done():
        await interaction.followup.send(ephemeral=True, **reply.send_kwargs())
    else:
        await interaction.response.send_message(ephemeral=True, **reply.send_kwargs())


def _visibility(view: CharacterView, locale: str) -> str:
    return t(f"characters.visibility.{view.visibility}", locale)


def _frame_file(view: CharacterView, filename: str) -> discord.File | None:
    if view.frontal is None or not view.frontal.is_file():
        return None
    return discord.File(view.frontal, filename=filename)


def character_embed(view: CharacterView, locale: str) -> tuple[discord.Embed, list[discord.File]]:
    """A character card: the frontal frame as its image, owner, visibility, uses, share code."""
    embed = discord.Embed(
        title=f"@{view.name}",
        description=view.description[:_DESCRIPTION_MAX] or None,
        colour=COLOUR,
        timestamp=datetime.fromtimestamp(view.created_at, tz=UTC),
    )
    embed.add_field(name=t("characters.field.owner", locale), value=f"<@{view.owner_id}>")
    embed.add_field(name=t("characters.field.visibility", locale), value=_visibility(view, locale))
    embed.add_field(name=t("characters.field.uses", locale), value=str(view.uses))
    seconds = t("characters.clip_seconds", locale, seconds=f"{view.clip_duration:.1f}")
    embed.add_field(name=t("characters.field.clip", locale), value=seconds)
    if view.share_code and view.visibility == "public":
        embed.add_field(
            name=t("characters.field.code", locale),
            value=t("characters.field.code_value", locale, code=view.share_code),
            inline=False,
        )
    elif view.share_code and view.is_owner:
        embed.add_field(
            name=t("characters.field.code", locale),
            value=t("characters.field.code_inactive", locale, code=view.share_code),
            inline=False,
        )
    if view.imported:
        value = t("characters.field.imported_value", locale, name=view.original_name)
        if view.import_state in ("revoked", "deleted"):
            value += "\n" + t(f"characters.import_state.{view.import_state}", locale)
        embed.add_field(name=t("characters.field.imported", locale), value=value, inline=False)
    if view.import_count:
        embed.add_field(
            name=t("characters.field.imports", locale),
            value=t("characters.field.imports_value", locale, count=view.import_count),
        )
    if view.refused:
        lines = "\n".join(f"**{p}**: {why[:200]}" for p, why in sorted(view.refused.items()))
        embed.add_field(name=t("characters.field.refused", locale), value=lines[:1024], inline=False)
    return embed, card_pictures(embed, view, frame_beside_preview=True)


def card_pictures(embed: discord.Embed, view: CharacterView, *, frame_beside_preview: bool) -> list[discord.File]:
    """Set the card's image: the looping preview, else the frontal frame (a still when no preview
    could be made); with `frame_beside_preview`, the frame also as the thumbnail beside a preview.
    Returns the files the message must carry."""
    files = []
    animated = view.preview if view.preview is not None and view.preview.is_file() else None
    if animated is not None:
        name = f"{PREVIEW_NAME}{animated.suffix}"
        embed.set_image(url=f"attachment://{name}")
        files.append(discord.File(animated, filename=name))
    if animated is not None and not frame_beside_preview:
        return files
    frame = _frame_file(view, FRONTAL_FILE)  # opens the file: only when it is sent
    if frame is not None:
        if animated is not None:
            embed.set_thumbnail(url=f"attachment://{FRONTAL_FILE}")
        else:
            embed.set_image(url=f"attachment://{FRONTAL_FILE}")
        files.append(frame)
    return files


def info_reply(view: CharacterView, locale: str, content: str | None = None) -> Reply:
    embed, files = character_embed(view, locale)
    return Reply(content=content, embeds=[embed], files=files)


def created_reply(created: Created, locale: str) -> Reply:
    name = created.character.name
    lines = [t("characters.created", locale, name=name)]
    reg = created.registration
    if reg is not None and reg.outcome == "refused":
        reason = reg.reason.strip().rstrip(".") or "?"
        if reg.others:
            others = ", ".join(f"**{o}**" for o in reg.others)
            lines.append(t("characters.created.refused", locale, provider=reg.provider, reason=reason, others=others))
        else:
            lines.append(t("characters.created.refused_only", locale, provider=reg.provider, reason=reason))
    elif reg is not None and reg.outcome == "later":
        lines.append(t("characters.created.later", locale, provider=reg.provider))
    return info_reply(created.character, locale, "\n".join(lines))


def shared_reply(view: CharacterView, locale: str) -> Reply:
    if view.visibility == "public":
        text = t("characters.shared.public", locale, name=view.name, code=view.share_code or "?")
    else:
        text = t(f"characters.shared.{view.visibility}", locale, name=view.name)
        if view.import_count:
            text += "\n" + t("characters.shared.stopped", locale, count=view.import_count)
    return info_reply(view, locale, text)


def deleted_text(deleted: Deleted, locale: str) -> str:
    text = t(f"characters.deleted.{deleted.kind}", locale, name=deleted.name)
    if deleted.imports_stopped:
        text += "\n" + t("characters.shared.stopped", locale, count=deleted.imports_stopped)
    return text


# --- the list paginator ---------------------------------------------------------------------------


def _line(view: CharacterView, scope: str, locale: str) -> str:
    owner = f"<@{view.owner_id}>"
    if view.imported:
        state = t(f"characters.line_import.{view.import_state or 'ok'}", locale)
        return t("characters.line_import", locale, state=state)
    if scope == "community" and view.share_code:
        return t("characters.line_code", locale, owner=owner, uses=view.uses, code=view.share_code)
    return t("characters.line", locale, owner=owner, visibility=_visibility(view, locale), uses=view.uses)


def page_reply(page: Page, locale: str) -> Reply:
    """One compact card: a numbered line per character and, as its image, the gallery of their
    frontal frames numbered alike; page buttons below."""
    if not page.items:
        return Reply(content=t(f"characters.list.empty.{page.scope}", locale))
    header = t(f"characters.list.{page.scope}", locale, page=page.page + 1, pages=page.pages, total=page.total)
    reply = Reply(content=header)
    lines = [f"**{n}.** **@{item.name}** — {_line(item, page.scope, locale)}" for n, item in enumerate(page.items, 1)]
    embed = discord.Embed(description="\n".join(lines)[:_LIST_MAX], colour=COLOUR)
    if page.gallery is not None:
        embed.set_image(url=f"attachment://{GALLERY_FILE}")
        reply.files.append(discord.File(io.BytesIO(page.gallery), filename=GALLERY_FILE))
    reply.embeds.append(embed)
    if page.pages > 1:
        # plain buttons: their custom ids are the page buttons' template (bot/actions/buttons.py),
        # so a click reaches the registered handler, also after a restart
        view = discord.ui.View(timeout=None)
        last = page.pages - 1
        view.add_item(
            _page_button(page.scope, max(page.page - 1, 0), "p", t("characters.page.prev", locale), page.page == 0)
        )
        view.add_item(
            _page_button(
                page.scope, min(page.page + 1, last), "n", t("characters.page.next", locale), page.page >= last
            )
        )
        reply.view = view
    return reply


def _page_button(
    scope: str, page: int, direction: str, label: str, disabled: bool
) -> discord.ui.Button[discord.ui.View]:
    custom_id = PAGE_ID.format(scope=scope, page=page, direction=direction)
    return discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=custom_id, disabled=disabled)


# --- autocomplete ---------------------------------------------------------------------------------


def name_choices(choices: Sequence[NameChoice], locale: str) -> list[app_commands.Choice[str]]:
    out = []
    for c in choices:
        if c.kind == "import":
            key = "characters.choice.dead_import" if c.visibility != "public" else "characters.choice.import"
            label = t(key, locale, name=c.name)
        elif c.visibility == "private":
            label = t("characters.choice.private", locale, name=c.name)
        else:
            label = c.name
        out.append(app_commands.Choice(name=label[:_CHOICE_MAX], value=c.name))
    return out


def job_choices(jobs: Sequence[JobChoice], locale: str) -> list[app_commands.Choice[str]]:
    out = []
    for job in jobs:
        prompt = " ".join(job.prompt.split())
        label = t("characters.job_choice", locale, id=job.job_id, prompt=prompt)
        if len(label) > _CHOICE_MAX:
            label = label[: _CHOICE_MAX - 1] + "…"
        out.append(app_commands.Choice(name=label, value=str(job.job_id)))
    return out
