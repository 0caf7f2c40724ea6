"""The serving layer: a Ray Serve application over the MoE model and its adapter versions.

``deploy(config)`` runs it; ``build_app(config)`` gives the application for ``serve.run``.
``Ingress`` is the HTTP edge, ``ModelReplica`` the batching model deployment and
``ModelServer`` its Ray-free core; the request and response bodies live in ``serve.schemas``.
"""

from serve.app import base_url, build_app, connect, deploy, shutdown
from serve.ingress import Ingress
from serve.model_server import ModelServer, VersionError
from serve.replica import ModelReplica
from serve.schemas import (
    FeedbackAccepted,
    GenerateRequest,
    GenerateResponse,
    ModelsResponse,
    PredictRequest,
    PredictResponse,
)

__all__ = [
    "FeedbackAccepted",
    "GenerateRequest",
    "GenerateResponse",
    "Ingress",
    "ModelReplica",
    "ModelServer",
    "ModelsResponse",
    "PredictRequest",
    "PredictResponse",
    "VersionError",
    "base_url",
    "build_app",
    "connect",
    "deploy",
    "shutdown",
]
