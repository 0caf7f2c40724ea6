"""``POST /v1/chat/completions``: OpenAI's chat completions API mapped onto the lm head.

The messages become one prompt through the model's chat template
(:func:`cl.serving.chat.render_chat`), and from there a chat is a completion of that prompt:
each of the ``n`` choices is one generation under its own ``request_id``, logged to
``cl.requests`` with the rendered prompt as its input, so a rating joins to exactly what the
model saw and said. Model names, pinning, stop sequences, seeds and refusals work as in
:mod:`serve._private.completions`.

Example:
    >>> from cl.model import ByteTokenizer
    >>> body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=4, n=2, seed=3)
    >>> prompt = render(body, ByteTokenizer())
    >>> prompt, [(j.item.max_new_tokens, j.item.seed) for j in plan(body, prompt)]
    ('<|user|>\\nhi\\n<|assistant|>\\n', [(4, 3), (4, 4)])
"""

from __future__ import annotations

import time

from cl.model.tokenizer import Tokenizer
from cl.serving.chat import render_chat
from cl.serving.inference import InputError
from serve._private.completions import Job, ServedAs, finish, plan_jobs, resolve_model, usage
from serve.schemas import ChatChoice, ChatCompletionRequest, ChatCompletionResponse, ChatReply

__all__ = ["DEFAULT_MAX_TOKENS", "field_name", "pinned_version", "plan", "render", "respond"]

DEFAULT_MAX_TOKENS = 16  # as /v1/completions


def pinned_version(body: ChatCompletionRequest, model_name: str) -> str | None:
    """The version ``body.model`` pins, or None to route it like any request.

    Raises:
        InputError: Unsupported options (``logprobs``, ``tools``), a ``max_tokens`` that
            contradicts ``max_completion_tokens``, or an unknown ``model``.
    """
    if body.logprobs:
        raise InputError("logprobs", "log-probabilities are not returned; send logprobs: false")
    if body.tools:
        raise InputError("tools", "this model calls no tools; send no tools (and no tool_choice)")
    if None not in (body.max_tokens, body.max_completion_tokens) and body.max_tokens != body.max_completion_tokens:
        raise InputError(
            "max_tokens",
            f"{body.max_tokens} contradicts max_completion_tokens={body.max_completion_tokens}; send one of them",
        )
    return resolve_model(body.model, model_name)


def render(body: ChatCompletionRequest, tokenizer: Tokenizer) -> str:
    """The prompt of ``body``'s chat, rendered by the model's template.

    Raises:
        InputError: The template refused the messages (field ``messages``).
    """
    return render_chat([{"role": m.role, "content": m.content} for m in body.messages], tokenizer)


def plan(body: ChatCompletionRequest, prompt: str) -> list[Job]:
    """One job per choice; with a ``seed`` the choices get ``seed``, ``seed + 1``, ..."""
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    return plan_jobs([prompt], body.n, body.seed, max_tokens, body.temperature, body.top_p)


def field_name(body: ChatCompletionRequest, field: str) -> str:
    """The request's name for a field the generation checks name: the token limit as the client
    sent it, the prompt as the messages it was rendered from."""
    if field == "max_new_tokens":
        return (
            "max_tokens"
            if body.max_completion_tokens is None and body.max_tokens is not None
            else "max_completion_tokens"
        )
    return "messages" if field == "prompt" else field


def respond(
    body: ChatCompletionRequest, jobs: list[Job], texts: list[str], request_ids: list[str], served: ServedAs
) -> ChatCompletionResponse:
    """The ``chat.completion`` answer: ``texts[i]`` is job ``i``'s raw generation."""
    choices = []
    for index, (job, raw, request_id) in enumerate(zip(jobs, texts, request_ids)):
        text, reason = finish(job, raw, body.stop)
        choices.append(
            ChatChoice(index=index, message=ChatReply(content=text), finish_reason=reason, request_id=request_id)
        )
    return ChatCompletionResponse(
        id=request_ids[0],
        created=int(time.time()),
        model=served.model,
        choices=choices,
        usage=usage([j.prompt for j in jobs], [c.message.content for c in choices]),
        model_version=served.version,
        arm=served.arm,
    )
