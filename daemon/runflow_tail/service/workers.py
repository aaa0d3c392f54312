"""The daemon's workers (a poller per stream, a delivery per sink, the alert engine), each in
its own cancel scope: started by name, stopped by name, gracefully or at once.

A worker whose lease another member took (``LeaseLost`` from one of its writes) ends on
its own; the daemon goes on, and the lease manager hears of it. The lease manager's other
requests are here too: ``stop_now`` (a lease may expire any moment) and ``hand_over``
(a lease above this member's fair share goes to another).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from runflow_tail.alerts.engine import AlertEngine
from runflow_tail.delivery.loop import Delivery
from runflow_tail.ingest.poller import Poller
from runflow_tail.observability import get_logger
from runflow_tail.ownership import Ownership, lease_kind, lease_target
from runflow_tail.service.state import lease_lost_in

log = get_logger(__name__)
W = TypeVar("W", Poller, Delivery, AlertEngine)


@dataclass
class _Running(Generic[W]):
    worker: W
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class Workers:
    grace_period: float

    def __init__(self) -> None:
        self._pollers: dict[str, _Running[Poller]] = {}
        self._deliveries: dict[str, _Running[Delivery]] = {}
        self._engines: dict[str, _Running[AlertEngine]] = {}
        """The alert engine (one, while there are [[alerts]] rules)."""
        self._tg: TaskGroup | None = None
        self.lease_manager: Ownership | None = None
        """The lease manager when daemons share a PostgreSQL state; None: this one owns all."""

    @property
    def pollers(self) -> list[Poller]:
        return [running.worker for running in self._pollers.values()]

    @property
    def deliveries(self) -> list[Delivery]:
        return [running.worker for running in self._deliveries.values()]

    async def _stop_engine(self) -> None:
        running = self._engines.pop("alerts", None)
        if running is not None:
            running.scope.cancel()
            await running.done.wait()

    def _start(
        self,
        registry: dict[str, _Running[W]],
        name: str,
        running: _Running[W],
        work: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        assert self._tg is not None
        registry[name] = running

        async def supervised() -> None:
            try:
                with running.scope:
                    await work()
            except BaseException as exc:
                # Another member owns this work now: this worker ends, the daemon goes on.
                lost = lease_lost_in(exc)
                if lost is None:
                    raise
                log.warning("worker.lease_lost", worker=name, lease=lost.lease, error=str(lost))
                if self.lease_manager is not None:
                    self.lease_manager.lost(lost.lease)
            finally:
                running.done.set()

        self._tg.start_soon(supervised)

    async def _stop_poller(self, name: str) -> None:
        running = self._pollers.pop(name, None)
        if running is not None:
            running.scope.cancel()
            await running.done.wait()

    async def _stop_delivery(self, name: str, grace: float | None = None) -> None:
        running = self._deliveries.pop(name, None)
        if running is None:
            return
        running.worker.request_stop()
        with anyio.move_on_after(self.grace_period if grace is None else grace):
            await running.done.wait()
        running.scope.cancel()
        await running.done.wait()
        with anyio.CancelScope(shield=True):
            await running.worker.sink.aclose()

    def _forget_finished(self) -> None:
        """Workers that ended on their own (a lost lease): gone, so they can start again."""
        registries: tuple[dict[str, _Running[Any]], ...] = (
            self._pollers,
            self._deliveries,
            self._engines,
        )
        for registry in registries:
            for name, running in list(registry.items()):
                if running.done.is_set():
                    del registry[name]
                    if isinstance(running.worker, Delivery) and self._tg is not None:
                        self._tg.start_soon(running.worker.sink.aclose)

    # -- the lease manager's requests (Workforce) ----------------------------------------

    async def stop_now(self, leases: Collection[str]) -> None:
        """Stop these leases' workers at once (cancelled, not drained): their leases may
        expire any moment. An interrupted batch goes out again from the next owner, with
        the same boundaries (and idempotency keys) where the sink needs them."""
        stopping = [found for lease in leases if (found := self._take(lease)) is not None]
        for running in stopping:
            running.scope.cancel()
        for running in stopping:
            await running.done.wait()
            if isinstance(running.worker, Delivery):
                with anyio.CancelScope(shield=True):
                    await running.worker.sink.aclose()

    async def hand_over(self, leases: Collection[str], within: float) -> None:
        """Stop these leases' workers gracefully: a delivery finishes and commits the batch
        in hand (within ``within`` seconds), so the next owner repeats nothing."""
        for lease in leases:
            kind, name = lease_kind(lease), lease_target(lease)
            if kind == "sink":
                await self._stop_delivery(name, min(within, self.grace_period))
            elif kind == "stream":
                await self._stop_poller(name)
            else:
                await self._stop_engine()

    def _take(self, lease: str) -> _Running[Any] | None:
        kind, name = lease_kind(lease), lease_target(lease)
        registries: dict[str, dict[str, _Running[Any]]] = {
            "stream": self._pollers,
            "sink": self._deliveries,
            "alerts": self._engines,
        }
        return registries[kind].pop(name, None)

    async def _shut_down(self) -> None:
        for running in self._pollers.values():
            running.scope.cancel()
        for engine in self._engines.values():
            # Each engine step commits atomically: cancelling between steps loses nothing.
            engine.scope.cancel()
        for delivery in self._deliveries.values():
            delivery.worker.request_stop()
        with anyio.move_on_after(self.grace_period) as grace:
            for delivery in self._deliveries.values():
                await delivery.done.wait()
        if grace.cancelled_caught:
            log.warning("daemon.grace_period_expired", grace_period=self.grace_period)
