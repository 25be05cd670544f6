"""Which adapters a configuration builds, in which order."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.providers.registry import ProviderNotConfigured, build_providers


async def test_default_is_local_only(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        built = build_providers(Settings(_env_file=None, data_dir=tmp_path), client)
    assert list(built) == ["local"]
    assert built["local"].capabilities.paid is False


async def test_keys_enable_adapters_in_preference_order(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        providers="kling,openai,local",
        kling_api_key="kling-key-123",
        openai_api_key="sk-openai-123",
    )
    async with httpx.AsyncClient() as client:
        built = build_providers(settings, client)
    assert list(built) == ["kling", "openai", "local"]
    assert "kling-key-123" not in repr(built["kling"])


async def test_listed_provider_without_key_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, providers="relay", relay_api_key="rk-123456")
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderNotConfigured, match="RELAY_BASE_URL"):
            build_providers(settings, client)
