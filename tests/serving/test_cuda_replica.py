"""On a GPU: a replica serves in bfloat16 like the float32 CPU model, and a learner steps in autocast.

The same checks as ``python -m bench.gpu_check`` (:mod:`cl.testing.device_checks`), asserted.
"""

from __future__ import annotations

import pytest
import torch

from cl.config import Config
from cl.testing.device_checks import check_learning, check_serving

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")

CUDA = torch.device("cuda")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_replica_on_cuda_predicts_like_the_float32_cpu_model(dtype):
    result = check_serving(CUDA, dtype)
    assert result.passed, result.detail


def test_a_learner_step_on_cuda_in_autocast_gives_float32_adapter_grads():
    result = check_learning(CUDA)
    assert result.passed, result.detail


def test_the_model_server_places_its_model_on_the_gpu():
    from serve.model_server import ModelServer

    class NoVersions:
        def latest_version(self):
            return None

        def alias_version(self, alias):
            return None

    server = ModelServer(Config.from_dict({"serve": {"num_gpus": 1, "adapter_cache_size": 2}}), NoVersions())
    assert server.model.device.type == "cuda" and server.model.dtype == torch.bfloat16  # serve.dtype auto
    answers = server.predict([{"features": [0.1] * server.model_config.n_features}])
    assert "label" in answers[0] and answers[0]["model_version"] == "base"
