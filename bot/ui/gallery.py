"""The community gallery's card (/character browse), its info reply, the edit reply, and the
custom ids of the card's buttons (handled in bot/actions/gallery.py; all state is in the id, so
they work after a restart).

A card is one public character: its animated preview as the image (the frontal frame when there
is none), the owner's display name, description, tags and how far it travelled; below it
◀ / ▶ / Import / Info / Report.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import discord

from bot.i18n import t
from bot.services.characters import Created
from bot.services.characters.gallery import MAX_QUERY, Edited, GalleryCard, GalleryPage
from bot.ui.characters import COLOUR, Reply, card_pictures, character_embed, created_reply

SORT_LETTERS = {"popular": "p", "newest": "n", "name": "a"}
SORTS_BY_LETTER = {v: k for k, v in SORT_LETTERS.items()}
PAGE_ID = "castbot:gal:{sort}:{page}:{direction}:{query}"
PAGE_TEMPLATE = (
    r"castbot:gal:(?P<sort>[pna]):(?P<page>[0-9]{1,7}):(?P<direction>[pn]):(?P<query>.{0," + str(MAX_QUERY) + "})"
)
IMPORT_ID = "castbot:gal:imp:{id}"
IMPORT_TEMPLATE = r"castbot:gal:imp:(?P<id>[0-9]{1,19})"
INFO_ID = "castbot:gal:info:{id}"
INFO_TEMPLATE = r"castbot:gal:info:(?P<id>[0-9]{1,19})"
REPORT_ID = "castbot:report:c:{id}"  # handled by the reports feature, not here
FRAMES_FILE = "frames.jpg"
_DESCRIPTION_MAX = 1000
_FIELD_MAX = 1024


def _tags(tags: tuple[str, ...]) -> str:
    return " ".join(f"`#{tag}`" for tag in tags)[:_FIELD_MAX]


def _used(card: GalleryCard, locale: str) -> str:
    if card.videos == 0:
        return t("gallery.used.none", locale)
    return t("gallery.used", locale, videos=card.videos, servers=card.servers)


def card_embed(card: GalleryCard, owner: str, locale: str) -> tuple[discord.Embed, list[discord.File]]:
    view = card.character
    embed = discord.Embed(
        title=f"@{view.original_name}",
        description=view.description[:_DESCRIPTION_MAX] or None,
        colour=COLOUR,
        timestamp=datetime.fromtimestamp(view.created_at, tz=UTC),
    )
    embed.add_field(name=t("gallery.field.owner", locale), value=owner[:_FIELD_MAX])
    embed.add_field(name=t("gallery.field.used", locale), value=_used(card, locale))
    if card.tags:
        embed.add_field(name=t("gallery.field.tags", locale), value=_tags(card.tags), inline=False)
    if view.share_code:
        embed.add_field(name=t("gallery.field.code", locale), value=f"`{view.share_code}`")
    return embed, card_pictures(embed, view, frame_beside_preview=False)


def page_reply(page: GalleryPage, owner: str, locale: str) -> Reply:
    """One card and its buttons; a plain sentence when nothing matches."""
    sort = t(f"gallery.sort.{page.sort}", locale)
    if page.card is None:
        if page.query:
            return Reply(content=t("gallery.empty.query", locale, query=page.query))
        return Reply(content=t("gallery.empty", locale))
    many = ".many" if page.more else ""
    if page.query:
        header = t(f"gallery.header.query{many}", locale, query=page.query, total=page.total, sort=sort)
    else:
        header = t(f"gallery.header{many}", locale, total=page.total, sort=sort)
    embed, files = card_embed(page.card, owner, locale)
    embed.set_footer(text=t(f"gallery.footer{many}", locale, page=page.page + 1, pages=page.pages))
    character_id = page.card.character.id
    view = discord.ui.View(timeout=None)
    letter = SORT_LETTERS[page.sort]
    for target, direction, label, disabled in (
        (max(page.page - 1, 0), "p", t("gallery.button.prev", locale), page.page == 0),
        (page.page + 1 if page.has_next else page.page, "n", t("gallery.button.next", locale), not page.has_next),
    ):
        custom_id = PAGE_ID.format(sort=letter, page=target, direction=direction, query=page.query)
        view.add_item(
            discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=custom_id, disabled=disabled)
        )
    buttons = (
        (IMPORT_ID, "gallery.button.import", discord.ButtonStyle.primary),
        (INFO_ID, "gallery.button.info", discord.ButtonStyle.secondary),
        (REPORT_ID, "gallery.button.report", discord.ButtonStyle.danger),
    )
    for template, label_key, style in buttons:
        view.add_item(
            discord.ui.Button(label=t(label_key, locale), style=style, custom_id=template.format(id=character_id))
        )
    return Reply(content=header, embeds=[embed], files=files, view=view)


def info_reply(card: GalleryCard, owner: str, sheet: bytes | None, locale: str) -> Reply:
    """A card's Info: the character card /character info shows, with its tags, reach and frames."""
    embed, files = character_embed(card.character, locale)
    embed.title = f"@{card.character.original_name}"
    embed.set_field_at(0, name=t("gallery.field.owner", locale), value=owner[:_FIELD_MAX])
    embed.add_field(name=t("gallery.field.used", locale), value=_used(card, locale))
    if card.tags:
        embed.add_field(name=t("gallery.field.tags", locale), value=_tags(card.tags), inline=False)
    embeds = [embed]
    if sheet is not None:
        frames = discord.Embed(title=t("gallery.field.frames", locale), colour=COLOUR)
        frames.set_image(url=f"attachment://{FRAMES_FILE}")
        files.append(discord.File(io.BytesIO(sheet), filename=FRAMES_FILE))
        embeds.append(frames)
    return Reply(embeds=embeds, files=files)


def edited_reply(edited: Edited, locale: str) -> Reply:
    name = edited.character.name
    changed = ", ".join(t(f"gallery.edited.field.{c}", locale) for c in edited.changed)
    lines = [t("gallery.edited", locale, name=name, changed=changed)]
    if "name" in edited.changed:
        lines.append(t("gallery.edited.renamed", locale, old=edited.old_name, name=name))
    if "video" in edited.changed:
        lines.append(t("gallery.edited.video", locale))
    if edited.character.import_count:
        lines.append(t("gallery.edited.imports", locale, count=edited.character.import_count))
    if edited.registration is not None and edited.registration.outcome != "ready":
        # the same provider notes as a new character's
        notes = created_reply(Created(edited.character, edited.registration), locale).content or ""
        lines += notes.split("\n")[1:]
    reply = Reply(content="\n".join(lines))
    embed, files = character_embed(edited.character, locale)
    if edited.tags:
        embed.add_field(name=t("gallery.field.tags", locale), value=_tags(edited.tags), inline=False)
    reply.embeds.append(embed)
    reply.files += files
    return reply
