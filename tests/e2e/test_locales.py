"""Issue 9 end to end: localized command metadata as synced, replies in the member's language,
channel posts in the server's language (or the one chosen in /settings)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

from bot.app import Castbot
from bot.domain import locales
from discord_sandbox import MANAGE_GUILD, DiscordSandbox, StoredMessage
from tests.conftest import BotHarness, World

LOCALES = ("ru", "de", "fr", "pt-BR", "es-ES", "zh-CN")
CHAT_INPUT, SUB_COMMAND, SUB_COMMAND_GROUP = 1, 1, 2
Json = dict[str, Any]


def discord_name(text: str) -> bool:
    """Discord's `^[-_\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]{1,32}$`, lowercase where the script has case."""
    return (
        1 <= len(text) <= 32
        and text == text.lower()
        and all(c in "-_" or unicodedata.category(c)[0] in "LN" for c in text)
    )


def walk(command: Json) -> Iterator[tuple[str, Json, list[Json]]]:
    """(path, option, siblings) for every subcommand and option under a chat-input command."""

    def below(path: str, options: list[Json]) -> Iterator[tuple[str, Json, list[Json]]]:
        for option in options:
            here = f"{path} {option['name']}"
            yield here, option, options
            if option["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP):
                yield from below(here, option.get("options") or [])

    yield from below(command["name"], command.get("options") or [])


def assert_localized(where: str, item: Json, field: str, *, name: bool) -> None:
    localized = item.get(field) or {}
    missing = [loc for loc in LOCALES if loc not in localized]
    assert not missing, f"{where}: {field} lacks {missing}"
    for locale, text in localized.items():
        if name:
            assert discord_name(text), f"{where}: {locale} name {text!r} breaks Discord's rule"
        else:
            assert 1 <= len(text) <= 100, f"{where}: {locale} text is {len(text)} characters"


async def test_synced_commands_carry_localizations_within_discord_limits(
    sandbox: DiscordSandbox, castbot: Castbot
) -> None:
    commands = sandbox.synced_commands()
    # the English defaults Discord receives are unchanged
    assert {c["name"] for c in commands} == {
        "about",
        "budget",
        "character",
        "generate",
        "jobs",
        "operator",
        "settings",
        "Make character",
    }
    options_seen = choices_seen = 0
    for command in commands:
        where = command["name"]
        if command["type"] != CHAT_INPUT:  # the "Make character" message menu: spaces and capitals allowed
            localized = command.get("name_localizations") or {}
            assert set(LOCALES) <= set(localized), where
            assert all(1 <= len(v) <= 32 for v in localized.values()), localized
            continue
        assert_localized(where, command, "name_localizations", name=True)
        assert_localized(where, command, "description_localizations", name=False)
        for path, option, siblings in walk(command):
            options_seen += 1
            assert_localized(path, option, "name_localizations", name=True)
            assert_localized(path, option, "description_localizations", name=False)
            for locale in LOCALES:  # Discord refuses two options that read the same in one language
                names = [s["name_localizations"][locale] for s in siblings]
                assert len(set(names)) == len(names), f"{path}: duplicate {locale} names {names}"
            for choice in option.get("choices") or []:
                if choice["name"] in {locales.display_name(code) for code in locales.LOCALES}:
                    # languages are offered under their own names, so anyone finds theirs
                    assert not choice.get("name_localizations")
                    continue
                choices_seen += 1
                localized = choice.get("name_localizations") or {}
                assert set(LOCALES) <= set(localized), f"{path} choice {choice['name']}"
                assert all(1 <= len(v) <= 100 for v in localized.values())
    assert options_seen > 30 and choices_seen >= 10
    for locale in LOCALES:
        tops = [c["name_localizations"][locale] for c in commands if c["type"] == CHAT_INPUT]
        assert len(set(tops)) == len(tops), f"duplicate {locale} command names {tops}"
    # regional variants read their language's catalog; English and unsupported languages keep the default
    character = next(c for c in commands if c["name"] == "character")
    names = character["name_localizations"]
    assert names["ru"] == "персонаж"
    assert names["es-419"] == names["es-ES"] == "personaje"
    assert names["zh-TW"] == names["zh-CN"]
    assert not {"en-US", "en-GB", "ja", "uk"} & set(names)


async def test_about_answers_a_russian_member_in_russian(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "about", locale="ru")
    reply = await handle.wait_final_message()
    embed = reply.embeds[0]
    assert embed["description"].startswith("Превратите короткий ролик в персонажа")
    providers = next(f for f in embed["fields"] if f["name"] == "Провайдеры")
    assert "**local**: работает · офлайн, бесплатно" in providers["value"]
    help_field = next(f for f in embed["fields"] if f["name"] == "Справка")
    assert "`/персонаж создать`" in help_field["value"]
    # the same command for an English member stays English
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "about", locale="en-GB")
    english = await handle.wait_final_message()
    assert any(f["name"] == "Providers" for f in english.embeds[0]["fields"])


async def test_budget_show_uses_russian_words_and_money(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    handle = await sandbox.invoke(world.guild, world.channel, world.admin, "budget set", monthly_usd="12.5")
    await handle.wait_final_message()
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "budget show", locale="ru")
    reply = await handle.wait_final_message()
    embed = reply.embeds[0]
    assert embed["title"].startswith("Бюджет за ")
    text = "\n".join([embed["description"], *(f"{f['name']}: {f['value']}" for f in embed["fields"])])
    assert "Лимит 12,50\u00a0$" in text and "**Осталось 12,50\u00a0$**" in text


async def test_errors_come_back_in_the_members_language(
    sandbox: DiscordSandbox, world: World, castbot: Castbot
) -> None:
    handle = await sandbox.invoke(world.guild, world.channel, world.member, "budget set", monthly_usd="20", locale="de")
    refused = await handle.wait_final_message()
    assert handle.is_ephemeral
    assert refused.content == (
        "Das können nur Moderatoren: Mitglieder mit „Server verwalten“ oder der Moderatorrolle des Servers."
    )
    handle = await sandbox.invoke(world.guild, world.channel, world.admin, "budget set", monthly_usd="abc", locale="fr")
    bad = await handle.wait_final_message()
    assert bad.content.startswith("`abc` n’est pas un montant.")
    handle = await sandbox.invoke(
        world.guild, world.channel, world.member, "generate", prompt="@Zed tanzt", locale="de"
    )
    unknown = await handle.wait_final_message(timeout=10)
    assert unknown.content.startswith("Einige Charaktere in deinem Prompt können nicht verwendet werden")
    assert "`@zed`" in unknown.content.lower()
    assert await castbot.db.fetchone("SELECT 1 FROM jobs") is None


def _posts(sandbox: DiscordSandbox, world: World) -> list[StoredMessage]:
    return [m for m in world.channel.visible_messages if m.author.id == sandbox.bot.id]


async def _result_of_first_job(sandbox: DiscordSandbox, world: World, member: Any, locale: str) -> StoredMessage:
    handle = await sandbox.invoke(world.guild, world.channel, member, "generate", prompt="a quiet lake", locale=locale)
    await handle.wait_final_message(timeout=10)
    return await sandbox.wait_for(
        lambda: next((m for m in _posts(sandbox, world) if m.message_reference is not None), None),
        30,
        "the delivery loop's post",
    )


async def test_channel_posts_use_the_servers_language(sandbox: DiscordSandbox, harness: BotHarness) -> None:
    guild = sandbox.add_guild("Château", preferred_locale="fr")
    world = World(
        guild=guild,
        channel=guild.add_text_channel("général"),
        admin=guild.add_member("ada", permissions=MANAGE_GUILD),
        member=guild.add_member("bob", locale="en-US"),
        other_guild=guild,
        other_channel=guild.add_text_channel("autre"),
        other_member=guild.add_member("cyd"),
    )
    await harness.start()
    # an English-speaking member asks; the post in the French server's channel is French
    result = await _result_of_first_job(sandbox, world, world.member, "en-US")
    assert "votre vidéo pour la tâche n°\u00a01 est prête" in result.content
    assert result.message_reference is not None
    status = sandbox.message(int(result.message_reference["message_id"]))
    assert status.embeds[0]["title"] == "Tâche n°\u00a01"
    labels = {c["label"] for row in result.components for c in row["components"]}
    assert labels == {"Relancer", "Créer un personnage"}


async def test_settings_language_overrides_the_servers(sandbox: DiscordSandbox, world: World, castbot: Castbot) -> None:
    handle = await sandbox.invoke(
        world.guild, world.channel, world.admin, "settings", options={"locale": "de"}, locale="pt-BR"
    )
    saved = await handle.wait_final_message()
    assert saved.content.startswith("Salvo: `locale`")  # the reply is in the admin's language
    result = await _result_of_first_job(sandbox, world, world.member, "ru")
    assert "dein Video für Auftrag #1 ist fertig" in result.content
