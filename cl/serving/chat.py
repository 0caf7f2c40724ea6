"""Chat messages to one prompt, through the model's own chat template.

A checkpoint's ``tokenizer_config.json`` carries its chat template: a Jinja string over
``messages`` in Hugging Face's convention. It is rendered the way transformers'
``apply_chat_template`` renders it (a sandboxed environment with ``trim_blocks`` and
``lstrip_blocks``, ``raise_exception``, ``strftime_now``, a ``tojson`` that does not escape
HTML, ``dict`` and ``namespace`` without a way to type internals), so a chat checkpoint sees
the prompts it was trained on. A model without a template, such as the byte-level default,
gets :data:`DEFAULT_TEMPLATE`.

Problems with the messages raise :class:`cl.serving.inference.InputError` naming the field
(``messages[1].role``), and so does a template that refuses them (``raise_exception``), so the
HTTP edge answers 422 pointing at the messages.

Example:
    >>> from cl.model import ByteTokenizer
    >>> render_chat([{"role": "user", "content": "hi"}], ByteTokenizer())
    '<|user|>\\nhi\\n<|assistant|>\\n'
    >>> render_chat([{"role": "robot", "content": "hi"}], ByteTokenizer())
    Traceback (most recent call last):
    ...
    cl.serving.inference.InputError: messages[0].role: 'robot' is not a role; use one of 'system', 'developer', 'user', 'assistant'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cl.model.tokenizer import Tokenizer
from cl.serving.inference import InputError

__all__ = ["DEFAULT_TEMPLATE", "ROLES", "compile_template", "render_chat"]

ROLES = ("system", "developer", "user", "assistant")
"""Who may speak in a chat (``developer`` is OpenAI's newer name for ``system``)."""

DEFAULT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""For a model whose tokenizer has no template: one ``<|role|>`` line before each message."""


def _raise_exception(message: str) -> NoReturn:
    """What a template calls to refuse its messages (e.g. roles that do not alternate)."""
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    """Jinja's own ``tojson`` escapes ``<``, ``>`` and ``&`` for HTML; a prompt wants them as written."""
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """``dict(...)`` for templates, without the class itself (no attribute access to type internals)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` that refuses underscore names (a way into CPython's internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's own signature trick: ``namespace(self=...)`` works
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template may not set the underscore attribute {name!r}")


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (cached: a server renders one template for every request).

    Raises:
        ValueError: ``source`` is not a Jinja template (a broken checkpoint, found at start).
    """
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(
            f"the chat template does not parse (line {e.lineno}: {e.message}); fix chat_template "
            "in the checkpoint's tokenizer_config.json"
        ) from e


def render_chat(messages: Sequence[Mapping[str, Any]], tokenizer: Tokenizer, add_generation_prompt: bool = True) -> str:
    """The prompt the model continues for a chat: ``messages`` rendered by the tokenizer's template.

    Args:
        messages: ``{"role", "content"}`` mappings, oldest first; ``role`` one of :data:`ROLES`,
            ``content`` a string.
        tokenizer: The model's tokenizer: its ``chat_template`` (None: :data:`DEFAULT_TEMPLATE`),
            ``bos_token`` and ``eos_token``.
        add_generation_prompt: End with the cue for the assistant's turn.

    Returns:
        The prompt text (the tokenizer still adds its BOS id when it encodes it).

    Raises:
        InputError: No messages, a message that is not a mapping, an unknown role, content that
            is not a string (field ``messages[i].role`` / ``messages[i].content``), or a template
            that refuses the messages (field ``messages``).
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise InputError("messages", f"expected a list of messages, got {type(messages).__name__}")
    if not messages:
        raise InputError("messages", "no messages; send at least one, e.g. {'role': 'user', 'content': 'hi'}")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(
                f"messages[{i}]", f"expected an object with role and content, got {type(message).__name__}"
            )
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InputError(f"messages[{i}].role", f"{role!r} is not a role; use one of {', '.join(map(repr, ROLES))}")
        if not isinstance(content, str):
            raise InputError(f"messages[{i}].content", f"expected a string, got {type(content).__name__}")
        plain.append({"role": role, "content": content})
    template = compile_template(tokenizer.chat_template or DEFAULT_TEMPLATE)
    try:
        return template.render(
            messages=plain,
            add_generation_prompt=add_generation_prompt,
            tools=None,  # defined, as transformers defines them: templates test ``tools is not none``
            documents=None,
            bos_token=tokenizer.bos_token,
            eos_token=tokenizer.eos_token,
        )
    except jinja2.TemplateError as e:
        raise InputError("messages", f"the model's chat template refused these messages: {e}") from e
    except Exception as e:  # noqa: BLE001 - a template's own bug (TypeError, ...) is about these messages too
        raise InputError(
            "messages", f"the model's chat template could not render these messages ({type(e).__name__}: {e})"
        ) from e
