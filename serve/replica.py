"""``ModelReplica``: the Ray Serve deployment that runs the model, thin over :class:`ModelServer`.

What the deployment adds to the server:

* dynamic batching (``@serve.batch``, sized by ``serve.max_batch_size`` and
  ``serve.batch_wait_timeout_s``) for :meth:`ModelReplica.predict` and
  :meth:`ModelReplica.generate`, plus unbatched twins so a benchmark can compare;
* a background thread that follows ``cl.events`` and, on ``version_published``, prefetches
  the version (and serves it, with ``serve.serve_new_versions``);
* reports of its current, loaded and refused versions to the application's status board, which
  ``GET /v1/models`` reads;
* metrics (:mod:`serve._private.metrics`): batch sizes, adapter loads and evictions, expert load.

Requests and answers are plain dicts (see :meth:`ModelServer.predict`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import torch
from ray import serve

from cl.config import Config
from cl.events import EventError, LifecycleEvent
from cl.lifecycle import Promoted, RolledBack, VersionPublished, read_message
from cl.serving.streaming import iterate_in_thread
from serve._private.metrics import ReplicaMetrics
from serve._private.status_board import HEARTBEAT_S, get_board
from serve.model_server import ModelServer

__all__ = ["ModelReplica"]

logger = logging.getLogger("ray.serve")

_RETRY_S = 5.0


@serve.deployment(name="ModelReplica")
class ModelReplica:
    """One copy of the base model with ``serve.adapter_cache_size`` adapter slots.

    Args:
        config: ``Config.to_dict()`` of the service.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        torch.set_num_threads(1)
        # No id range checks in the kernels (a host sync per layer and call): the server checks
        # a batch's adapter ids once, on the host, and the router's come from topk. A replica is
        # a process of its own, so this reaches no one else; an operator's own setting wins.
        os.environ.setdefault("CL_KERNELS_CHECK_IDS", "0")
        from cl.registry import AdapterRegistry

        self.config = Config.from_dict(config)
        cfg = self.config
        self.predict.set_max_batch_size(cfg.serve.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.serve.batch_wait_timeout_s)
        self.generate.set_max_batch_size(cfg.serve.max_batch_size)
        self.generate.set_batch_wait_timeout_s(cfg.serve.batch_wait_timeout_s)

        try:
            self.replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside a replica (local testing mode)
            self.replica_id = f"local-{id(self):x}"
        self._board = get_board(cfg.app)
        self.server = ModelServer(cfg, AdapterRegistry(cfg.mlflow.tracking_uri, cfg.mlflow.model_name))
        self.server.on_change = self._report
        self.metrics = ReplicaMetrics()
        self.server.on_adapter_load = self.metrics.adapter_loaded
        self.server.on_adapter_evict = self.metrics.adapter_evicted

        self._stop = threading.Event()
        self._tail: Any = None  # opened by the thread, so a Kafka outage does not delay start-up
        self.server.start()
        self._thread = threading.Thread(target=self._follow_events, name="cl-events-tail", daemon=True)
        self._thread.start()
        logger.info("replica %s serving version %s", self.replica_id, self.server.current_version())

    # -- requests -----------------------------------------------------------------------

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Classify one request (``{"text"| "features", "model_version"?}``); batched by Serve."""
        self.metrics.batch("predict", len(requests))
        return await asyncio.to_thread(self.server.predict, requests)

    async def predict_unbatched(self, request: dict[str, Any]) -> dict[str, Any]:
        """Like :meth:`predict`, but runs each request on its own."""
        return (await asyncio.to_thread(self.server.predict, [request]))[0]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def generate(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Generate for one request (``{"prompt", "max_new_tokens", ...}``); batched by Serve."""
        self.metrics.batch("generate", len(requests))
        return await asyncio.to_thread(self.server.generate, requests)

    async def generate_unbatched(self, request: dict[str, Any]) -> dict[str, Any]:
        """Like :meth:`generate`, but runs each request on its own."""
        return (await asyncio.to_thread(self.server.generate, [request]))[0]

    async def generate_stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Like :meth:`generate_unbatched`, but yields the text as it is decoded (call it through
        ``handle.options(stream=True)``): ``{"model_version"}`` first, then ``{"text": piece}``
        messages, or one ``{"error": ...}``. The generation runs in a thread of its own, which stops
        when the caller goes away."""
        async for message in iterate_in_thread(self.server.generate_stream(request), name="cl-generate-stream"):
            yield message

    # -- state ----------------------------------------------------------------------------

    def current_version(self) -> str:
        """The version served to requests that pin none."""
        return self.server.current_version()

    def loaded_versions(self) -> list[str]:
        """Versions in this replica's adapter slots, least recently used first."""
        return self.server.loaded_versions()

    def state(self) -> dict[str, Any]:
        """This replica's id, current version, loaded versions and versions refused for a bad
        checksum (version -> reason)."""
        return {
            "replica_id": self.replica_id,
            "current_version": self.server.current_version(),
            "loaded_versions": self.server.loaded_versions(),
            "refused_versions": self.server.refused_versions(),
        }

    def _report(self) -> None:
        state = self.state()
        self._board.report.remote(self.replica_id, state)

    # -- following cl.events ----------------------------------------------------------------

    def _open_tail(self):  # noqa: ANN202 - streams.EventTail | None
        from streams import EventTail

        try:
            return EventTail(self.config.kafka.bootstrap_servers, self.config.topics.events, LifecycleEvent)
        except Exception as e:  # noqa: BLE001 - Kafka down: serve anyway, keep trying in the thread
            logger.warning("cannot follow %s yet (%s); retrying every %gs", self.config.topics.events, e, _RETRY_S)
            return None

    def _follow_events(self) -> None:
        last_report = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_report >= HEARTBEAT_S:
                self._report()
                self.metrics.expert_load(self.server.take_expert_load())
                last_report = time.monotonic()
            if self._tail is None:
                self._tail = self._open_tail()
                if self._tail is None:
                    self._stop.wait(_RETRY_S)
                    continue
                # Announcements made before the tail was open are not on it: catch up.
                self.server.refresh()
            try:
                events = self._tail.poll(timeout_ms=500)
            except Exception as e:  # noqa: BLE001 - broker gone: reopen later
                logger.warning("lost %s (%s); reopening", self.config.topics.events, e)
                self._close_tail()
                continue
            for event in events:
                try:
                    self._handle(event)
                except Exception:  # noqa: BLE001 - one bad announcement must not stop the tail
                    logger.exception("could not handle %s event %s", event.type, event.event_id)

    def _handle(self, event: LifecycleEvent) -> None:
        if event.type not in (VersionPublished.type, Promoted.type, RolledBack.type):
            return
        try:
            message = read_message(event)
        except EventError as e:
            logger.warning("ignoring %s event %s: %s", event.type, event.event_id, e)
            return
        if message is None or not message.is_for(self.config.mlflow.model_name):
            return  # another registered model's news (several services may share cl.events)
        if isinstance(message, VersionPublished):
            self.server.on_published(message.version, message.base_version)
        elif not self.config.serve.serve_new_versions:  # promoted or rolled back
            self.server.refresh()  # serve the (new) champion alias

    def _close_tail(self) -> None:
        tail, self._tail = self._tail, None
        if tail is not None:
            try:
                tail.close()
            except Exception:  # noqa: BLE001
                pass

    def __del__(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(timeout=5.0)
        self._close_tail()
        try:
            self._board.forget.remote(self.replica_id)
        except Exception:  # noqa: BLE001 - the board may be gone already
            pass
