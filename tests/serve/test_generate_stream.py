"""ModelServer.generate_stream (the replica's streaming path, without Ray): the same text as generate, its errors first."""

from __future__ import annotations

import threading

import pytest

from cl.model.base_model import build_base_model
from serve.model_server import ModelServer
from tests.serve.test_model_server import MemoryRegistry, _config
from tests.serving.conftest import random_adapter


@pytest.fixture()
def server(section) -> ModelServer:
    """Serving version 3 of three, two adapter slots."""
    template = build_base_model(section, 1).adapter_state(0)
    registry = MemoryRegistry()
    for v in ("1", "2", "3"):
        registry.add(v, random_adapter(template, seed=int(v)), base_version=_config(section).model.base_version)
    server = ModelServer(_config(section), registry)
    server.start()
    return server


@pytest.mark.parametrize(
    "request_",
    [
        {"prompt": "hello", "max_new_tokens": 10},
        {"prompt": "hello", "max_new_tokens": 10, "model_version": "1"},  # loaded for this request
        {"prompt": "héllo", "max_new_tokens": 16, "temperature": 1.2, "top_p": 0.9, "seed": 4, "model_version": "base"},
    ],
)
def test_a_stream_names_its_version_then_sends_what_generate_answers(server, request_) -> None:
    first, *rest = server.generate_stream(request_)
    [whole] = server.generate([request_])
    assert first == {"model_version": whole["model_version"]}
    assert "".join(m["text"] for m in rest) == whole["text"] and len(rest) > 1
    assert ("1" in server.loaded_versions()) == (request_.get("model_version") == "1")


@pytest.mark.parametrize(
    ("request_", "field", "status"),
    [
        ({"prompt": "hi", "max_new_tokens": 10_000}, "max_new_tokens", 422),
        ({"prompt": "hi", "model_version": "9"}, "model_version", 422),
    ],
)
def test_a_request_that_cannot_be_served_gets_one_error_message(server, request_, field, status) -> None:
    [message] = server.generate_stream(request_)
    assert (message["error"]["field"], message["error"]["status"]) == (field, status)


def test_the_lock_is_held_while_streaming_and_released_when_the_stream_is_closed(server) -> None:
    stream = server.generate_stream({"prompt": "hello", "max_new_tokens": 10})
    next(stream), next(stream)
    others = threading.Thread(target=server.generate, args=([{"prompt": "hi", "max_new_tokens": 2}],))
    others.start()
    others.join(0.3)
    assert others.is_alive()  # a batch waits: the slot may not change under the stream
    stream.close()  # the client went away
    others.join(10.0)
    assert not others.is_alive()
