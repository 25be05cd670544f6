"""The character service's previews: made once at creation beside the frames, lazily for older
characters, never for an import that stopped working; and the list page's gallery."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from PIL import Image

from tests.unit.test_character_service import MEMBER, OWNER, Env, clip_bytes, clip_server, env

__all__ = ["clip_bytes", "clip_server", "env"]  # shared fixtures: the character service on each engine


def assert_preview(path: Path | None) -> None:
    assert path is not None and path.stat().st_size < 2_000_000
    with Image.open(path) as image:
        assert image.format == "WEBP" and getattr(image, "is_animated", False) and image.info["loop"] == 0


async def test_create_makes_the_preview_beside_the_frames_and_info_reuses_it(env: Env) -> None:
    created = await env.create(OWNER, "Anna")
    preview = created.character.preview
    assert preview == env.data / "frames" / str(created.character.id) / "preview.webp"
    assert_preview(preview)
    assert created.character.frontal is not None and created.character.frontal.parent == preview.parent
    made = preview.stat().st_mtime_ns
    info = await env.service.info(MEMBER, "anna")
    assert info.preview == preview and preview.stat().st_mtime_ns == made  # not made again
    assert not list((env.data / "tmp").iterdir())


async def test_info_makes_a_missing_preview_once_even_when_asked_twice_at_once(env: Env) -> None:
    created = await env.create(OWNER, "Anna")
    assert created.character.preview is not None
    created.character.preview.unlink()  # a character made before previews existed
    first, second = await asyncio.gather(env.service.info(MEMBER, "anna"), env.service.info(OWNER, "anna"))
    assert first.preview == second.preview == created.character.preview
    assert_preview(first.preview)
    assert not [p for p in first.preview.parent.iterdir() if p.name.endswith(".part")]


async def test_an_unreadable_clip_leaves_the_character_without_a_preview(env: Env) -> None:
    created = await env.create(OWNER, "Anna")
    assert created.character.preview is not None
    created.character.preview.unlink()
    row = await env.db.fetchone("SELECT clip_path FROM characters")
    assert row is not None
    (env.data / row["clip_path"]).write_bytes(b"\0" * 1000)  # damaged on disk
    info = await env.service.info(MEMBER, "anna")
    assert info.preview is None and info.name == "Anna"  # the card still shows, with its frame


async def test_the_list_page_carries_a_gallery_of_its_frames(env: Env) -> None:
    for name in ("Anna", "Bert", "Cleo"):
        await env.create(OWNER, name)
    page = await env.service.list_page(MEMBER, "server", 0)
    assert sorted(i.name for i in page.items) == ["Anna", "Bert", "Cleo"]
    assert page.gallery is not None
    with Image.open(io.BytesIO(page.gallery)) as sheet:
        assert sheet.format == "JPEG" and sheet.size == (3 * 192 + 2 * 6, 240)  # one row of three
    assert all(i.preview is None for i in page.items)  # a list does not make previews
    empty = await env.service.list_page(MEMBER, "community", 0)
    assert empty.items == () and empty.gallery is None
