"""render_chat: the default template, Hugging Face chat templates as transformers renders them, refusals."""

from __future__ import annotations

import pytest

from cl.model import ByteTokenizer
from cl.serving.chat import DEFAULT_TEMPLATE, compile_template, render_chat
from cl.serving.inference import InputError

CHATML = (  # Qwen's style: the {%- -%} and {{- }} trims of a real checkpoint's template
    "{%- for message in messages %}\n"
    "    {%- if loop.first and message.role != 'system' %}\n"
    "        {{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)
ALTERNATING = (  # Mistral's style: BOS, [INST] turns, and a refusal of turns out of order
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
BLOCKS = (  # indented block tags: trim_blocks and lstrip_blocks decide every newline here
    "{% set ns = namespace(users=0) %}\n"
    "{% for message in messages %}\n"
    "    {% if message.role == 'system' %}\n"
    "<<SYS>>{{ message.content }}<</SYS>>\n"
    "    {% else %}\n"
    "{% set ns.users = ns.users + (1 if message.role == 'user' else 0) %}\n"
    "{{ message.role }}: {{ message.content | tojson }}\n"
    "    {% endif %}\n"
    "    {% if loop.index >= 4 %}{% break %}{% endif %}\n"
    "{% endfor %}\n"
    "users={{ ns.users }} tools={{ tools is none }}\n"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CHATS = [
    [{"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": '2 < 3 & "ok"?'},
        {"role": "assistant", "content": "yes: é, 日本, 🙂"},
        {"role": "user", "content": "again\nplease"},
        {"role": "assistant", "content": "ignored by BLOCKS (it stops at four)"},
    ],
]


def _tokenizer(template: str | None) -> ByteTokenizer:
    tok = ByteTokenizer()
    tok.chat_template, tok.bos_token, tok.eos_token = template, "<s>", "</s>"
    return tok


def test_the_default_template_marks_each_turn_and_cues_the_assistant() -> None:
    chat = CHATS[1][:3]
    assert render_chat(chat, ByteTokenizer()) == (
        '<|system|>\nbe brief\n<|user|>\n2 < 3 & "ok"?\n<|assistant|>\nyes: é, 日本, 🙂\n<|assistant|>\n'
    )
    assert render_chat(chat[:1], ByteTokenizer(), add_generation_prompt=False) == "<|system|>\nbe brief\n"
    assert render_chat(chat, _tokenizer(None)) == render_chat(chat, _tokenizer(DEFAULT_TEMPLATE))


@pytest.mark.parametrize(
    "template", [CHATML, ALTERNATING, BLOCKS, DEFAULT_TEMPLATE], ids=["chatml", "alt", "blocks", "default"]
)
@pytest.mark.parametrize("chat", [0, 1])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_a_checkpoints_template_renders_as_transformers_renders_it(template, chat, add_generation_prompt) -> None:
    chat_template_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    messages = CHATS[chat]
    if template == ALTERNATING:
        messages = [m for m in messages if m["role"] != "system"]
    [[expected], _] = chat_template_utils.render_jinja_template(
        [messages],
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        bos_token="<s>",
        eos_token="</s>",
    )
    assert render_chat(messages, _tokenizer(template), add_generation_prompt=add_generation_prompt) == expected


def test_blocks_template_output_is_what_trim_and_lstrip_blocks_give() -> None:
    """The oracle above could agree with us on a wrong environment; this pins one output by hand."""
    got = render_chat(CHATS[1], _tokenizer(BLOCKS))
    assert got == (
        "<<SYS>>be brief<</SYS>>\n"
        'user: "2 < 3 & \\"ok\\"?"\n'  # tojson without HTML escapes
        'assistant: "yes: é, 日本, 🙂"\n'
        'user: "again\\nplease"\n'
        "users=2 tools=True\n"
        "assistant:"
    )


@pytest.mark.parametrize(
    ("messages", "field", "words"),
    [
        ([], "messages", "no messages"),
        ("hi", "messages", "expected a list"),
        ([{"role": "user", "content": "a"}, "b"], "messages[1]", "expected an object"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], "messages[1].role", "'robot'"),
        ([{"content": "a"}], "messages[0].role", "None is not a role"),
        ([{"role": "user", "content": 5}], "messages[0].content", "expected a string, got int"),
        ([{"role": "user", "content": [{"type": "text", "text": "a"}]}], "messages[0].content", "got list"),
    ],
)
def test_bad_messages_name_the_field(messages, field, words) -> None:
    with pytest.raises(InputError) as e:
        render_chat(messages, ByteTokenizer())
    assert e.value.field == field and words in e.value.message


def test_a_template_that_refuses_the_messages_is_an_input_error_on_messages() -> None:
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(InputError) as e:
        render_chat(two_users, _tokenizer(ALTERNATING))
    assert e.value.field == "messages" and "roles must alternate" in e.value.message
    with pytest.raises(InputError, match="could not render"):
        render_chat(two_users, _tokenizer("{{ messages[0]['content'] + 1 }}"))  # the template's own bug


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages.append(1) }}",  # the messages are immutable
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # no way into Python's internals
        "{% set ns = namespace() %}{% set ns._x = 1 %}",
    ],
)
def test_the_sandbox_holds(template) -> None:
    with pytest.raises(InputError) as e:
        render_chat([{"role": "user", "content": "a"}], _tokenizer(template))
    assert e.value.field == "messages"
    assert render_chat([{"role": "user", "content": "a"}], _tokenizer("{{ dict.__class__ }}|{{ m.__class__ }}")) == "|"


def test_a_template_that_does_not_parse_fails_when_compiled() -> None:
    with pytest.raises(ValueError, match="does not parse .*tokenizer_config.json"):
        compile_template("{% for m in messages %}")
    assert compile_template(DEFAULT_TEMPLATE) is compile_template(DEFAULT_TEMPLATE)  # compiled once
