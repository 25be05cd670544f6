"""Every catalog is complete and consistent with English.

Fails when a message id lacks a translation, when a translation's placeholders differ from
English, when a plural field misses a category its language needs, when a message cannot be
rendered, when a command mentioned in a message is not the name members of that language see,
or when a key term is translated inconsistently.
"""

from __future__ import annotations

import json
import logging
import re
import string
from pathlib import Path

import pytest

from bot.domain import locales
from bot.domain.locales import plural_categories as categories
from bot.i18n import LOCALES_DIR, available_locales, catalog, catalog_name, parse_forms, t
from bot.ui.translator import OPTION_PREFIX, is_command_name

# Every translated catalog: derived from the one list of supported languages.
LOCALES = tuple(catalog_name(code) for code in locales.LOCALES if code != locales.DEFAULT)
EN = catalog("en")

# Texts that are legitimately the same as English (brand, layout-only, words the language borrows).
SAME_AS_ENGLISH = {
    "about.title",
    "about.provider_line",
    "route.reason_line",
    "characters.unusable.line",
    "jobs.line",
    "characters.job_choice",
    "choice.pro",
    "choice.portrait",
    "choice.standard",
    "settings.field.budget",
    "characters.field.uses",
    "characters.field.clip",
    "status.prompt",
    "status.state",
    "gallery.footer",
    "gallery.footer.many",
    "gallery.field.tags",
    "gallery.edited.field.tags",
    "gallery.edited.field.video",
    "gallery.edited.field.description",
}

# Modal titles and labels are cut at 45 characters by Discord; button labels at 80.
MODAL_TEXTS = (
    "characters.make.title",
    "characters.make.name",
    "characters.make.description",
    "gallery.import.alias",
)
BUTTON_TEXTS = (
    "button.cancel",
    "button.reroll",
    "button.make_character",
    "characters.page.prev",
    "characters.page.next",
    "gallery.button.prev",
    "gallery.button.next",
    "gallery.button.import",
    "gallery.button.info",
    "gallery.button.report",
)


def fields(text: str) -> dict[str, list[str]]:
    """Placeholder name → the format specs it is used with."""
    found: dict[str, list[str]] = {}
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is not None:
            assert conversion is None, f"no !r/!s conversions in catalogs: {text!r}"
            found.setdefault(name, []).append(spec or "")
    return found


def plural_specs(text: str) -> list[str]:
    return [spec for specs in fields(text).values() for spec in specs if spec not in ("", "number")]


def test_the_supported_languages_are_all_there() -> None:
    # a catalog folder without its entry in bot/domain/locales.py's list (or the reverse) is a mistake
    folders = {p.name for p in LOCALES_DIR.iterdir() if p.is_dir()}
    assert folders == set(available_locales()) == {"en", *LOCALES}


@pytest.mark.parametrize("locale", LOCALES)
def test_each_locale_mirrors_the_english_files(locale: str) -> None:
    english = sorted(p.name for p in (LOCALES_DIR / "en").glob("*.json"))
    assert sorted(p.name for p in (LOCALES_DIR / locale).glob("*.json")) == english
    for name in english:
        en_keys = json.loads((LOCALES_DIR / "en" / name).read_text(encoding="utf-8"))
        keys = json.loads((LOCALES_DIR / locale / name).read_text(encoding="utf-8"))
        assert sorted(keys) == sorted(en_keys), f"{locale}/{name}"


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_is_translated_with_the_english_placeholders(locale: str) -> None:
    messages = catalog(locale)
    missing = sorted(set(EN) - set(messages))
    assert missing == [], f"{locale} lacks {missing}"
    assert sorted(set(messages) - set(EN)) == []
    for key, english in EN.items():
        text = messages[key]
        assert text.strip(), f"{locale}:{key} is empty"
        assert set(fields(text)) == set(fields(english)), f"{locale}:{key}"


@pytest.mark.parametrize("locale", ["en", *LOCALES])
def test_plural_fields_list_every_category_of_their_language(locale: str) -> None:
    needed = categories(locale)
    for key, text in catalog(locale).items():
        for spec in plural_specs(text):
            forms = parse_forms(spec)
            assert forms is not None, f"{locale}:{key}: `{spec}` is neither a plural field nor `number`"
            assert set(forms) == needed, f"{locale}:{key}: has {sorted(forms)}, {locale} needs {sorted(needed)}"
            assert all("#" in form for form in forms.values()), f"{locale}:{key}: every form shows the number"


@pytest.mark.parametrize("locale", LOCALES)
def test_english_counts_shown_with_a_noun_are_pluralized_everywhere(locale: str) -> None:
    for key, english in EN.items():
        counted = {name for name, specs in fields(english).items() if any(parse_forms(s) for s in specs)}
        if locale == "zh-CN":
            continue  # one form only; a measure word goes with every number
        translated = catalog(locale)[key]
        plural_here = {name for name, specs in fields(translated).items() if any(parse_forms(s) for s in specs)}
        assert counted <= plural_here, f"{locale}:{key} shows {counted - plural_here} without plural forms"


def _sample(spec_list: list[str], number: int) -> object:
    return number if any(s for s in spec_list) else "X"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("number", [0, 1, 2, 5, 21, 1_000_000])
def test_every_message_renders(locale: str, number: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="bot.i18n")
    for key in EN:
        params = {name: _sample(specs, number) for name, specs in fields(EN[key]).items()}
        for name, specs in fields(catalog(locale)[key]).items():
            params[name] = _sample(specs, number) if params.get(name) == "X" else params[name]
        text = t(key, locale, **params)
        assert "{" not in text.replace("{{", "") or key.startswith("cmd."), f"{locale}:{key}: {text}"
    assert caplog.records == []


@pytest.mark.parametrize("locale", LOCALES)
def test_messages_are_really_translated(locale: str) -> None:
    messages = catalog(locale)
    untouched = sorted(key for key, english in EN.items() if messages[key] == english and not key.startswith("cmd."))
    assert set(untouched) <= SAME_AS_ENGLISH, f"{locale} still has English: {set(untouched) - SAME_AS_ENGLISH}"


@pytest.mark.parametrize("locale", LOCALES)
def test_ui_texts_fit_discord(locale: str) -> None:
    messages = catalog(locale)
    for key in MODAL_TEXTS:
        assert len(messages[key]) <= 45, f"{locale}:{key}"
    for key in BUTTON_TEXTS:
        assert 1 <= len(messages[key]) <= 80, f"{locale}:{key}"


# --- commands named inside messages -----------------------------------------------------------


def _command_names(locale: str) -> tuple[dict[str, str], dict[str, set[str]], set[str]]:
    """Top-level command names → their English name, subcommand names per top-level English
    name, and every option name, as members of `locale` see them."""
    messages = catalog(locale)
    top: dict[str, str] = {}
    subs: dict[str, set[str]] = {}
    for key in EN:
        parts = key.split(".")
        if parts[0] != "cmd" or parts[-1] != "name" or key == "cmd.character.make.name":
            continue
        if len(parts) == 3:
            top[messages[key]] = parts[1]
        elif len(parts) == 4 and parts[2] != "opt":
            subs.setdefault(parts[1], set()).add(messages[key])
    options = {messages[k] for k in EN if k.startswith(OPTION_PREFIX)}
    options |= {messages[k] for k in EN if re.fullmatch(r"cmd\.character\.opt\.[a-z]+", k)}
    return top, subs, options


MENTION = re.compile(r"(?<![\w}/])/(\S+)((?: [^\s`/.,;:]+(?::\S*)?)*)")


@pytest.mark.parametrize("locale", ["en", *LOCALES])
def test_commands_in_messages_are_the_names_the_reader_sees(locale: str) -> None:
    top, subs, options = _command_names(locale)
    checked = 0
    for key, text in catalog(locale).items():
        if key.startswith("cmd.") and not key.endswith((".description", ".about")):
            continue
        for span in re.findall(r"`(/[^`]+)`", text) + re.findall(r"(?<![`\w}])(/\w+(?: \w+)?)", text):
            words = span[1:].split(" ")
            command = words[0].rstrip(".,;")
            if command.startswith(("{", "…")) or not command:
                continue
            assert command in top, f"{locale}:{key}: `/{command}` is not a command name in {locale}"
            checked += 1
            english = top[command]
            rest = [w for w in words[1:] if w]
            if english in subs and rest and ":" not in rest[0]:
                sub = rest.pop(0).rstrip(".,;")
                assert sub in subs[english], f"{locale}:{key}: `{sub}` is not a subcommand of /{command}"
            for word in rest:
                if ":" in word:
                    option = word.split(":", 1)[0]
                    assert option in options, f"{locale}:{key}: `{option}:` is not an option name in {locale}"
    assert checked > 20


def test_option_names_in_english_are_the_parameter_names() -> None:
    # the English catalog must not rename anything Discord already knows by its code name
    for key, text in EN.items():
        if key.startswith(OPTION_PREFIX):
            assert text == key.removeprefix(OPTION_PREFIX)


@pytest.mark.parametrize("locale", ["en", *LOCALES])
def test_command_and_option_names_obey_discord(locale: str) -> None:
    messages = catalog(locale)
    names = [k for k in EN if k.startswith(OPTION_PREFIX) or re.fullmatch(r"cmd\.character\.opt\.[a-z]+", k)]
    names += [k for k in EN if k.startswith("cmd.") and k.endswith(".name") and k != "cmd.character.make.name"]
    for key in names:
        assert is_command_name(messages[key]), f"{locale}:{key}: {messages[key]!r}"
    assert 1 <= len(messages["cmd.character.make.name"]) <= 32
    for key in EN:
        if key.startswith("cmd.") and key not in names and key != "cmd.character.make.name":
            assert 1 <= len(messages[key]) <= 100, f"{locale}:{key} is {len(messages[key])} long"


# --- terminology -------------------------------------------------------------------------------

# The words for the bot's key ideas, one per language, used wherever English uses them.
GLOSSARY: dict[str, dict[str, str]] = {
    "character": {
        "ru": "персонаж",
        "de": "charakter",
        "fr": "personnage",
        "pt-BR": "personage",
        "es-ES": "personaje",
        "zh-CN": "角色",
    },
    "budget": {
        "ru": "бюджет",
        "de": "budget",
        "fr": "budget",
        "pt-BR": "orçamento",
        "es-ES": "presupuesto",
        "zh-CN": "预算",
    },
    "job": {"ru": "задани", "de": "auftr", "fr": "tâche", "pt-BR": "tarefa", "es-ES": "tarea", "zh-CN": "任务"},
    "share code": {
        "ru": "для импорта",  # "код" declines
        "de": "freigabecode",
        "fr": "code de partage",
        "pt-BR": "código de compartilhamento",
        "es-ES": "código para compartir",
        "zh-CN": "分享码",
    },
}
# English uses the word in another sense here ("characters long" are letters, a budget "job").
NOT_THE_TERM = {
    "character": {"generate.prompt_too_long", "cmd.character.opt.name.new"},
    "budget": set(),
    "job": set(),
    "share code": set(),
}


@pytest.mark.parametrize("term", sorted(GLOSSARY))
@pytest.mark.parametrize("locale", LOCALES)
def test_key_terms_are_translated_consistently(locale: str, term: str) -> None:
    word = GLOSSARY[term][locale]
    english_word = re.compile(rf"\b{term}s?\b", re.IGNORECASE)
    messages = catalog(locale)
    for key, english in EN.items():
        if key in NOT_THE_TERM[term] or key.endswith(".name") or key.startswith(OPTION_PREFIX):
            continue
        if english_word.search(re.sub(r"\{[^}]*\}", "", english)):
            assert word in messages[key].lower(), f"{locale}:{key} should say {word!r} for {term!r}"


def test_translations_are_stored_as_utf8_json_objects() -> None:
    for path in Path(LOCALES_DIR).glob("*/*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(data, dict) and all(isinstance(v, str) for v in data.values()), path
