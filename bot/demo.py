"""`python -m bot demo`: an offline tour of Castbot.

Runs the real bot against the loopback Discord sandbox from the test suite, with the free
`local` provider: creates a character from a clip it renders itself, generates a video with
`@name`, shows the budget, and writes a readable transcript plus the MP4s to a folder.
The sandbox and the clip renderer are the `discord_sandbox` package, installed with Castbot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from bot.config import Settings
from discord_sandbox import MANAGE_GUILD, DiscordSandbox
from discord_sandbox.clips import make_clip

log = logging.getLogger(__name__)

TOKEN = "demo-bot-token"


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = ["# Castbot demo transcript", ""]

    def say(self, text: str) -> None:
        self.lines.append(text)
        print(text)

    def command(self, who: str, command: str, **options: object) -> None:
        shown = " ".join(f"{k}:{v}" for k, v in options.items())
        self.say(f"\n**{who}** › `/{command} {shown}`".rstrip())

    def reply(self, message: Any, label: str = "Castbot") -> None:
        parts = [message.content] if message.content else []
        for embed in message.embeds:
            parts.append(f"[embed] {embed.get('title', '')}")
            parts.extend(f"    {f['name']}: {f['value']}" for f in embed.get("fields", []))
        for attachment in message.attachments:
            parts.append(f"[attachment] {attachment.filename} ({len(attachment.data)} bytes)")
        body = "\n".join(parts) or "(no text)"
        self.say(f"> **{label}**: " + body.replace("\n", "\n> "))


async def run_demo(out_dir: Path) -> int:
    from bot.__main__ import open_bot

    out_dir.mkdir(parents=True, exist_ok=True)
    transcript = Transcript()
    async with DiscordSandbox(token=TOKEN) as sandbox:
        guild = sandbox.add_guild("Demo Server")
        channel = guild.add_text_channel("studio")
        admin = guild.add_member("ada (moderator)", permissions=MANAGE_GUILD)
        member = guild.add_member("bob")
        settings = Settings(
            _env_file=None,
            discord_token=TOKEN,
            discord_api_base=sandbox.api_base,
            discord_gateway_url=sandbox.gateway_url,
            data_dir=out_dir / "data",
            providers=("local",),
            local_render_seconds=1.0,
            poll_min_seconds=0.2,
            poll_max_seconds=1.0,
        )
        async with open_bot(settings, guild_ready_timeout=0.1) as bot:
            runner = asyncio.create_task(bot.start(TOKEN))
            try:
                await sandbox.wait_ready(timeout=30)
                await asyncio.wait_for(bot.wait_until_ready(), 30)
                transcript.say(f"Castbot connected to the sandbox server **{guild.name}**, channel #{channel.name}.")
                await _tour(sandbox, guild, channel, admin, member, transcript, out_dir, make_clip)
            finally:
                await bot.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
    (out_dir / "transcript.md").write_text("\n".join(transcript.lines) + "\n", encoding="utf-8")
    print(f"\nTranscript and videos written to {out_dir.resolve()}")
    return 0


async def _tour(
    sandbox: Any, guild: Any, channel: Any, admin: Any, member: Any, transcript: Transcript, out: Path, make_clip: Any
) -> None:
    transcript.command(member.name, "about")
    handle = await sandbox.invoke(guild, channel, member, "about")
    transcript.reply(await handle.wait_final_message(timeout=30))

    with tempfile.TemporaryDirectory() as scratch:
        clip = make_clip(Path(scratch) / "mira.mp4", seconds=3.0, size=(320, 240), fps=12, blur=())
        data = clip.read_bytes()
    (out / "mira-source-clip.mp4").write_bytes(data)
    video = sandbox.add_attachment(data, "mira.mp4", "video/mp4")
    transcript.command(member.name, "character create", name="Mira", video="mira.mp4 (a clip the demo rendered)")
    handle = await sandbox.invoke(guild, channel, member, "character create", name="Mira", video=video)
    transcript.reply(await handle.wait_final_message(timeout=60))

    transcript.command(admin.name, "budget set", monthly_usd="5")
    handle = await sandbox.invoke(guild, channel, admin, "budget set", monthly_usd="5")
    transcript.reply(await handle.wait_final_message(timeout=30))

    prompt = "@Mira waves hello from a sunny balcony"
    transcript.command(member.name, "generate", prompt=prompt, seconds=4)
    handle = await sandbox.invoke(guild, channel, member, "generate", prompt=prompt, seconds=4)
    transcript.reply(await handle.wait_final_message(timeout=30), "Castbot (only bob sees this)")

    def result() -> Any:
        return next(
            (m for m in channel.visible_messages if m.author.id == sandbox.bot.id and m.attachments),
            None,
        )

    posted = await sandbox.wait_for(result, 120, "the finished video")
    status = next((m for m in channel.visible_messages if m.embeds and m.author.id == sandbox.bot.id), None)
    if status is not None:
        transcript.reply(status, "Castbot (status message in #studio)")
    transcript.reply(posted, "Castbot (in #studio)")
    for attachment in posted.attachments:
        (out / attachment.filename).write_bytes(attachment.data)

    transcript.command(member.name, "budget show")
    handle = await sandbox.invoke(guild, channel, member, "budget show")
    transcript.reply(await handle.wait_final_message(timeout=30))
    summary = {"videos": [a.filename for a in posted.attachments]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")


def main(out_dir: Path) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_demo(out_dir))
