"""The adapter registry on MLflow: every snapshot a model version, checksummed, with lineage.

A version's artifacts are ``adapter.safetensors`` (what serving loads), optionally
``learner_state.pt`` (what a learner resumes from: optimizer, replay, detector, offsets) and
``manifest.json`` (sha256 of each file). The adapter's checksum is also a version tag, so a
corrupted or swapped artifact is refused before it is ever served.

A version's tags are a :class:`~cl.versions.VersionTags` and versions order by
:func:`~cl.versions.version_order`; both are re-exported here, and live in :mod:`cl.versions` so
that what only compares versions or reads tags need not load MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from safetensors.torch import load_file, save_file

from cl.versions import BASE_VERSION, VersionTagError, VersionTags, is_newer, version_order

__all__ = [
    "BASE_VERSION",
    "AdapterIntegrityError",
    "AdapterRegistry",
    "VersionInfo",
    "VersionTagError",
    "VersionTags",
    "is_newer",
    "version_order",
]

ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "learner_state.pt"
MANIFEST_FILE = "manifest.json"


class AdapterIntegrityError(RuntimeError):
    """A version's artifact does not match the checksum recorded when it was published."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered adapter version, as ``cl versions`` and ``GET /v1/models`` show it.

    ``tags`` are the raw strings (what ``GET /v1/models`` lists); :attr:`version_tags` reads them.
    """

    version: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    created_ms: int
    run_id: str | None

    @property
    def version_tags(self) -> VersionTags:
        """The tags, typed.

        Raises:
            VersionTagError: A tag does not parse; the message names it.
        """
        return VersionTags.from_tags(self.tags, version=self.version)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AdapterRegistry:
    """Publish and load adapter versions of one registered model.

    Args:
        tracking_uri: the MLflow server, e.g. ``http://127.0.0.1:5000``.
        model_name: the registered model, ``<app>-adapter``.
    """

    def __init__(self, tracking_uri: str, model_name: str):
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._model_checked = False

    # -- writing ------------------------------------------------------------------------------

    def _ensure_model(self) -> None:
        if self._model_checked:
            return
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            try:
                self.client.create_registered_model(self.model_name, description="LoRA adapters of the online learner")
            except MlflowException:
                self.client.get_registered_model(self.model_name)  # created meanwhile by someone else
        self._model_checked = True

    def start_run(self, run_name: str, params: dict[str, Any] | None = None) -> str:
        """A run (in experiment ``<model_name>``) to hang a learner session's snapshots and curves on."""
        experiment = self.client.get_experiment_by_name(self.model_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.model_name)
        run = self.client.create_run(experiment_id, run_name=run_name)
        for key, value in (params or {}).items():
            self.client.log_param(run.info.run_id, key, str(value)[:500])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def publish(
        self,
        adapter: dict[str, torch.Tensor],
        *,
        tags: VersionTags | Mapping[str, Any],
        metrics: dict[str, float] | None = None,
        learner_state: dict | None = None,
        run_id: str | None = None,
        step: int = 0,
    ) -> str:
        """Register ``adapter`` (and the learner's state) as a new version; returns its number.

        Args:
            adapter: what ``MoETransformer.adapter_state(slot)`` returns.
            tags: lineage and bookkeeping (:class:`~cl.versions.VersionTags`); a plain mapping is
                read with ``VersionTags.from_tags``. ``adapter_sha256`` is set here.
            metrics: logged on the run at ``step``.
            learner_state: ``torch.save``-able plain state for resuming.
            run_id: the run to attach the artifacts to; a one-off run is made if None.
            step: the metrics' step (events seen, say).
        """
        tags = tags if isinstance(tags, VersionTags) else VersionTags.from_tags(tags)
        self._ensure_model()
        own_run = run_id is None
        if own_run:
            run_id = self.start_run("publish")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, folder / ADAPTER_FILE)
            if learner_state is not None:
                torch.save(learner_state, folder / STATE_FILE)
            manifest = {p.name: _sha256(p) for p in sorted(folder.iterdir())}
            (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
            artifact_path = f"snapshots/{step:012d}-{int(time.time() * 1000)}"
            self.client.log_artifacts(run_id, str(folder), artifact_path)
        if metrics:
            self.log_metrics(run_id, metrics, step)
        if own_run:
            self.client.set_terminated(run_id)
        version = self.client.create_model_version(
            self.model_name,
            source=f"runs:/{run_id}/{artifact_path}",
            run_id=run_id,
            tags=dataclasses.replace(tags, adapter_sha256=manifest[ADAPTER_FILE]).to_tags(),
        )
        return str(version.version)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(self.model_name, alias)
        except MlflowException:
            pass

    def set_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, str(version), key, str(value))

    # -- reading ------------------------------------------------------------------------------

    def _model_version(self, version: str) -> Any:
        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException as e:
            raise KeyError(f"{self.model_name} has no version {version!r}") from e

    def _fetch(self, mv: Any, name: str, dst: Path) -> Path:
        """Download one file of a version's snapshot (not the whole folder: the learner state
        can be large, and serving needs only the adapter)."""
        run_id, path = mv.source.removeprefix("runs:/").split("/", 1)
        try:
            return Path(self.client.download_artifacts(run_id, f"{path}/{name}", str(dst)))
        except MlflowException as e:
            raise KeyError(f"{self.model_name} version {mv.version}: {name} cannot be fetched: {e.message}") from e

    def load_adapter(self, version: str) -> dict[str, torch.Tensor]:
        """The adapter tensors of ``version``, after checking them against the published checksum.

        Raises:
            AdapterIntegrityError: the artifact's sha256 differs from the version's tag.
            KeyError: no such version.
        """
        mv = self._model_version(version)
        expected = VersionTags.from_tags(mv.tags, version=str(version)).adapter_sha256
        with tempfile.TemporaryDirectory() as tmp:
            path = self._fetch(mv, ADAPTER_FILE, Path(tmp))
            actual = _sha256(path)
            if expected is None or actual != expected:
                raise AdapterIntegrityError(
                    f"adapter version {version} of {self.model_name}: checksum {actual[:12]}... does not match "
                    f"the published {str(expected)[:12]}...; refusing to load it (republish the version)"
                )
            return load_file(path)

    def load_learner_state(self, version: str) -> dict | None:
        """The learner state saved with ``version`` (None if it was published without one)."""
        mv = self._model_version(version)
        with tempfile.TemporaryDirectory() as tmp:
            manifest = json.loads(self._fetch(mv, MANIFEST_FILE, Path(tmp)).read_text())
            if STATE_FILE not in manifest:
                return None
            path = self._fetch(mv, STATE_FILE, Path(tmp))
            if manifest[STATE_FILE] != _sha256(path):
                raise AdapterIntegrityError(f"learner state of version {version} does not match its manifest")
            return torch.load(path, weights_only=True)

    def get_version(self, version: str) -> VersionInfo:
        return self._info(self._model_version(version))

    def list_versions(self, limit: int = 1000) -> list[VersionInfo]:
        """The newest ``limit`` versions, oldest first, with their aliases."""
        try:
            found = self.client.search_model_versions(
                f"name='{self.model_name}'", max_results=limit, order_by=["version_number DESC"]
            )
            aliases = self.client.get_registered_model(self.model_name).aliases or {}
        except MlflowException:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        infos = [self._info(mv, tuple(sorted(by_version.get(str(mv.version), [])))) for mv in found]
        return sorted(infos, key=lambda v: version_order(v.version))

    def latest_version(self, source: str | None = None, scan: int = 200) -> str | None:
        """The highest version number, or None before the first publish.

        Args:
            source: Only versions whose ``source`` tag is this (untagged ones count as
                ``"online"``): the online learner resumes from its own line, never from an
                offline retrain's version.
            scan: With ``source``, how many of the newest versions to look through.
        """
        try:
            found = self.client.search_model_versions(
                f"name='{self.model_name}'", max_results=1 if source is None else scan, order_by=["version_number DESC"]
            )
        except MlflowException:
            return None
        if source is not None:
            found = [mv for mv in found if VersionTags.from_tags(mv.tags, version=str(mv.version)).line == source]
        return str(found[0].version) if found else None

    def alias_version(self, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    @staticmethod
    def _info(mv: Any, aliases: tuple[str, ...] | None = None) -> VersionInfo:
        return VersionInfo(
            version=str(mv.version),
            tags=dict(mv.tags or {}),
            aliases=aliases if aliases is not None else tuple(getattr(mv, "aliases", ()) or ()),
            created_ms=int(mv.creation_timestamp or 0),
            run_id=mv.run_id,
        )
