"""Crash points for the crash-recovery tests.

`CASTBOT_CRASH_AT=after_hold` (etc.) makes the process SIGKILL itself right after that commit,
so tests can prove every job ends delivered exactly once or released. Unset in production: one
dictionary lookup per point.
"""

from __future__ import annotations

import os
import signal

ENV = "CASTBOT_CRASH_AT"
POINTS = ("after_hold", "after_attempt", "after_accepted", "after_download", "after_post")


def crash_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
