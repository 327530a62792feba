"""Registration of the GitHub webhook receiver (entry point ``anklet.receivers: github``).

A receiver plugin exposes `name`, `app(config)` (an in-process `ReceiverApp`, for the dev stack
and tests) and `serve(config)` (run until cancelled, what `anklet receiver` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugins.receivers.github.config import ReceiverConfig, load_config
from plugins.receivers.github.receiver import ReceiverApp, serve


@dataclass(frozen=True)
class GitHubReceiverPlugin:
    name: str = "github"

    def app(self, config: ReceiverConfig | None = None, **kwargs: Any) -> ReceiverApp:
        """An unstarted receiver (`async with` it); settings from the environment when omitted."""
        return ReceiverApp(config or load_config(), **kwargs)

    async def serve(self, config: ReceiverConfig | None = None) -> None:
        await serve(config)


PLUGIN = GitHubReceiverPlugin()
