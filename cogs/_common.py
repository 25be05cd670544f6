"""What every cog does the same way: turn an interaction into plain values."""

from __future__ import annotations

from bot.ui.replies import actor_of

__all__ = ["actor_of"]  # the cogs' name for it; actions and modals import it from bot.ui.replies
