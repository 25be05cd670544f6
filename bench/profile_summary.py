"""Summarise a py-spy profile of the bot taken during a benchmark.

    BENCH_PROFILE=/tmp/ack.txt .venv/bin/python -m bench.ack_burst
    .venv/bin/python -m bench.profile_summary /tmp/ack.txt [--top 25] [--grep bot/]

The profile is py-spy's "raw" format (collapsed stacks: `frame;frame;... count`). Prints the
functions with the most samples on the CPU, by self time and by inclusive time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarise(path: Path, top: int = 25, grep: str | None = None) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        out.append(f"\n-- top {top} by {title} time --")
        shown = 0
        for frame, count in counter.most_common():
            if grep and grep not in frame:
                continue
            out.append(f"{100 * count / max(total, 1):5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--grep", default=None, help="only frames whose text contains this")
    args = parser.parse_args()
    print(summarise(args.profile, args.top, args.grep))


if __name__ == "__main__":
    main()
