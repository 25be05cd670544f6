"""docker-compose.yml's `scale` profile has the shape README describes: PostgreSQL with a
healthcheck, and processes that split every shard once, share one DATA_DIR volume and one
database, with exactly one of them syncing the commands. (Docker itself is not run here.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_default_service_is_one_process_outside_the_scale_profile(compose: dict[str, Any]) -> None:
    single = compose["services"]["castbot"]
    assert "profiles" not in single
    assert not {"SHARD_COUNT", "SHARD_IDS", "DATABASE_URL"} & set(single["environment"])


def test_the_scale_profile_splits_every_shard_once_over_one_database_and_one_volume(compose: dict[str, Any]) -> None:
    scale = {name: s for name, s in compose["services"].items() if "scale" in s.get("profiles", [])}
    postgres = scale.pop("postgres")
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in str(postgres["healthcheck"]["test"])
    assert len(scale) == 2

    shards: list[int] = []
    syncing = []
    for name, service in scale.items():
        env = service["environment"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        volume, _, mounted = service["volumes"][0].partition(":")
        assert (volume, mounted) == ("castbot-shared", env["DATA_DIR"]), name
        settings = Settings(_env_file=None, shard_count=env["SHARD_COUNT"], shard_ids=env["SHARD_IDS"])
        assert settings.shard_count == 4
        shards += settings.shard_ids
        if 0 in settings.shard_ids:  # the process on shard 0 syncs the commands (bot/app.py)
            syncing.append(name)
        assert "healthz" in str(service["healthcheck"]["test"])
    assert sorted(shards) == [0, 1, 2, 3]
    assert syncing == ["castbot-shards-0-1"]
    assert "castbot-shared" in compose["volumes"]
    ports = [p for s in scale.values() for p in s["ports"]]
    assert len(set(ports)) == len(ports) and all(p.startswith("127.0.0.1:") for p in ports)
