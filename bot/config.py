"""Settings: read once in main() from the environment or `.env`, then injected everywhere."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KNOWN_PROVIDERS = ("openai", "relay", "kling", "gemini", "fal", "local")


def default_encode_workers() -> int:
    """One concurrent re-encode per two cores, at least one."""
    return max(1, (os.cpu_count() or 1) // 2)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
        # `.env.example` leaves unused variables empty (`COMMAND_GUILD_ID=`): empty means unset
        env_ignore_empty=True,
    )

    discord_token: SecretStr | None = None
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None
    command_guild_id: int | None = None
    data_dir: Path = Path("./data")
    # How many videos may be re-encoded at once to fit a channel's upload limit (bot/services/encoding.py)
    encode_workers: int = Field(default_factory=default_encode_workers, ge=1)

    # Empty means: every provider whose key is set, else local.
    providers: Annotated[tuple[str, ...], NoDecode] = ()

    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    relay_api_key: SecretStr | None = None
    relay_base_url: str | None = None
    kling_api_key: SecretStr | None = None
    kling_base_url: str = "https://api-singapore.klingai.com"
    # Google Gemini Omni through the Interactions API. The base is the root, without the API
    # version: /v1beta/... and /upload/v1beta/... go under it.
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_model: str = "gemini-omni-1.1-flash"
    gemini_pro_model: str | None = None  # quality:pro; unset = the same model at 1080p
    # Its per-request webhooks carry an RS256 JWT: the keys' address (unset: GEMINI_BASE_URL's
    # /.well-known/jwks.json) and, if set, the issuer the JWT must name (not yet confirmed live).
    gemini_webhook_jwks_url: str | None = None
    gemini_webhook_issuer: str | None = None
    # fal.ai's queue: one adapter, the model chosen from the adapter's table (bot/providers/fal_models.py).
    fal_key: SecretStr | None = None
    fal_queue_url: str = "https://queue.fal.run"
    fal_rest_url: str = "https://rest.fal.ai"
    fal_cdn_url: str = "https://v3.fal.media"
    fal_model: str = "wan/v2.6/reference-to-video"
    fal_pro_model: str | None = None  # quality:pro; unset = FAL_MODEL at its higher resolution
    # "<provider>:<model>:<unit>" -> micro-USD, over the built-in prices (JSON in the environment)
    price_overrides: dict[str, int] = Field(default_factory=dict)

    global_monthly_budget_usd: Decimal | None = None
    poll_min_seconds: float = Field(default=2.0, gt=0)
    poll_max_seconds: float = Field(default=30.0, gt=0)
    local_render_seconds: float = Field(default=3.0, ge=0)
    # After an ambiguous submit, how long a provider that can list its jobs may take to show ours
    # before we conclude it never arrived and release the hold.
    reconcile_grace_seconds: float = Field(default=120.0, ge=0)
    max_clip_mb: int = Field(default=50, gt=0)
    # The storage janitor (bot/services/storage.py): finished videos and deleted characters' files
    # go after this many days, and finished videos oldest first while DATA_DIR is over DATA_MAX_GB.
    video_retention_days: float = Field(default=14.0, gt=0)
    data_max_gb: Decimal = Field(default=Decimal(10), gt=0)  # decimal GB; 0.05 is 50 MB
    log_level: str = "INFO"

    # The operator's HTTP endpoint (bot/web/): /healthz, /metrics and the providers' webhooks.
    # Off unless HTTP_PORT is set (0 picks a free port: the tests). PUBLIC_URL is the address
    # providers can reach it at (behind a reverse proxy); without it no webhook is requested.
    http_host: str = "0.0.0.0"  # noqa: S104 - in a container the port is published, not the host
    http_port: int | None = Field(default=None, ge=0, le=65535)
    public_url: str | None = None

    # Trust around shared characters: who may take a character down everywhere (Discord user ids,
    # comma-separated), and how many distinct reporters hide a public card pending review.
    operator_user_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    report_threshold: int = Field(default=3, ge=1, le=1000)
    operator_report_channel_id: int | None = None  # reports also posted here (beside the operators' DMs)

    # Past one process: PostgreSQL as the shared store (unset: the SQLite file in DATA_DIR), and
    # which Discord shards this process runs (unset: discord.py asks Discord for the count and
    # runs them all). SHARD_IDS is a list and ranges, e.g. "0-3" or "0,2,5-7".
    database_url: SecretStr | None = None
    # How long a job stays one process's without renewal; also how long a dead process's jobs wait
    # before another takes them over. Unset: max(60 s, 4 x POLL_MAX_SECONDS), several passes.
    job_lease_seconds: float | None = Field(default=None, ge=5)
    shard_count: int | None = Field(default=None, ge=1, le=100_000)
    shard_ids: Annotated[tuple[int, ...], NoDecode] = ()

    @field_validator("*", mode="after")
    @classmethod
    def _clean_secret(cls, value: object, info: ValidationInfo) -> object:
        """Every secret (token, keys) is trimmed, and refused with its variable's name, never its
        value, when anything inside it is not a printable character: a key read from a file often
        ends in a newline, which HTTP libraries refuse to send and then log escaped."""
        if not isinstance(value, SecretStr):
            return value
        secret = value.get_secret_value().strip()
        if not secret:
            return None
        if any(not ("!" <= ch <= "~") for ch in secret):
            raise ValueError(
                f"{(info.field_name or 'the secret').upper()} has a space, tab, line break or other character "
                "a key never has inside it; check the value you set"
            )
        return SecretStr(secret)

    def secret_values(self) -> list[str]:
        """The value of every secret setting that is set (for log redaction)."""
        return [v.get_secret_value() for v in (getattr(self, name) for name in type(self).model_fields)
                if isinstance(v, SecretStr)]  # fmt: skip

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(p.strip().lower() for p in value.split(",") if p.strip())
        return value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p not in KNOWN_PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(KNOWN_PROVIDERS)}")
        return tuple(dict.fromkeys(value))

    @field_validator("discord_api_base", "gemini_base_url", "fal_queue_url", "fal_rest_url", "fal_cdn_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("operator_user_ids", mode="before")
    @classmethod
    def _split_operator_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            bad = [p for p in parts if not p.isdigit()]
            if bad:
                raise ValueError("OPERATOR_USER_IDS must be Discord user ids (digits) separated by commas")
            return frozenset(int(p) for p in parts)
        return value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _split_shard_ids(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        ids: list[int] = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            low, dash, high = part.partition("-")
            if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
                raise ValueError(f"SHARD_IDS: {part!r} is not a shard id or a range such as 0-3")
            first, last = int(low), int(high) if dash else int(low)
            if last < first or last - first > 100_000:
                raise ValueError(f"SHARD_IDS: the range {part!r} is empty or too long")
            ids.extend(range(first, last + 1))
        return tuple(sorted(set(ids)))

    @model_validator(mode="after")
    def _lease_outlasts_passes(self) -> Settings:
        # the loop renews leases each pass, and a pass comes at least every POLL_MAX_SECONDS
        if self.job_lease_seconds is not None and self.job_lease_seconds < 4 * self.poll_max_seconds:
            raise ValueError("JOB_LEASE_SECONDS must be at least 4 x POLL_MAX_SECONDS (a live process keeps its jobs)")
        return self

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT: every process must agree on how many shards there are")
        if self.shard_count is not None and any(i >= self.shard_count for i in self.shard_ids):
            raise ValueError(f"SHARD_IDS: every id must be below SHARD_COUNT ({self.shard_count})")
        return self

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/") or None

    def enabled_providers(self) -> tuple[str, ...]:
        """Providers in preference order: PROVIDERS if set, else every keyed one, else local."""
        if self.providers:
            return self.providers
        keyed = []
        if self.openai_api_key:
            keyed.append("openai")
        if self.relay_api_key and self.relay_base_url:
            keyed.append("relay")
        if self.kling_api_key:
            keyed.append("kling")
        if self.gemini_api_key:
            keyed.append("gemini")
        if self.fal_key:
            keyed.append("fal")
        return tuple(keyed) or ("local",)

    @property
    def gemini_jwks_url(self) -> str:
        return self.gemini_webhook_jwks_url or f"{self.gemini_base_url}/.well-known/jwks.json"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "castbot.sqlite3"

    @property
    def data_max_bytes(self) -> int:
        return int(self.data_max_gb * 1_000_000_000)

    @property
    def max_clip_bytes(self) -> int:
        return self.max_clip_mb * 1024 * 1024
