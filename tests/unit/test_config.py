"""Settings: names as the README documents them, defaults, provider selection, secrets kept secret."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from bot.__main__ import load_settings
from bot.config import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DISCORD_TOKEN", "PROVIDERS", "OPENAI_API_KEY", "RELAY_API_KEY", "RELAY_BASE_URL",
                 "KLING_API_KEY", "DATA_DIR", "GLOBAL_MONTHLY_BUDGET_USD", "GEMINI_API_KEY", "FAL_KEY",
                 "PRICE_OVERRIDES"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_match_the_design() -> None:
    s = Settings()
    assert s.discord_api_base == "https://discord.com/api/v10"
    assert s.data_dir == Path("./data")
    assert s.database_path == Path("data/castbot.sqlite3")
    assert (s.poll_min_seconds, s.poll_max_seconds, s.local_render_seconds, s.max_clip_mb) == (2, 30, 3, 50)
    assert s.openai_base_url == "https://api.openai.com/v1"
    assert s.kling_base_url == "https://api-singapore.klingai.com"
    assert s.global_monthly_budget_usd is None
    assert s.enabled_providers() == ("local",)


def test_keyed_providers_are_enabled_in_design_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_API_KEY", "kling-key-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-123")
    assert Settings().enabled_providers() == ("openai", "kling")


def test_explicit_provider_order_wins_and_is_deduplicated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDERS", " Kling, local,kling ")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-123")
    assert Settings().enabled_providers() == ("kling", "local")


def test_unknown_provider_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDERS", "local,sora3")
    with pytest.raises(ValidationError, match="sora3"):
        Settings()


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=from-dotenv-token\nCOMMAND_GUILD_ID=123\n")
    s = Settings()
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "from-dotenv-token"
    assert s.command_guild_id == 123


def test_the_example_env_file_as_shipped_starts_the_bot_with_only_a_token(tmp_path: Path) -> None:
    """The quick start copies .env.example and sets DISCORD_TOKEN: every variable left empty there
    must mean "unset", not a value to parse."""
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    (tmp_path / ".env").write_text(example.replace("DISCORD_TOKEN=", "DISCORD_TOKEN=from-example", 1))
    s = Settings()
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "from-example"
    assert (s.command_guild_id, s.global_monthly_budget_usd, s.gemini_pro_model, s.fal_pro_model) == (None,) * 4
    assert s.price_overrides == {} and s.enabled_providers() == ("local",)


def test_keyed_engines_and_price_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-gemini-123")
    monkeypatch.setenv("FAL_KEY", "fal-key-123:secret")
    monkeypatch.setenv("GEMINI_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("PRICE_OVERRIDES", '{"fal:wan/v2.6/reference-to-video:720p": 120000}')
    s = Settings()
    assert s.enabled_providers() == ("gemini", "fal")
    assert s.gemini_base_url == "http://127.0.0.1:9"
    assert (s.gemini_model, s.fal_model) == ("gemini-omni-1.1-flash", "wan/v2.6/reference-to-video")
    assert s.price_overrides == {"fal:wan/v2.6/reference-to-video:720p": 120000}


def test_secrets_never_appear_in_repr_or_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "tok-SECRET-abcdef")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SECRET-abcdef")
    s = Settings()
    assert "SECRET" not in repr(s) and "SECRET" not in str(s.model_dump())
    monkeypatch.setenv("MAX_CLIP_MB", "sk-SECRET-as-a-number")
    problem = load_settings()
    assert isinstance(problem, str)
    assert "MAX_CLIP_MB" in problem and "SECRET" not in problem


@pytest.mark.parametrize("name", [n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)])
def test_every_secret_is_trimmed_and_refused_by_name_when_broken_inside(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name.upper(), "\t key-SECRET-0123456789 \n")
    value = getattr(Settings(), name)
    assert value.get_secret_value() == "key-SECRET-0123456789"
    assert "key-SECRET-0123456789" in Settings().secret_values()
    for inside in (" ", "\t", "\n", "\x07", "é"):
        monkeypatch.setenv(name.upper(), f"key-SECRET{inside}0123456789")
        problem = load_settings()
        assert isinstance(problem, str)
        assert name.upper() in problem and "SECRET" not in problem and "\n" not in problem


def test_redaction_covers_escaped_url_encoded_and_partial_forms() -> None:
    from bot.log import Redactor

    key = "sk-live/ABCDEF+GHIJKLMNOP=1234567890"
    redactor = Redactor([key])
    for line in (
        f"Illegal header value b'Bearer {key}\\n'",
        f"GET /v1?key={quote(key, safe='')}",
        f"json {json.dumps(key)}",
        f"cut {key[5:20]} off",
    ):
        redacted = redactor.redact(line)
        assert all(key[i : i + 12] not in redacted for i in range(len(key) - 11)), redacted
    assert redactor.redact("nothing secret here") == "nothing secret here"
