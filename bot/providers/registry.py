"""Build the configured provider adapters from Settings, sharing one HTTP client."""

from __future__ import annotations

import httpx

from bot.config import Settings
from bot.providers.base import VideoProvider
from bot.providers.fal import FalProvider
from bot.providers.gemini import GeminiProvider
from bot.providers.kling import KlingProvider
from bot.providers.local import LocalProvider
from bot.providers.openai import OpenAIProvider
from bot.providers.pricing import PriceBook
from bot.providers.relay import RelayProvider


class ProviderNotConfigured(ValueError):
    """PROVIDERS names a provider whose key (or base URL) is missing."""


def build_providers(
    settings: Settings, client: httpx.AsyncClient, prices: PriceBook | None = None
) -> dict[str, VideoProvider]:
    """The enabled providers in preference order (dicts keep insertion order)."""
    prices = prices or PriceBook.with_overrides(settings.price_overrides)
    built: dict[str, VideoProvider] = {}
    for name in settings.enabled_providers():
        if name == "local":
            built[name] = LocalProvider(
                work_dir=settings.data_dir / "local-renders", render_seconds=settings.local_render_seconds
            )
        elif name == "openai":
            if settings.openai_api_key is None:
                raise ProviderNotConfigured("PROVIDERS lists openai but OPENAI_API_KEY is not set")
            built[name] = OpenAIProvider(
                client, api_key=settings.openai_api_key, base_url=settings.openai_base_url, prices=prices
            )
        elif name == "relay":
            if settings.relay_api_key is None or not settings.relay_base_url:
                raise ProviderNotConfigured("PROVIDERS lists relay but RELAY_API_KEY or RELAY_BASE_URL is not set")
            built[name] = RelayProvider(
                client, api_key=settings.relay_api_key, base_url=settings.relay_base_url, prices=prices
            )
        elif name == "kling":
            if settings.kling_api_key is None:
                raise ProviderNotConfigured("PROVIDERS lists kling but KLING_API_KEY is not set")
            built[name] = KlingProvider(
                client, api_key=settings.kling_api_key, base_url=settings.kling_base_url, prices=prices
            )
        elif name == "gemini":
            if settings.gemini_api_key is None:
                raise ProviderNotConfigured("PROVIDERS lists gemini but GEMINI_API_KEY is not set")
            built[name] = GeminiProvider(
                client,
                api_key=settings.gemini_api_key,
                base_url=settings.gemini_base_url,
                prices=prices,
                model=settings.gemini_model,
                pro_model=settings.gemini_pro_model,
            )
        elif name == "fal":
            if settings.fal_key is None:
                raise ProviderNotConfigured("PROVIDERS lists fal but FAL_KEY is not set")
            try:
                built[name] = FalProvider(
                    client,
                    api_key=settings.fal_key,
                    queue_url=settings.fal_queue_url,
                    rest_url=settings.fal_rest_url,
                    cdn_url=settings.fal_cdn_url,
                    prices=prices,
                    model=settings.fal_model,
                    pro_model=settings.fal_pro_model,
                )
            except ValueError as exc:  # a model the adapter's table does not know
                raise ProviderNotConfigured(f"FAL_MODEL / FAL_PRO_MODEL: {exc}") from None
    return built
