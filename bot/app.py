"""The Bot subclass: dependency wiring, command tree with one error handler, command sync."""

from __future__ import annotations

import asyncio
import logging
import pkgutil
import secrets
from dataclasses import dataclass, field
from typing import Any

import discord
import httpx
import yarl
from discord import app_commands
from discord.ext import commands

from bot.actions import Actions
from bot.actions.characters import CharacterActions
from bot.actions.delivery import DeliveryActions
from bot.actions.gallery import GalleryActions
from bot.actions.generation import GenerationActions
from bot.actions.reports import ReportActions
from bot.actions.sharing import SharingActions
from bot.config import Settings
from bot.db import Database
from bot.domain.money import BadAmount
from bot.errors import UserFacingError
from bot.i18n import t
from bot.providers.base import VideoProvider
from bot.services.about import AboutService
from bot.services.budget import BudgetService
from bot.services.characters import CharacterService
from bot.services.characters.gallery import GalleryService
from bot.services.characters.text import shown
from bot.services.delivery import DeliveryService
from bot.services.dispatcher import Dispatcher
from bot.services.encoding import EncodingService
from bot.services.generation import GenerationService, Shards, lease_seconds
from bot.services.guilds import GuildService
from bot.services.health import HealthService
from bot.services.jobs_view import JobsViewService
from bot.services.liveness import LivenessService
from bot.services.metrics import Metrics
from bot.services.server_settings import SettingsService
from bot.services.storage import StorageService
from bot.services.tracking import Tracker
from bot.services.trust import TrustService
from bot.services.webhooks import WAKE_CHANNEL, WebhookService, fal_key_set, gemini_key_set
from bot.ui.replies import fit_content, locale_of, reply
from bot.ui.translator import CastbotTranslator

log = logging.getLogger(__name__)


def cog_modules() -> list[str]:
    """Every public module in cogs/: adding a capability never means editing the wiring."""
    import cogs

    return sorted(f"cogs.{m.name}" for m in pkgutil.iter_modules(cogs.__path__) if not m.name.startswith("_"))


@dataclass
class Services:
    """One instance of each service per bot, shared by every cog and the delivery loop."""

    guilds: GuildService
    health: HealthService
    storage: StorageService
    about: AboutService
    budget: BudgetService
    characters: CharacterService
    gallery: GalleryService
    generation: GenerationService
    tracker: Tracker
    delivery: DeliveryService
    dispatcher: Dispatcher
    settings: SettingsService
    jobs: JobsViewService
    encoding: EncodingService
    metrics: Metrics
    liveness: LivenessService
    webhooks: WebhookService
    trust: TrustService
    loop_wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def wake_loop(self) -> None:
        """A job was admitted or changed: let the delivery loop look now instead of at its next due time."""
        self.loop_wakeup.set()


def build_services(
    settings: Settings, db: Database, http_client: httpx.AsyncClient, providers: dict[str, VideoProvider]
) -> Services:
    wakeup = asyncio.Event()
    metrics = Metrics()
    db.write_observer = metrics.db_write
    guilds = GuildService(db)
    health = HealthService(db, guilds=guilds, configured=tuple(providers))
    storage = StorageService(
        db, settings.data_dir, retention_days=settings.video_retention_days, max_bytes=settings.data_max_bytes
    )
    budget = BudgetService(db, settings, guilds)
    characters = CharacterService(db, settings, providers, guilds, http_client, storage=storage)
    generation = GenerationService(
        db,
        providers,
        guilds,
        characters,
        budget,
        health,
        poll_min_seconds=settings.poll_min_seconds,
        public_url=settings.public_url,
        storage=storage,
        metrics=metrics,
        lease_seconds=settings.job_lease_seconds or lease_seconds(settings.poll_max_seconds),
        # several processes split the shards: each takes the new jobs of its own guilds
        shards=Shards(settings.shard_count, frozenset(settings.shard_ids))
        if settings.shard_count and settings.shard_ids
        else None,
    )
    tracker = Tracker(
        db,
        providers,
        characters,
        budget,
        health,
        settings.data_dir / "videos",
        poll_min=settings.poll_min_seconds,
        poll_max=settings.poll_max_seconds,
        reconcile_grace=settings.reconcile_grace_seconds,
        metrics=metrics,
        wake=wakeup.set,  # a settled job is posted at once
    )
    delivery = DeliveryService(db, guilds, tuple(providers))
    delivery.metrics = metrics
    encoding = EncodingService(settings.encode_workers)
    encoding.metrics = metrics
    liveness = LivenessService(db, tracker, health, tuple(providers), poll_max=settings.poll_max_seconds)
    metrics.on_refresh(liveness.refresh_metrics)
    return Services(
        guilds=guilds,
        health=health,
        storage=storage,
        about=AboutService(settings, db, providers, health, storage=storage),
        budget=budget,
        characters=characters,
        gallery=GalleryService(db, characters),
        generation=generation,
        tracker=tracker,
        delivery=delivery,
        dispatcher=Dispatcher(delivery, generation, wakeup.set, retry_after=settings.poll_min_seconds),
        settings=SettingsService(guilds, tuple(providers), health),
        jobs=JobsViewService(db, guilds),
        encoding=encoding,
        metrics=metrics,
        liveness=liveness,
        # callbacks only bring a job's next status check forward (bot/services/webhooks.py)
        webhooks=WebhookService(
            db,
            wakeup.set,
            fal_keys=fal_key_set(http_client, f"{settings.fal_rest_url}/.well-known/jwks.json"),
            gemini_keys=gemini_key_set(http_client, settings.gemini_jwks_url),
            public_url=settings.public_url,
            gemini_issuer=settings.gemini_webhook_issuer,
            min_gap=settings.poll_min_seconds,
            woken=tracker.urgent,
        ),
        trust=TrustService(
            db,
            guilds,
            operators=settings.operator_user_ids,
            threshold=settings.report_threshold,
            operator_channel_id=settings.operator_report_channel_id,
        ),
        loop_wakeup=wakeup,
    )


def build_actions(client: discord.Client, services: Services) -> Actions:
    """The Discord-aware use cases, once per bot: the cogs, buttons and modals share them."""
    delivery = DeliveryActions(
        client, services.delivery, services.generation, services.guilds, services.wake_loop, services.encoding
    )
    delivery.reportable = services.trust.reportable_job  # a Report button on videos of shared characters
    return Actions(
        generation=GenerationActions(client, services.generation, services.guilds, delivery, services.wake_loop),
        delivery=delivery,
        characters=CharacterActions(services.characters),
        gallery=GalleryActions(client, services.gallery),
        reports=ReportActions(client, services.trust, services.guilds),
        sharing=SharingActions(client, services.characters, services.trust),
    )


def configure_discord_endpoints(settings: Settings) -> None:
    """Point discord.py at a REST proxy / gateway other than Discord's (also the test sandbox)."""
    discord.http.Route.BASE = settings.discord_api_base
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def error_reference() -> str:
    return secrets.token_hex(2).upper()


class CastbotTree(app_commands.CommandTree["Castbot"]):
    async def on_error(self, interaction: discord.Interaction[Castbot], error: app_commands.AppCommandError) -> None:
        """Every error of a command, button, modal or menu ends in an answer: the specific refusal,
        or "Something went wrong (ref ...)" with the ref logged. An autocomplete gets no choices."""
        locale = locale_of(interaction)
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, UserFacingError | BadAmount):
            message = t(original.key, locale, **original.params)
        elif isinstance(original, app_commands.TransformerError):
            message = t("error.bad_option", locale, option=shown(str(original.value), 100))
        elif isinstance(original, app_commands.CheckFailure):
            message = t("error.check_failed", locale)
        else:
            ref = error_reference()
            log.error(
                "unexpected error ref=%s command=%s guild=%s user=%s",
                ref,
                _what(interaction),
                interaction.guild_id,
                interaction.user.id,
                exc_info=original,
            )
            message = t("error.unexpected", locale, ref=ref)
        try:
            if interaction.type is discord.InteractionType.autocomplete:
                if not interaction.response.is_done():
                    await interaction.response.autocomplete([])
                return
            await reply(interaction, content=fit_content(message), ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the member about an error (interaction %s)", interaction.id)


def _what(interaction: discord.Interaction[Any]) -> str:
    """What the member used: a command's name, or a component's / modal's custom id."""
    if interaction.command is not None:
        return interaction.command.qualified_name
    data: dict[str, Any] = dict(interaction.data or {})
    custom_id = data.get("custom_id")
    return f"{interaction.type.name}:{custom_id or '?'}"


# Discord lets one IDENTIFY through per 5 s in each bucket (shard_id % max_concurrency).
IDENTIFY_SPACING_SECONDS = 5.0


def shard_options(settings: Settings) -> dict[str, Any]:
    """SHARD_COUNT / SHARD_IDS as discord.py's options; none set: the count comes from Discord."""
    options: dict[str, Any] = {}
    if settings.shard_count is not None:
        options["shard_count"] = settings.shard_count
    if settings.shard_ids:
        options["shard_ids"] = list(settings.shard_ids)
    return options


class Castbot(commands.AutoShardedBot):
    """Sharded always: with SHARD_COUNT / SHARD_IDS several processes split the shards, and each
    answers the interactions its own shards receive."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        http_client: httpx.AsyncClient,
        services: Services,
        providers: dict[str, VideoProvider],
        **options: Any,
    ):
        intents = discord.Intents.none()
        intents.guilds = True  # GUILD_CREATE gives the boost tier, hence the upload limit
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=CastbotTree,
            help_command=None,
            # Members' prompts are echoed back: nothing pings unless a message opts in.
            allowed_mentions=discord.AllowedMentions.none(),
            **shard_options(settings),
            **options,
        )
        self.settings = settings
        self.db = db
        self.http_client = http_client
        self.services = services
        self.providers = providers
        self.actions = build_actions(self, services)
        self.http_url: str | None = None  # the HTTP endpoint's base, when HTTP_PORT is set (bot/web/)
        self.max_concurrency = 1
        self._identified_at: dict[int, float] = {}
        self._identify_locks: dict[int, asyncio.Lock] = {}

    @property
    def syncs_commands(self) -> bool:
        """One process syncs the commands: the one that runs shard 0 (or every shard)."""
        return not self.settings.shard_ids or 0 in self.settings.shard_ids

    @property
    def own_shard_ids(self) -> list[int]:
        """The shards this process runs (known once the shard count is)."""
        return list(self.shard_ids or range(self.shard_count or 1))

    async def setup_hook(self) -> None:
        # a callback taken by another process sharing the database wakes this one's loop too
        await self.db.listen(WAKE_CHANNEL, self.services.wake_loop)
        await self._read_gateway_limits()
        await self.tree.set_translator(CastbotTranslator())
        for extension in cog_modules():
            await self.load_extension(extension)
        if self.syncs_commands:
            await self.sync_commands()
        else:
            log.info("commands are synced by the process that runs shard 0; shards %s here", self.own_shard_ids)

    async def _read_gateway_limits(self) -> None:
        """Ask Discord (GET /gateway/bot) how many IDENTIFYs may run at once and, without
        SHARD_COUNT, how many shards to run. Setting the count here (discord.py would otherwise
        ask itself) keeps the gateway at DISCORD_GATEWAY_URL rather than the URL Discord returns."""
        shards, _url, limits = await self.http.get_bot_gateway()
        self.max_concurrency = max(int(limits.get("max_concurrency", 1)), 1)
        if self.shard_count is None:
            self.shard_count = int(shards)
        log.info(
            "running shards %s of %d (identify concurrency %d)",
            self.own_shard_ids,
            self.shard_count,
            self.max_concurrency,
        )

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait only as long as Discord's identify limit asks: one IDENTIFY per 5 s in each
        max_concurrency bucket. (discord.py's default waits 5 s before every IDENTIFY but the first,
        so 16 shards on a large bot would take 80 s to come up instead of 5.)"""
        bucket = (shard_id or 0) % self.max_concurrency
        lock = self._identify_locks.setdefault(bucket, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            last = self._identified_at.get(bucket)
            if last is not None:
                wait = last + IDENTIFY_SPACING_SECONDS - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._identified_at[bucket] = loop.time()

    async def sync_commands(self) -> list[app_commands.AppCommand]:
        if self.settings.command_guild_id:
            guild = discord.Object(id=self.settings.command_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
        return synced

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info(
            "connected as %s (%s) in %d guilds on shards %s of %s",
            self.user,
            self.user.id,
            len(self.guilds),
            self.own_shard_ids,
            self.shard_count,
        )

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("shard %d ready", shard_id)
