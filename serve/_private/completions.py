"""``POST /v1/completions``: OpenAI's legacy completions API mapped onto the lm head.

An OpenAI client (``openai.OpenAI(base_url=".../v1").completions.create(...)``) can talk to
the service unchanged. Each prompt × ``n`` becomes one generation (batched by the replicas
like ``/v1/generate``), logged to ``cl.requests`` under its own ``request_id`` so a rating of
any choice can be learned from; the completion's ``id`` is the first choice's ``request_id``.

Tokens are bytes (the model's tokenizer), so ``usage`` counts UTF-8 bytes, and a stop
sequence is cut from the text before it is logged: what is rated is what was served. The chat
API (:mod:`serve._private.chat`) and streaming (:mod:`serve._private.sse`) build on these pieces.
Refusals carry the API's ``detail`` list and OpenAI's ``error`` object, so both kinds of
client show the field and the fix.

Example:
    >>> body = CompletionRequest(prompt=["ab", "cd"], n=2, seed=7, max_tokens=4)
    >>> [(j.prompt, j.item.seed) for j in plan(body)]
    [('ab', 7), ('ab', 8), ('cd', 9), ('cd', 10)]
    >>> cut_at_stop("hello. world", [".", "o"])
    ('hell', True)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

from cl.serving.adapter_cache import BASE_VERSION
from cl.serving.inference import GenerateItem, InputError
from serve.schemas import CompletionChoice, CompletionRequest, CompletionResponse, CompletionUsage

__all__ = [
    "Job",
    "ServedAs",
    "count_tokens",
    "cut_at_stop",
    "finish",
    "openai_error",
    "payload",
    "pinned_version",
    "plan",
    "plan_jobs",
    "resolve_model",
    "respond",
    "usage",
    "with_openai_error",
]

ROUTED_NAMES = ("cl", "default")
FIELD_NAMES = {"max_new_tokens": "max_tokens"}  # what the generation checks call a field -> the OpenAI name


@dataclass(frozen=True)
class Job:
    """One generation of a completion: which prompt, and the item sent to a replica."""

    prompt: str
    item: GenerateItem


@dataclass(frozen=True)
class ServedAs:
    """Who answered a completion: the model name, version and arm."""

    model_name: str
    version: str
    arm: str

    @property
    def model(self) -> str:
        """The answer's ``model``: ``<model name>:<version>``."""
        return f"{self.model_name}:{self.version}"


def pinned_version(body: CompletionRequest, model_name: str) -> str | None:
    """The version ``body.model`` pins, or None to route it like any request.

    Raises:
        InputError: Unsupported options (``echo``, ``logprobs``), or a ``model`` that names
            neither this service nor one of its versions.
    """
    if body.echo:
        raise InputError("echo", "echo is not supported; send echo: false and prepend the prompt yourself")
    if body.logprobs is not None:
        raise InputError("logprobs", "log-probabilities are not returned; send logprobs: null")
    return resolve_model(body.model, model_name)


def resolve_model(model: str | None, model_name: str) -> str | None:
    """The version an OpenAI ``model`` field pins (``cl-adapter:7``, ``7``, ``base``), or None to route.

    Raises:
        InputError: A ``model`` that names neither this service nor one of its versions.
    """
    if model is None or model in (model_name, *ROUTED_NAMES):
        return None
    version = model.split(":", 1)[1] if model.startswith(f"{model_name}:") else model
    if version == BASE_VERSION or version.isdigit():
        return version
    raise InputError(
        "model",
        f"unknown model {model!r}; use {model_name!r} (as routed), 'base', or a version number "
        f"such as '{model_name}:7' (GET /v1/models lists them)",
    )


def plan(body: CompletionRequest) -> list[Job]:
    """One job per prompt × ``n``; with a ``seed`` the choices get ``seed``, ``seed + 1``, ..."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    return plan_jobs(prompts, body.n, body.seed, body.max_tokens, body.temperature, body.top_p)


def plan_jobs(
    prompts: list[str], n: int, seed: int | None, max_tokens: int, temperature: float, top_p: float
) -> list[Job]:
    """One job per prompt × ``n`` (the chat API's one prompt too); seeded choices count up from ``seed``."""
    jobs = []
    for i, prompt in enumerate(prompts):
        for j in range(n):
            choice_seed = None if seed is None else seed + i * n + j
            item = GenerateItem(
                prompt=prompt, max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=choice_seed
            )
            jobs.append(Job(prompt, item))
    return jobs


def payload(job: Job) -> dict[str, Any]:
    """What a replica's ``generate`` is sent for ``job`` (the route adds the version)."""
    item = job.item
    return {
        "prompt": job.prompt,
        "max_new_tokens": item.max_new_tokens,
        "temperature": item.temperature,
        "top_p": item.top_p,
        "seed": item.seed,
    }


def cut_at_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """``text`` up to the earliest stop sequence, and whether one was found."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if s]
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def finish(job: Job, raw: str, stop: str | list[str] | None) -> tuple[str, str]:
    """The served text of a job's raw generation and its ``finish_reason``: cut at a stop
    sequence (``stop``), else ``length`` when it used every token it was given."""
    text, stopped = cut_at_stop(raw, stop)
    length = not stopped and count_tokens(raw) >= job.item.max_new_tokens
    return text, "length" if length else "stop"


def count_tokens(text: str) -> int:
    """Tokens of generated ``text``: the model's tokens are bytes."""
    return len(text.encode("utf-8"))


def usage(prompts: list[str], texts: list[str]) -> CompletionUsage:
    """Token counts: each distinct prompt once (with its BOS), every served text."""
    prompt_tokens = sum(count_tokens(p) + 1 for p in dict.fromkeys(prompts))  # + BOS each
    completion_tokens = sum(count_tokens(t) for t in texts)
    return CompletionUsage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def respond(
    body: CompletionRequest, jobs: list[Job], texts: list[str], request_ids: list[str], served: ServedAs
) -> CompletionResponse:
    """The ``text_completion`` answer: ``texts[i]`` is job ``i``'s raw generation."""
    choices = []
    for index, (job, raw, request_id) in enumerate(zip(jobs, texts, request_ids)):
        text, reason = finish(job, raw, body.stop)
        choices.append(CompletionChoice(text=text, index=index, finish_reason=reason, request_id=request_id))
    return CompletionResponse(
        id=request_ids[0],
        created=int(time.time()),
        model=served.model,
        choices=choices,
        usage=usage([j.prompt for j in jobs], [c.text for c in choices]),
        model_version=served.version,
        arm=served.arm,
    )


def openai_error(detail: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's ``error`` object for the first entry of an API ``detail`` list."""
    first = detail[0] if detail else {"msg": "invalid request", "field": None, "type": "invalid"}
    field = first.get("field") or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return {"message": message, "type": "invalid_request_error", "param": field, "code": first.get("type")}


def with_openai_error(response: JSONResponse) -> JSONResponse:
    """Add OpenAI's ``error`` object to an error answer that has the API's ``detail`` list."""
    content = json.loads(bytes(response.body))
    detail = content.get("detail")
    if isinstance(detail, list) and "error" not in content:
        content["error"] = openai_error(detail)
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(status_code=response.status_code, content=content, headers=headers)
