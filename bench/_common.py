"""Shared plumbing for the benchmarks: the machine, percentiles, tables, the bot as a real process.

Every benchmark talks only to loopback servers (the Discord sandbox and the provider simulators
from tests/fakes), bounds its own run time, and prints a Markdown table that can be pasted into
bench/README.md. Nothing here asserts on time: benchmarks report, tests assert behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Run the bot from another source tree (e.g. `git archive HEAD | tar -x -C /tmp/before`) to
# measure a change before/after with the same benchmark: BENCH_BOT_SRC=/tmp/before
BOT_SRC = Path(os.environ.get("BENCH_BOT_SRC") or REPO).resolve()
TOKEN = "bench-sandbox-bot-token"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIB = 1024 * 1024
# The sandbox and the simulators run in the bench process; a bot stopped mid-request at the end of
# a run makes aiohttp log "Connection lost" tracebacks that are not findings.
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


# --- the machine -----------------------------------------------------------------------------------


def machine() -> str:
    """One line: cores, memory, CPU model, Python, date (what README rows are stamped with)."""
    mem_gib = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{os.cpu_count()} cores ({model}), {mem_gib} RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {today}"
    )


# --- numbers and tables ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sample."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(len(values), percentile(values, 50), percentile(values, 99), max(values), sum(values) / len(values))


def fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    body = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = [f"### {title}", ""]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]], notes: Iterable[str] = ()) -> None:
    print()
    print(table(title, headers, rows))
    for note in notes:
        print(f"- {note}")
    print(f"\nmachine: {machine()}")


# --- a process's CPU time and memory (Linux /proc; no extra dependency) ----------------------------


@dataclass(frozen=True)
class ProcStats:
    cpu_seconds: float  # user + system, this process only
    rss_mib: float
    peak_rss_mib: float  # VmHWM: the kernel's high-water mark of the resident set


def proc_stats(pid: int) -> ProcStats:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ProcStats(math.nan, math.nan, math.nan)
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return ProcStats(cpu, values.get("VmRSS", math.nan), values.get("VmHWM", math.nan))


def self_cpu() -> float:
    """CPU seconds of the calling process (the bench driver, its simulators and the sandbox)."""
    return time.process_time()


# --- the bot as a real process -----------------------------------------------------------------------


def bot_env(sandbox: Any, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for `python -m bot` against the sandbox: no key or token of the caller leaks in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_TOKEN", "_BASE_URL")) and k not in ("PROVIDERS", "COMMAND_GUILD_ID")
    }
    env.update(
        {
            "PYTHONPATH": str(BOT_SRC),
            "DATA_DIR": str(data_dir),
            "DISCORD_TOKEN": TOKEN,
            "DISCORD_API_BASE": sandbox.api_base,
            "DISCORD_GATEWAY_URL": sandbox.gateway_url,
            "LOG_LEVEL": "INFO",
        }
    )
    env.update(extra)
    return env


@dataclass
class BotProcess:
    """`python -m bot` exactly as an operator runs it, its output in a log file."""

    env: dict[str, str]
    workdir: Path
    proc: asyncio.subprocess.Process | None = None
    spawned_at: float = 0.0  # time.monotonic() just before the exec
    log_path: Path = field(init=False)
    profiler: asyncio.subprocess.Process | None = None

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "bot.log"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.spawned_at = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                cwd=self.workdir,  # no stray .env from a developer's checkout
                env=self.env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log.close()
        profile = os.environ.get("BENCH_PROFILE")
        if profile:
            # py-spy (pip install py-spy) samples the bot from outside: collapsed stacks, idle excluded
            self.profiler = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--format",
                "raw",
                "--rate",
                "250",
                "--gil",  # only samples holding the GIL: where the bot's Python time goes
                "--output",
                profile,
                "--pid",
                str(self.pid),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stats(self) -> ProcStats:
        return proc_stats(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self.profiler is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.profiler.wait(), 30)
        return self.proc.returncode

    async def wait_log(self, needle: str, timeout: float = 30.0) -> float:
        """Wait until the bot logged `needle` (e.g. on_ready's "connected as"); returns when seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_count(needle):
                return time.monotonic()
            if not self.alive():
                break
            await asyncio.sleep(0.005)
        raise TimeoutError(f"the bot did not log {needle!r}; its log ends with:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_count(self, needle: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(needle)
        except OSError:
            return 0


@contextlib.asynccontextmanager
async def running_bot(
    env: dict[str, str], workdir: Path, sandbox: Any, ready_timeout: float = 60
) -> AsyncIterator[BotProcess]:
    """Start the bot, wait until the sandbox saw it identify (READY sent), stop it afterwards."""
    bot = BotProcess(env, workdir)
    await bot.start()
    try:
        await wait_ready(bot, sandbox, ready_timeout)
        yield bot
    finally:
        await bot.stop()


async def wait_ready(bot: BotProcess, sandbox: Any, timeout: float) -> float:
    """Seconds from spawn until the sandbox sent READY (the bot can receive commands from then)."""
    ready = asyncio.create_task(sandbox.wait_ready(timeout=timeout))
    assert bot.proc is not None
    died = asyncio.create_task(bot.proc.wait())
    await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        raise RuntimeError(f"the bot exited before connecting; its log ends with:\n{bot.tail()}")
    died.cancel()
    ready.result()
    return time.monotonic() - bot.spawned_at


@contextlib.contextmanager
def workdir(prefix: str, keep: bool = False) -> Any:
    """A temporary folder for one run (kept with --keep, for looking at the bot's log)."""
    path = Path(tempfile.mkdtemp(prefix=f"castbot-bench-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept: {path}")
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


async def bounded(coro: Any, seconds: float, what: str) -> Any:
    """Every benchmark stops by itself: a stage that overruns fails loudly instead of hanging."""
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        raise TimeoutError(f"benchmark stage {what!r} took longer than {seconds:.0f} s") from None
