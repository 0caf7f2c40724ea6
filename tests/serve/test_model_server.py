"""ModelServer (the replica's Ray-free core) against an in-memory registry: versions and batches."""

from __future__ import annotations

import doctest
from dataclasses import dataclass, field

import pytest
import torch

from cl.config import Config
from cl.model.base_model import build_base_model
from serve.model_server import ModelServer
from tests.serving.conftest import random_adapter

torch.set_num_threads(1)


@dataclass
class Info:
    version: str
    tags: dict[str, str] = field(default_factory=dict)


class MemoryRegistry:
    """Versions held in memory; counts downloads (a stand-in for cl.registry.AdapterRegistry)."""

    def __init__(self) -> None:
        self.adapters: dict[str, dict[str, torch.Tensor]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.aliases: dict[str, str] = {}
        self.downloads: list[str] = []

    def add(self, version: str, adapter: dict[str, torch.Tensor], **tags: str) -> None:
        self.adapters[version], self.tags[version] = adapter, tags

    def get_version(self, version: str) -> Info:
        if version not in self.adapters:
            raise KeyError(version)
        return Info(version, self.tags[version])

    def load_adapter(self, version: str) -> dict[str, torch.Tensor]:
        self.get_version(version)
        self.downloads.append(version)
        return self.adapters[version]

    def latest_version(self) -> str | None:
        return max(self.adapters, key=int, default=None)

    def alias_version(self, alias: str) -> str | None:
        return self.aliases.get(alias)


def _config(section, **serve) -> Config:
    return Config.from_dict({"model": vars(section), "serve": {"adapter_cache_size": 2, **serve}})


@pytest.fixture()
def registry(section) -> MemoryRegistry:
    template = build_base_model(section, 1).adapter_state(0)
    reg = MemoryRegistry()
    for v in ("1", "2", "3"):
        reg.add(v, random_adapter(template, seed=int(v)), base_version=_config(section).model.base_version)
    return reg


FEATURES = [0.3, -1.2, 0.5, 2.0, -0.7, 0.1]


def test_starts_on_the_newest_version_then_follows_announcements(section, registry):
    server = ModelServer(_config(section), registry)
    assert server.start() == "3"
    assert server.loaded_versions() == ["3"]
    registry.add("4", registry.adapters["1"], base_version=server.config.model.base_version)
    assert server.on_published("4") is True
    assert server.current_version() == "4"
    assert server.on_published("2") is False  # older: prefetched, not served
    assert server.current_version() == "4" and server.loaded_versions() == ["4", "2"]
    assert server.on_published("5", base_version="another-base") is False


def test_champion_alias_or_base_when_new_versions_are_not_served(section, registry):
    server = ModelServer(_config(section, serve_new_versions=False), registry)
    assert server.start() == "base"
    registry.aliases["champion"] = "2"
    assert server.refresh() == "2"
    assert server.on_published("3") is False and server.current_version() == "2"


def test_requests_pin_versions_and_mixed_batches_match_single_requests(section, registry):
    server = ModelServer(_config(section), registry)
    server.start()
    reqs = [{"features": FEATURES, "model_version": v} for v in ("1", None, "base", "2", "3", "1")]
    reqs.append({"text": "hello", "model_version": "2"})
    out = server.predict(reqs)
    # Four adapter versions do not fit two slots at once: the server splits the batch.
    assert [o["model_version"] for o in out] == ["1", "3", "base", "2", "3", "1", "2"]
    for r, o in zip(reqs, out):
        alone = server.predict([r])[0]
        assert alone["model_version"] == o["model_version"]
        assert alone["probabilities"] == pytest.approx(o["probabilities"], abs=1e-5)
    assert out[0]["probabilities"] == pytest.approx(out[5]["probabilities"], abs=1e-6)
    assert out[0]["probabilities"] != pytest.approx(out[2]["probabilities"], abs=1e-4)


def test_one_bad_request_does_not_fail_its_batch(section, registry):
    server = ModelServer(_config(section), registry)
    server.start()
    out = server.predict(
        [
            {"features": FEATURES},
            {"features": [1.0]},
            {"features": FEATURES, "model_version": "99"},
            {"text": "hi"},
        ]
    )
    assert out[0]["model_version"] == "3" and out[3]["model_version"] == "3"
    assert out[1]["error"]["field"] == "features" and out[1]["error"]["status"] == 422
    assert out[2]["error"]["field"] == "model_version" and "not registered" in out[2]["error"]["message"]


def test_versions_of_another_base_are_refused(section, registry):
    registry.add("7", registry.adapters["1"], base_version="small-f64-l2-r8-seed1")
    server = ModelServer(_config(section), registry)
    server.start()
    [out] = server.predict([{"features": FEATURES, "model_version": "7"}])
    assert out["error"]["status"] == 422 and "trained on base 'small-f64-l2-r8-seed1'" in out["error"]["message"]


def test_generate_returns_text_and_version(section, registry):
    server = ModelServer(_config(section), registry)
    server.start()
    out = server.generate(
        [
            {"prompt": "hi", "max_new_tokens": 4},
            {"prompt": "hi", "max_new_tokens": 4, "model_version": "base"},
            {"prompt": "hi", "max_new_tokens": 10_000},
        ]
    )
    assert out[0]["model_version"] == "3" and isinstance(out[0]["text"], str)
    assert out[1]["model_version"] == "base"
    assert out[2]["error"]["field"] == "max_new_tokens"


def test_unreachable_registry_falls_back_to_base(section):
    class Down(MemoryRegistry):
        def latest_version(self) -> str | None:
            return "1"

        def get_version(self, version: str) -> Info:
            raise ConnectionError("registry down")

    server = ModelServer(_config(section), Down())
    assert server.start() == "base"
    [out] = server.predict([{"features": FEATURES, "model_version": "1"}])
    assert out["error"]["status"] == 503 and "registry down" in out["error"]["message"]


def test_the_model_sits_where_serve_num_gpus_and_dtype_say(section, registry):
    server = ModelServer(_config(section), registry)  # "auto" and "auto" without a GPU: today's CPU float32
    assert (server.model.device.type, server.model.dtype) == ("cpu", torch.float32)
    server = ModelServer(_config(section, num_gpus=0, dtype="bfloat16"), registry)
    assert server.model.dtype == torch.bfloat16
    server.start()  # float32 adapters from the registry land in the bfloat16 bank
    [out] = server.predict([{"features": FEATURES}])
    assert out["model_version"] == "3" and sum(out["probabilities"]) == pytest.approx(1.0, abs=1e-2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            ModelServer(_config(section, num_gpus=1), registry)


def test_slots_outside_the_bank_never_reach_the_device():
    from serve.model_server import _check_slots

    _check_slots({"base": -1, "3": 1}, capacity=2)
    with pytest.raises(RuntimeError, match="outside"):
        _check_slots({"3": 2}, capacity=2)


def test_schema_docstrings_run():
    import serve.schemas

    assert doctest.testmod(serve.schemas, optionflags=doctest.ELLIPSIS).failed == 0
