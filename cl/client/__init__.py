"""A Python client of the service's HTTP API, sync and async. It needs only ``httpx``.

Example (against a running service, e.g. after ``make run``)::

    from cl.client import Client, InvalidInput

    with Client() as client:                    # $CL_URL (default http://127.0.0.1:8000), $CL_API_KEY
        answer = client.predict(features=[0.1, -1.2, 0.3, 0.9, -0.4, 1.1, 0.0, 0.5], user_id="u1")
        client.feedback(answer.request_id, label=1, user_id="u1")
        try:
            client.predict(features=[1.0])
        except InvalidInput as e:
            print(e.field, e)                   # features POST /v1/predict answered 422: features: ...

``Client`` and ``AsyncClient`` retry what is safe to retry (:mod:`cl.client.errors` says what),
answer with the frozen dataclasses of :mod:`cl.client.types`, and raise the errors of
:mod:`cl.client.errors`. Like any user's code, this package uses nothing else of the project:
it imports only the standard library and ``httpx``.
"""

from cl.client.api import DEFAULT_URL, AsyncClient, Client
from cl.client.errors import MAX_RETRY_AFTER_S, AuthError, InvalidInput, RateLimited, ServiceError, Unreachable
from cl.client.types import (
    Decision,
    FeedbackReceipt,
    Generation,
    Health,
    ModelVersions,
    Prediction,
    ReplicaInfo,
    Rollout,
    RolloutDecisions,
    VersionInfo,
)

__all__ = [
    "DEFAULT_URL",
    "MAX_RETRY_AFTER_S",
    "AsyncClient",
    "AuthError",
    "Client",
    "Decision",
    "FeedbackReceipt",
    "Generation",
    "Health",
    "InvalidInput",
    "ModelVersions",
    "Prediction",
    "RateLimited",
    "ReplicaInfo",
    "Rollout",
    "RolloutDecisions",
    "ServiceError",
    "Unreachable",
    "VersionInfo",
]
