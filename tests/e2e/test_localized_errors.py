"""Refusals read in the member's language on every line, not only the header: the lines that list
unknown characters, and every provider's reason when none can make the video."""

from __future__ import annotations

import pytest

from discord_sandbox import DiscordSandbox
from tests.conftest import BotHarness, World

pytestmark = pytest.mark.e2e

UNKNOWN = "@Zed und @Quux tanzen im Regen"
TOO_LONG = 20  # seconds: longer than local (12) and the relay (15) make

EXPECTED = {
    "de": (
        [
            "Einige Charaktere in deinem Prompt können nicht verwendet werden, daher wurde nichts gestartet"
            " oder berechnet:",
            "• `@zed`: Auf diesem Server gibt es keinen Charakter mit diesem Namen.",
            "• `@quux`: Auf diesem Server gibt es keinen Charakter mit diesem Namen.",
        ],
        [
            "Gerade kann kein Anbieter dieses Video machen:",
            "• `local` macht Videos von höchstens 12 Sekunden; du hast 20 angefragt.",
            "• `relay` macht Videos von höchstens 15 Sekunden; du hast 20 angefragt.",
        ],
    ),
    "ru": (
        [
            "Некоторых персонажей из вашего промпта использовать нельзя, поэтому ничего не запущено и не списано:",
            "• `@zed`: на этом сервере нет персонажа с таким именем.",
            "• `@quux`: на этом сервере нет персонажа с таким именем.",
        ],
        [
            "Сейчас ни один провайдер не может сделать это видео:",
            "• `local` делает видео не длиннее 12 секунд, а вы запросили 20.",
            "• `relay` делает видео не длиннее 15 секунд, а вы запросили 20.",
        ],
    ),
}


async def refusal(sandbox: DiscordSandbox, world: World, locale: str, prompt: str, **options: object) -> list[str]:
    handle = await sandbox.invoke(
        world.guild, world.channel, world.member, "generate", locale=locale, options={"prompt": prompt, **options}
    )
    reply = await handle.wait_final_message(timeout=10)
    assert handle.is_ephemeral
    return reply.content.splitlines()


@pytest.fixture
async def two_providers(sandbox: DiscordSandbox, world: World, harness: BotHarness) -> None:
    """local and the relay (never reached: routing refuses before any request), and a budget so
    the paid relay is considered at all."""
    await harness.start(
        providers="local,relay", relay_api_key="relay-LOCALIZED-e2e", relay_base_url="http://127.0.0.1:9"
    )
    handle = await sandbox.invoke(world.guild, world.channel, world.admin, "budget set", monthly_usd="20")
    assert (await handle.wait_final_message()).content.startswith("Budget saved.")


@pytest.mark.parametrize("locale", sorted(EXPECTED))
@pytest.mark.usefixtures("two_providers")
async def test_every_line_of_a_refusal_is_in_the_members_language(
    sandbox: DiscordSandbox, world: World, locale: str
) -> None:
    unknown, no_provider = EXPECTED[locale]
    english = await refusal(sandbox, world, "en-US", UNKNOWN) + await refusal(
        sandbox, world, "en-US", "a lighthouse", seconds=TOO_LONG
    )
    assert len(english) == 6 and "there is no character by that name" in english[1]

    lines = await refusal(sandbox, world, locale, UNKNOWN)
    assert lines == unknown
    lines += await refusal(sandbox, world, locale, "ein Leuchtturm im Nebel", seconds=TOO_LONG)
    assert lines[3:] == no_provider
    # not one line reads as its English one, past the names in `code`
    assert not {prose(line) for line in english} & {prose(line) for line in lines}


def prose(line: str) -> str:
    return line.rsplit("`", 1)[-1].strip(" :.;")
