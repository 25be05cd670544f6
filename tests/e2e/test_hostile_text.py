"""Property: whatever a member types into any free-text option (invisible, bidi, look-alike,
markdown, mention and control characters, up to the option's length), the reply is delivered
(the sandbox refused nothing the bot sent) and nothing is stored or held."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import Castbot
from discord_sandbox import DiscordSandbox
from discord_sandbox.clips import make_png_as_mp4
from tests.conftest import World

pytestmark = pytest.mark.e2e

HOSTILE_CHARS = [
    *"\u200b\u200c\u200d\u2060\ufeff",  # zero-width
    *"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c",  # bidi
    *"\u2800\u3164\u115f\u00a0\u3000 \t\n\r",  # blank-looking and spaces
    *"\u0301\u0336\ufe0f\u034f",  # marks, variation selectors
    *"`*_~|>#@<&:/\\\"'",  # markdown, mentions, quotes
    *"\u0430\u0435\u043e\u0440\u0441\u0455\u0456",  # Cyrillic look-alikes
    *"ＡＢ𝐚𝐛ⅠⅡ",  # full-width, mathematical, numerals
    "everyone",
    "here",
    "<@123>",
    "<@&1>",
    "@everyone",
    "🙂",
    "\U000e0041",
]
HOSTILE = st.lists(st.sampled_from(HOSTILE_CHARS), min_size=1, max_size=80).map("".join)

# (command, option, other options); a video option is filled with a picture, so nothing is stored.
TARGETS: list[tuple[str, str, dict[str, Any]]] = [
    ("generate", "prompt", {}),
    ("generate", "provider", {"prompt": "@nobody_here waves"}),
    ("character create", "name", {"video": "png"}),
    ("character create", "description", {"name": "Hostile", "video": "png"}),
    ("character extract", "job", {"name": "Hostile"}),
    ("character extract", "name", {"job": "1"}),
    ("character info", "name", {}),
    ("character share", "name", {"visibility": "public"}),
    ("character delete", "name", {}),
    ("character import", "code", {}),
    ("character import", "name", {"code": "0000000000"}),
]


def max_length(sandbox: DiscordSandbox, world: World, command: str, option: str) -> int:
    root, *sub = command.split()
    for definition in sandbox.synced_commands(world.guild) or sandbox.synced_commands():
        if definition["name"] != root:
            continue
        options = definition.get("options") or []
        for part in sub:
            options = next(o for o in options if o["name"] == part).get("options") or []
        return int(next(o for o in options if o["name"] == option)["max_length"])
    raise LookupError(command)


async def test_hostile_text_in_every_free_text_option_is_answered_and_stores_nothing(
    sandbox: DiscordSandbox, world: World, castbot: Castbot, tmp_path: Any
) -> None:
    png = make_png_as_mp4(tmp_path / "pic.png").read_bytes()
    loop = asyncio.get_running_loop()
    limits = {(c, o): max_length(sandbox, world, c, o) for c, o, _ in TARGETS}
    seen: list[str] = []

    async def one(target: int, text: str) -> None:
        command, option, others = TARGETS[target]
        if option == "prompt":
            text = "@nobody_here " + text  # an unknown name: refused, so nothing is ever held
        values = {k: sandbox.add_attachment(png, "x.mp4", "video/mp4") if v == "png" else v for k, v in others.items()}
        values[option] = text[: limits[command, option]]
        handle = await sandbox.invoke(world.guild, world.channel, world.member, command, options=values)
        reply = await handle.wait_final_message(timeout=20)
        assert handle.is_ephemeral and (reply.content or reply.embeds)
        refused = [c for c in sandbox.calls if c.status >= 400 and not c.injected]
        assert refused == [], refused
        for table in ("characters", "character_imports", "jobs"):
            row = await castbot.db.fetchone(f"SELECT COUNT(*) FROM {table}")
            assert row is not None and row[0] == 0, (table, command, option, text)
        held = await castbot.db.fetchone("SELECT COALESCE(SUM(held_micros), 0) FROM budget_counters")
        assert held is not None and held[0] == 0
        seen.append(f"{command}.{option}")

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target=st.integers(0, len(TARGETS) - 1), text=HOSTILE)
    def prop(target: int, text: str) -> None:
        asyncio.run_coroutine_threadsafe(one(target, text), loop).result(timeout=60)

    await asyncio.to_thread(prop)
    assert len(set(seen)) >= len(TARGETS) // 2
