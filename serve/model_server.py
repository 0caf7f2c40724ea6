"""The inside of a model replica, without Ray: base model, adapter slots, versions, batches.

:class:`ModelServer` wires the domain blocks together: the seeded base from
:func:`cl.model.base_model.build_base_model` with ``K = serve.adapter_cache_size`` adapter slots,
an :class:`cl.serving.adapter_cache.AdapterCache` that maps versions to slots, the adapter registry
to fetch versions from, and :mod:`cl.serving.inference` for validation and batched passes. The
model and its adapter bank sit on the replica's device in ``serve.dtype``
(:mod:`cl.serving.placement`); adapters load into the slots from float32 CPU tensors.

Each request may pin a version; the rest get the *current* version. Requests are answered
with plain dicts, one per request, either ``{"model_version": ..., <output>}`` or
``{"error": {"field", "message", "status"}}``, so one bad request never fails its batch.

A version whose artifact fails its checksum is *refused*: remembered for
``REFUSED_RECHECK_S`` so that neither announcements nor pinned requests download it again
(they get the same 503 at once), logged once with the reason, and listed by
:meth:`ModelServer.refused_versions`. At start, a refused newest version makes the server
fall back to the newest older version that loads, not to the bare base.

Thread-safe: the Ray deployment runs batches in a worker thread while its event-tail thread
prefetches versions. Downloads happen outside the lock; only installing an adapter into a
slot and the forward passes hold it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch

from cl.config import Config
from cl.model import ModelConfig
from cl.model.base_model import build_base_model
from cl.serving.adapter_cache import BASE_VERSION, AdapterCache
from cl.serving.inference import (
    GenerateItem,
    InputError,
    Limits,
    PredictItem,
    check_generate,
    check_predict,
    generate_batch,
    predict_batch,
)
from cl.serving.placement import place_for_serving, resolve_device, resolve_dtype
from cl.serving.streaming import stream_generate
from cl.versions import VersionTags, is_newer

__all__ = ["ModelServer", "VersionError", "VersionSource"]

# A child of Ray Serve's logger, so that inside a replica these lines reach the replica log.
logger = logging.getLogger("ray.serve").getChild("cl")

REFUSED_RECHECK_S = 60.0
"""How long a version refused for a bad checksum is refused without downloading it again
(an operator may restore the artifact; a replica restart forgets refusals too)."""
START_FALLBACKS = 3
"""At start, how many versions older than a newest one that cannot load are tried before base."""


class VersionSource(Protocol):
    """What the server needs of the registry (:class:`cl.registry.AdapterRegistry` has it)."""

    def load_adapter(self, version: str) -> dict[str, torch.Tensor]: ...

    def get_version(self, version: str) -> Any: ...

    def latest_version(self) -> str | None: ...

    def alias_version(self, alias: str) -> str | None: ...


class VersionError(Exception):
    """A version cannot be served.

    Attributes:
        version: The version asked for.
        status: HTTP status that fits: 422 for an unknown or incompatible version, 503 when
            the registry could not deliver it.
    """

    def __init__(self, version: str, message: str, status: int) -> None:
        self.version = version
        self.status = status
        super().__init__(message)


class ModelServer:
    """Serves predictions and generations from one base with adapter versions in K slots.

    Args:
        config: The service config (``model`` and ``serve`` sections are used).
        registry: Where adapter versions come from.
    """

    def __init__(self, config: Config, registry: VersionSource) -> None:
        self.config = config
        self.registry = registry
        self.limits = Limits.from_serve(config.serve)
        # serve.num_gpus arrives resolved by serve.app (a number); "auto" here means a visible GPU.
        self.device = resolve_device(config.serve.num_gpus, torch.cuda.device_count())
        self.model = place_for_serving(
            build_base_model(config.model, n_adapter_slots=config.serve.adapter_cache_size),
            self.device,
            resolve_dtype(config.serve.dtype, self.device),
        )
        self.cache = AdapterCache(config.serve.adapter_cache_size, install=self._install, on_evict=self._evicted)
        self._lock = threading.Lock()  # guards the cache, the adapter slots and the forward passes
        self._current = BASE_VERSION
        self._refused: dict[str, tuple[float, str]] = {}  # version -> (monotonic time, why)
        self.on_change: Callable[[], None] | None = None  # called when current/loaded versions change
        self.on_adapter_load: Callable[[], None] | None = None  # for the replica's metrics
        self.on_adapter_evict: Callable[[], None] | None = None

    # -- versions ------------------------------------------------------------------------

    @property
    def model_config(self) -> ModelConfig:
        """The served model's config (``n_features``, ``max_seq_len``, ...)."""
        return self.model.config

    def current_version(self) -> str:
        """The version served to requests that do not pin one."""
        return self._current

    def loaded_versions(self) -> list[str]:
        """Versions held in adapter slots, least recently used first."""
        with self._lock:
            return self.cache.versions()

    def refused_versions(self) -> dict[str, str]:
        """Versions refused for a bad checksum in the last ``REFUSED_RECHECK_S``, with the reason."""
        now = time.monotonic()
        self._refused = {v: (at, why) for v, (at, why) in list(self._refused.items()) if now - at < REFUSED_RECHECK_S}
        return {v: why for v, (_, why) in self._refused.items()}

    def fetch(self, version: str) -> dict[str, torch.Tensor]:
        """Download ``version``'s adapter after checking it was trained on this service's base.

        Raises:
            VersionError: Unknown version (422), trained on another base (422), the registry
                failed (503), or the artifact failed its checksum (503, without a download
                while the version is refused).
        """
        from cl.registry import AdapterIntegrityError  # mlflow is heavy; only replicas need it

        why = self.refused_versions().get(version)
        if why is not None:
            raise VersionError(version, why, 503)
        try:
            info = self.registry.get_version(version)
            base = VersionTags.from_tags(getattr(info, "tags", None), version=version).base_version
            if base is not None and base != self.config.model.base_version:
                raise VersionError(
                    version,
                    f"version {version} was trained on base {base!r} but this service serves "
                    f"{self.config.model.base_version!r}; use a version of this base",
                    422,
                )
            return self.registry.load_adapter(version)
        except VersionError:
            raise
        except KeyError:
            raise VersionError(
                version, f"version {version!r} is not registered; GET /v1/models lists the versions", 422
            ) from None
        except AdapterIntegrityError as e:
            why = f"version {version} is refused: {e}; pin another version or none"
            self._refused[version] = (time.monotonic(), why)
            logger.warning("%s (not downloaded again for %gs)", why, REFUSED_RECHECK_S)
            self._changed()
            raise VersionError(version, why, 503) from e
        except Exception as e:  # noqa: BLE001 - registry down, network, bad artifact: all "not now"
            raise VersionError(version, f"version {version} could not be loaded from the registry: {e}", 503) from e

    def ensure_loaded(self, version: str) -> int:
        """Load ``version`` into a slot unless it is there; returns the slot (``-1`` for base).

        Raises:
            VersionError: See :meth:`fetch`.
        """
        with self._lock:
            slot = self.cache.peek(version)
        if slot is not None:
            return slot
        state = self.fetch(version)  # outside the lock: inference goes on meanwhile
        with self._lock:
            slot = self.cache.slot_for(version, lambda _: state)
        self._changed()
        return slot

    def set_current(self, version: str) -> None:
        """Serve ``version`` to requests that pin none, after loading it.

        Raises:
            VersionError: See :meth:`fetch`; the current version stays as it was.
        """
        self.ensure_loaded(version)
        previous, self._current = self._current, version
        if previous != version:
            logger.info("now serving version %s (was %s)", version, previous)
            self._changed()

    def initial_version(self) -> str:
        """What to serve at start: the newest version (``serve.serve_new_versions``), else
        the ``champion`` alias, else ``"base"``."""
        version = self.registry.latest_version() if self.config.serve.serve_new_versions else None
        return version or self.registry.alias_version("champion") or BASE_VERSION

    def start(self) -> str:
        """Set the current version to :meth:`initial_version`; if it cannot load, to the newest
        of the ``START_FALLBACKS`` versions before it that loads (``serve.serve_new_versions``),
        else base. Returns the version served."""
        try:
            first = self.initial_version()
        except Exception as e:  # noqa: BLE001 - registry down: the base always works
            logger.warning("serving base: the registry could not name a version: %s", e)
            first = BASE_VERSION
        older = []
        if self.config.serve.serve_new_versions and first.isdigit():
            older = [str(v) for v in range(int(first) - 1, max(0, int(first) - 1 - START_FALLBACKS), -1)]
        for version in [first, *older]:
            try:
                self.set_current(version)
                return self._current
            except Exception as e:  # noqa: BLE001 - try the next one; the base always works
                logger.warning("cannot serve version %s at start: %s", version, e)
        self.set_current(BASE_VERSION)
        logger.warning("serving base: no version of %s could be loaded", ", ".join([first, *older]))
        return self._current

    def refresh(self) -> str:
        """Catch up with the registry (after announcements may have been missed): serve the
        newest version if it is newer (``serve.serve_new_versions``), else the ``champion``
        alias; on any failure keep the current version. Returns the current version."""
        try:
            version = self.initial_version()
            if self.config.serve.serve_new_versions and not is_newer(version, self._current):
                return self._current
            self.set_current(version)
        except Exception as e:  # noqa: BLE001 - keep serving what we serve
            logger.warning("could not refresh the served version: %s", e)
        return self._current

    def on_published(self, version: str, base_version: str | None = None) -> bool:
        """React to a ``version_published`` announcement: prefetch it and, with
        ``serve.serve_new_versions``, serve it if it is newer than the current version.

        Args:
            version: The published version.
            base_version: The base it was trained on, if the announcement says.

        Returns:
            Whether the current version changed.
        """
        if base_version is not None and base_version != self.config.model.base_version:
            logger.warning(
                "ignoring version %s: trained on base %s, not %s", version, base_version, self.config.model.base_version
            )
            return False
        try:
            if self.config.serve.serve_new_versions and is_newer(version, self._current):
                self.set_current(version)
                return True
            self.ensure_loaded(version)
        except VersionError as e:
            logger.warning("version %s was published but cannot be served: %s", version, e)
        return False

    # -- requests -------------------------------------------------------------------------

    def predict(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Classify a batch.

        Args:
            requests: Dicts with ``text`` or ``features`` and an optional ``model_version``.

        Returns:
            Per request ``{"label", "probabilities", "model_version"}`` or ``{"error": ...}``.
        """
        items = [
            PredictItem(text=r.get("text"), features=None if r.get("features") is None else tuple(r["features"]))
            for r in requests
        ]
        checker = lambda item: check_predict(item, self.model_config, self.limits, self.model.tokenizer)  # noqa: E731

        def run(batch: list[PredictItem]) -> list[dict[str, Any]]:
            return [{"label": p.label, "probabilities": p.probabilities} for p in predict_batch(self.model, batch)]

        return self._serve(requests, items, checker, run)

    def generate(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Generate for a batch.

        Args:
            requests: Dicts with ``prompt``, optional ``max_new_tokens``, ``temperature``,
                ``top_p``, ``seed`` and ``model_version``.

        Returns:
            Per request ``{"text", "model_version"}`` or ``{"error": ...}``.
        """
        items = [
            GenerateItem(
                prompt=r.get("prompt"),  # type: ignore[arg-type]
                max_new_tokens=r.get("max_new_tokens", 32),
                temperature=r.get("temperature", 0.0),
                top_p=r.get("top_p", 1.0),
                seed=r.get("seed"),
            )
            for r in requests
        ]
        checker = lambda item: check_generate(item, self.model_config, self.limits, self.model.tokenizer)  # noqa: E731

        def run(batch: list[GenerateItem]) -> list[dict[str, Any]]:
            return [{"text": t} for t in generate_batch(self.model, batch)]

        return self._serve(requests, items, checker, run)

    def generate_stream(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Generate for one request, yielding the text as it is decoded (``ModelReplica.generate_stream``).

        Args:
            request: As one request of :meth:`generate`.

        Yields:
            ``{"model_version"}`` once the request is checked and its version sits in a slot, then
            ``{"text": piece}`` per decoded piece; or a single ``{"error": ...}`` instead. The lock
            is held for the whole generation, as a batch holds it, so the slot cannot change under it.
        """
        item = GenerateItem(
            prompt=request.get("prompt"),  # type: ignore[arg-type]
            max_new_tokens=request.get("max_new_tokens", 32),
            temperature=request.get("temperature", 0.0),
            top_p=request.get("top_p", 1.0),
            seed=request.get("seed"),
        )
        version = request.get("model_version") or self._current
        try:
            check_generate(item, self.model_config, self.limits, self.model.tokenizer)
            state = None if version in self.cache else self.fetch(version)  # outside the lock, as in _serve
        except InputError as e:
            yield _error(e.field, e.message, 422)
            return
        except VersionError as e:
            yield _error("model_version", str(e), e.status)
            return
        try:
            with self._lock:
                try:
                    slot = self.cache.slot_for(version, lambda v: self.fetch(v) if state is None else state)
                except VersionError as e:
                    yield _error("model_version", str(e), e.status)
                    return
                yield {"model_version": version}
                for piece in stream_generate(self.model, dataclasses.replace(item, slot=slot)):
                    yield {"text": piece}
        finally:
            if state is not None:
                self._changed()  # outside the lock: the report reads the loaded versions

    def _serve(
        self,
        requests: Sequence[dict[str, Any]],
        items: list[Any],
        check: Callable[[Any], None],
        run: Callable[[list[Any]], list[dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """Validate, resolve versions, then run the good rows in chunks of <= K adapter versions."""
        current = self._current
        out: list[dict[str, Any] | None] = [None] * len(requests)
        versions: list[str] = []
        for i, (r, item) in enumerate(zip(requests, items)):
            versions.append(r.get("model_version") or current)
            try:
                check(item)
            except InputError as e:
                out[i] = _error(e.field, e.message, 422)
        # Fetch missing versions outside the lock, once each.
        fetched: dict[str, dict[str, torch.Tensor]] = {}
        for v in dict.fromkeys(v for i, v in enumerate(versions) if out[i] is None):
            if v in self.cache:
                continue
            try:
                fetched[v] = self.fetch(v)
            except VersionError as e:
                for i, w in enumerate(versions):
                    if w == v and out[i] is None:
                        out[i] = _error("model_version", str(e), e.status)

        def load(version: str) -> dict[str, torch.Tensor]:
            # Evicted by a prefetch since the check above: fetch again (rare).
            return fetched[version] if version in fetched else self.fetch(version)

        todo = [i for i in range(len(requests)) if out[i] is None]
        for rows in _chunks_by_version(todo, versions, self.cache.capacity):
            try:
                with self._lock:
                    slots = self.cache.assign([versions[i] for i in rows], load)
                    _check_slots(slots, self.cache.capacity)  # once per batch, on the host: the kernels do not
                    batch = [_with_slot(items[i], slots[versions[i]]) for i in rows]
                    results = run(batch)
            except VersionError as e:
                results = [_error("model_version", str(e), e.status)] * len(rows)
            for i, res in zip(rows, results):
                out[i] = res if "error" in res else {**res, "model_version": versions[i]}
        if fetched:
            self._changed()
        return out  # type: ignore[return-value]

    # -- bookkeeping ----------------------------------------------------------------------

    def take_expert_load(self) -> dict[str, dict[str, Any]]:
        """Per-layer expert load since the last call (``MoETransformer.expert_load_stats``), then reset."""
        with self._lock:
            stats = self.model.expert_load_stats()
            self.model.reset_expert_load_stats()
        return stats

    def _install(self, slot: int, state: dict[str, torch.Tensor]) -> None:
        self.model.load_adapter_state(slot, state)
        _call(self.on_adapter_load)

    def _evicted(self, version: str, slot: int) -> None:
        logger.info("adapter version %s evicted from slot %d", version, slot)
        _call(self.on_adapter_evict)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - reporting must never break serving
                logger.exception("state report failed")


def _call(hook: Callable[[], None] | None) -> None:
    """Run a metrics hook; a failing one never breaks serving."""
    if hook is not None:
        try:
            hook()
        except Exception:  # noqa: BLE001
            logger.exception("metrics hook failed")


def _error(field: str, message: str, status: int) -> dict[str, Any]:
    return {"error": {"field": field, "message": message, "status": status}}


def _check_slots(slots: dict[str, int], capacity: int) -> None:
    """The batch's adapter ids, checked on the host before they reach the device.

    A replica launches the kernels without their id range checks (``CL_KERNELS_CHECK_IDS=0``, set
    by ``serve.replica``): each is a device-to-host sync per layer and call. The ids come from
    the cache, so a bad one is a bug here, never a bad request.
    """
    bad = {v: s for v, s in slots.items() if not -1 <= s < capacity}
    if bad:
        raise RuntimeError(f"adapter cache gave slots outside [-1, {capacity}): {bad}")


def _with_slot(item: Any, slot: int) -> Any:
    return dataclasses.replace(item, slot=slot)


def _chunks_by_version(rows: list[int], versions: list[str], capacity: int) -> list[list[int]]:
    """Split ``rows`` so that no chunk needs more than ``capacity`` adapter versions."""
    chunks: list[list[int]] = []
    seen: list[set[str]] = []
    for i in rows:
        v = versions[i]
        for chunk, vs in zip(chunks, seen):
            if v == BASE_VERSION or v in vs or len(vs) < capacity:
                chunk.append(i)
                if v != BASE_VERSION:
                    vs.add(v)
                break
        else:
            chunks.append([i])
            seen.append(set() if v == BASE_VERSION else {v})
    return chunks
