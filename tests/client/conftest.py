"""One deployment of the real app for the client's integration tests (``test_client_live.py`` and
``test_readme_examples.py``): auth on, keys per test module, a low feedback rate so a 429 can be had."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from cl.config import Config

# The roles each test's key holds; a test takes the key by name, so no two tests share a rate bucket.
KEYS = {
    "user": {"predict": None, "feedback": None},
    "burst": {"predict": None, "feedback": None},
    "readme": {"predict": None, "feedback": None},
    "predict_only": {"predict": None},
    "admin": {"admin": None},
}
FEEDBACK_RATE_PER_S = 2.0
FEEDBACK_BURST = 2


@dataclass(frozen=True)
class Live:
    """The deployed app: its config, base URL and API keys (name -> key)."""

    config: Config
    url: str
    keys: dict[str, str]

    def features(self) -> list[float]:
        return [0.5] * self.config.model.n_features


@pytest.fixture(scope="package")
def live(stack, tmp_path_factory) -> Live:
    """The app on the stack's Ray cluster, deployed once for this folder's tests and taken down after them."""
    from cl.security import KeyStore
    from infra.kafka_broker import KafkaBroker
    from serve import deploy, shutdown

    tag = uuid.uuid4().hex[:6]
    folder = tmp_path_factory.mktemp("client")
    values = stack.to_dict()
    values["app"] = f"sdk{tag}"
    values["mlflow"]["model_name"] = f"sdk{tag}-adapter"
    values["kafka"]["topic_prefix"] = f"sdk{tag}"
    values["serve"].update(replicas=1, replica_num_cpus=0.5)
    values["auth"].update(
        enabled=True,
        keys_file=str(folder / "keys.json"),
        audit_file=str(folder / "audit.jsonl"),
        feedback_rate_per_s=FEEDBACK_RATE_PER_S,
        feedback_burst=FEEDBACK_BURST,
    )
    config = Config.from_dict(values)
    KafkaBroker(config).create_topics()
    store = KeyStore(config.keys_path)
    keys = {name: store.create(name, roles)[0] for name, roles in KEYS.items()}
    url = deploy(config)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the app did not answer /healthz within 60 s"
        time.sleep(0.5)
    try:
        yield Live(config, url, keys)
    finally:
        shutdown(config)
