"""A loop that runs beside the API in each process (event fan-out, callbacks)."""

from __future__ import annotations

import asyncio


class BackgroundLoop:
    """Started with the app, stopped with it; subclasses write `_run`, which
    loops `while not self.stopping`."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # A Redis client may turn the cancellation into an error that the loop
        # survives: the flag ends it anyway, and the wait is bounded.
        self.stopping = True
        if self.task:
            self.task.cancel()
            await asyncio.wait([self.task], timeout=3)

    async def _run(self) -> None:
        raise NotImplementedError
