"""Which adapters a configuration builds, in which order."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bot.config import Settings
from bot.providers.base import Orientation, Quality
from bot.providers.registry import ProviderNotConfigured, build_providers
from bot.services.routing import typical_request


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


async def test_the_engines_are_built_from_their_settings(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        gemini_api_key="AIza-gemini-key-123",
        gemini_pro_model="gemini-omni-1.2-flash",
        fal_key="fal-key-123:secret-456",
        fal_model="fal-ai/kling-video/o1/reference-to-video",
        price_overrides={"fal:fal-ai/kling-video/o1/reference-to-video:default": 50_000},
    )
    async with httpx.AsyncClient() as client:
        built = build_providers(settings, client)
    assert list(built) == ["gemini", "fal"]
    assert (built["gemini"].model, built["fal"].model) == (
        "gemini-omni-1.1-flash",
        "fal-ai/kling-video/o1/reference-to-video",
    )
    assert "AIza-gemini-key-123" not in repr(built["gemini"]) and "secret-456" not in repr(built["fal"])
    # the operator's price wins over the model table's
    assert built["fal"].estimate(typical_request(5, Orientation.LANDSCAPE, Quality.STANDARD, 1)) == 5 * 50_000


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"providers": "gemini"}, "GEMINI_API_KEY"),
        ({"providers": "fal"}, "FAL_KEY"),
        ({"fal_key": "fal-key-123", "fal_model": "fal-ai/sora-9/reference-to-video"}, "FAL_MODEL"),
    ],
)
async def test_an_engine_that_cannot_be_built_is_a_clear_error(
    tmp_path: Path, settings: dict[str, str], named: str
) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderNotConfigured, match=named):
            build_providers(Settings(_env_file=None, data_dir=tmp_path, **settings), client)  # type: ignore[arg-type]
