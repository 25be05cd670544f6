"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from bot.providers.base import CharacterRef, GenerationRequest, JobSnapshot, Orientation, Quality, VideoProvider

Snapshots = dict[str, JobSnapshot]


def request(
    prompt: str = "a quiet lake at dawn", characters: Iterable[CharacterRef] = (), **kw: Any
) -> GenerationRequest:
    """A generation request: 5 s, portrait, standard quality unless told otherwise."""
    kw.setdefault("seconds", 5)
    kw.setdefault("orientation", Orientation.PORTRAIT)
    kw.setdefault("quality", Quality.STANDARD)
    return GenerationRequest(prompt=prompt, characters=tuple(characters), **kw)


def write_frame(
    path: Path, color: tuple[int, int, int] | str, size: tuple[int, int] = (360, 640), fmt: str = "JPEG"
) -> Path:
    """A plain reference frame on disk."""
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


async def wait_until(
    provider: VideoProvider, ids: Sequence[str], done: Callable[..., bool], timeout: float = 5.0
) -> Snapshots:
    """Poll the provider's status of `ids` until `done` holds."""
    deadline = time.monotonic() + timeout
    while True:
        snaps = dict(await provider.status(ids))
        if done(snaps):
            return snaps
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {snaps}")
        await asyncio.sleep(0.03)


def all_terminal(ids: Iterable[str]) -> Callable[[Mapping[str, JobSnapshot]], bool]:
    wanted = tuple(ids)
    return lambda snaps: all(i in snaps and snaps[i].status.terminal for i in wanted)


async def confirm_consent(sandbox: Any, handle: Any, owner: Any, timeout: float = 20.0) -> Any:
    """Click "I confirm" on the consent prompt a share or create to `public` answers with
    (bot/actions/consent.py); returns the reply to that click (the character, now shared)."""

    def prompt() -> Any:
        for message in (handle.original, *handle.followups):
            if message is not None and any(c.startswith("castbot:consent:") for c in message.custom_ids()):
                return message
        return None

    message = await sandbox.wait_for(prompt, timeout, "the consent prompt")
    [custom_id] = [c for c in message.custom_ids() if c.startswith("castbot:consent:")]
    click = await sandbox.click(message, custom_id, owner)
    return await click.wait_final_message(timeout=timeout)
