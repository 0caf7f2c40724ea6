"""Request and response bodies of the HTTP API (pydantic models, so FastAPI validates and documents them).

Feedback has no model here: ``POST /v1/feedback`` takes :class:`cl.events.FeedbackEvent`
itself, so the HTTP edge accepts exactly what a client may produce to Kafka directly.

Limits that depend on the deployment (``serve.max_text_chars``, ``model.n_features``,
``serve.max_new_tokens``, the model's ``max_seq_len``) are checked after parsing by
:mod:`cl.serving.inference`, whose errors name the field just like these models' do.

Example:
    >>> PredictRequest(features=[0.1, 2.0]).features
    [0.1, 2.0]
    >>> PredictRequest(text="hi", features=[1.0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for PredictRequest
    ...set exactly one of 'text' or 'features'; got both...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "ChatChoice",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ChatReply",
    "CompletionChoice",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionUsage",
    "FeedbackAccepted",
    "GenerateRequest",
    "GenerateResponse",
    "HealthResponse",
    "ModelsResponse",
    "PredictRequest",
    "PredictResponse",
    "ReplicaState",
    "StreamOptions",
    "VersionEntry",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
_VERSION_DOC = (
    "Pin a model version ('base' or a registered version number) instead of the one the "
    "service currently serves; for debugging and comparisons."
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    """Classify one input: exactly one of ``text`` or ``features``."""

    text: str | None = Field(None, description="Text to classify (byte-level tokens).")
    features: Annotated[list[FiniteFloat], Field(min_length=1)] | None = Field(
        None, description="Numeric feature vector of length model.n_features."
    )
    user_id: str | None = Field(None, max_length=256, description="Who asks, if known.")
    model_version: str | None = Field(None, min_length=1, max_length=64, description=_VERSION_DOC)

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.features is None):
            raise PydanticCustomError(
                "one_input",
                "set exactly one of 'text' or 'features'; got {got}",
                {"got": "both" if self.text is not None else "neither", "field": "text, features"},
            )
        return self


class PredictResponse(BaseModel):
    """The model's answer to a ``PredictRequest``."""

    request_id: str = Field(description="Refer to it in feedback.")
    label: int = Field(description="Predicted class.")
    probabilities: list[float] = Field(description="Probability of each class, indexed by label.")
    model_version: str = Field(description="Model version that answered ('base' or a registered version).")
    arm: str = Field(
        description="Traffic arm that answered: 'champion', 'challenger', or 'pinned' for a pinned version."
    )


class GenerateRequest(_Body):
    """Continue a prompt with the language-model head."""

    prompt: str = Field(description="Text to continue.")
    max_new_tokens: int = Field(
        32, ge=1, description="At most this many new tokens (bytes); capped by serve.max_new_tokens."
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        allow_inf_nan=False,
        description="0 = greedy; > 0 samples (above ~10 the output is noise; at most 100).",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    seed: int | None = Field(None, description="With sampling, the same seed gives the same text.")
    user_id: str | None = Field(None, max_length=256, description="Who asks, if known.")
    model_version: str | None = Field(None, min_length=1, max_length=64, description=_VERSION_DOC)


class GenerateResponse(BaseModel):
    """The model's continuation of a ``GenerateRequest``'s prompt."""

    request_id: str = Field(description="Refer to it in feedback.")
    text: str = Field(description="Generated text, without the prompt.")
    model_version: str = Field(description="Model version that answered.")
    arm: str = Field(description="Traffic arm that answered.")


class FeedbackAccepted(BaseModel):
    """Feedback is durably on the feedback topic (acknowledged by every in-sync replica)."""

    event_id: str = Field(description="The feedback event's id (its dedupe key).")
    request_id: str = Field(description="The request the feedback is about.")


class VersionEntry(BaseModel):
    """One registered adapter version."""

    version: str
    aliases: list[str]
    tags: dict[str, str]
    created_ms: int


class ReplicaState(BaseModel):
    """What one model replica serves and holds, as it last reported."""

    replica_id: str
    current_version: str = Field(description="Version served to requests that do not pin one.")
    loaded_versions: list[str] = Field(
        description="Versions in the replica's adapter slots, least recently used first."
    )
    reported_s_ago: float = Field(description="Seconds since the replica last reported.")


class ModelsResponse(BaseModel):
    """Registered versions, aliases, and what each replica serves."""

    model_name: str
    base_version: str = Field(description="The frozen base every adapter is trained on.")
    versions: list[VersionEntry]
    aliases: dict[str, str]
    serving: list[str] = Field(description="Versions currently served (the replicas' current versions).")
    replicas: list[ReplicaState]


class HealthResponse(BaseModel):
    """Liveness of the HTTP edge (this ingress replica's view)."""

    status: str = Field(description="'ok' while the ingress answers.")
    app: str = Field(description="The application name (config.app).")
    kafka_connected: bool = Field(description="Whether the request log / feedback producer is connected.")
    requests_logged: int = Field(description="Requests queued to the requests topic by this ingress replica.")
    request_log_failures: int = Field(description="Requests whose log event could not be written.")


class PromoteRequest(_Body):
    """Make a version the champion now."""

    version: str = Field(min_length=1, max_length=64, description="A registered version, e.g. '7' (or 'base').")


class RollbackRequest(_Body):
    """Take the challenger's traffic to 0, or make an earlier version the champion again."""

    to_version: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Any version to serve as champion; omit to roll the challenger back.",
    )


class TrafficRequest(_Body):
    """Set a challenger's share of the traffic."""

    version: str = Field(min_length=1, max_length=64, description="A challenger of the running rollout.")
    weight: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="Its share, 0 to 1.")


class RolloutDecisions(BaseModel):
    """What a rollout action did: the policy's decisions, newest last."""

    decisions: list[dict[str, Any]]


# ---- OpenAI-style completions ---------------------------------------------------------

_STREAM_DOC = (
    "Send the text as it is generated, as server-sent events (text/event-stream): OpenAI's chunks, then 'data: [DONE]'."
)


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``."""

    include_usage: bool = Field(False, description="End the stream with a chunk of no choices that has the usage.")


class CompletionRequest(BaseModel):
    """``POST /v1/completions`` as OpenAI's legacy completions API takes it, for the lm head.

    Fields an OpenAI client sends that this model has no use for (``presence_penalty``,
    ``frequency_penalty``, ``logit_bias``, ``best_of``, ``suffix``) are accepted and ignored
    when they are at their neutral value; ``echo`` and ``logprobs`` are refused with the fix,
    since their answers would not be what the client asked for. ``stream`` sends server-sent events.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(
        None,
        max_length=128,
        description=(
            "The service's model name (or 'cl', 'default'): served as routed; 'base' or a version number "
            "pins that version."
        ),
    )
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=8)] = Field(
        description="Text to continue, or up to 8 texts (one choice each)."
    )
    max_tokens: int = Field(16, ge=1, description="New tokens (bytes) per choice; capped by serve.max_new_tokens.")
    temperature: float = Field(
        1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 = greedy; OpenAI's range 0 to 2."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    n: int = Field(1, ge=1, le=4, description="Choices per prompt (each sampled with its own seed).")
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(
        None, description="Up to 4 sequences; the text is cut before the first one found."
    )
    seed: int | None = Field(None, description="With sampling, the same seed gives the same choices.")
    user: str | None = Field(None, max_length=256, description="Who asks; rollout arms are sticky per user.")
    stream: bool = Field(False, description=_STREAM_DOC)
    stream_options: StreamOptions | None = Field(None, description="With stream: whether to end with usage.")
    echo: bool = Field(False, description="Not supported: must be false.")
    logprobs: int | None = Field(None, description="Not supported: must be null.")


class CompletionChoice(BaseModel):
    """One generated continuation."""

    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] = Field(
        description="'length' when max_tokens were generated, 'stop' at a stop sequence or the end token."
    )
    request_id: str = Field(description="Refer to it in feedback on this choice.")


class CompletionUsage(BaseModel):
    """Byte-level token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    """OpenAI's ``text_completion`` object, plus the version and arm that answered."""

    id: str = Field(description="The first choice's request_id: post feedback on it.")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="Unix seconds.")
    model: str = Field(description="'<model name>:<version>' that answered ('base' for the base alone).")
    choices: list[CompletionChoice]
    usage: CompletionUsage
    model_version: str
    arm: str


# ---- OpenAI-style chat completions ----------------------------------------------------


class ChatMessage(BaseModel):
    """One message of a chat. Other fields an OpenAI client may send back (``refusal``,
    ``tool_calls``: null, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"] = Field(description="Who speaks.")
    content: str = Field(description="What is said: one string (content parts are not supported).")
    name: str | None = Field(None, max_length=64, description="Accepted and not used.")


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` as OpenAI's chat completions API takes it, for the lm head.

    The messages are rendered into one prompt by the model's chat template
    (:func:`cl.serving.chat.render_chat`); the model continues it. Fields an OpenAI client sends
    that this model has no use for are accepted and ignored; ``logprobs`` and ``tools`` are
    refused with the fix, since their answers would not be what the client asked for.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, max_length=128, description=CompletionRequest.model_fields["model"].description)
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)] = Field(
        description="The chat so far, oldest first (at most 256 messages)."
    )
    max_completion_tokens: int | None = Field(
        None, ge=1, description="New tokens (bytes) per choice, default 16; capped by serve.max_new_tokens."
    )
    max_tokens: int | None = Field(None, ge=1, description="The older name of max_completion_tokens.")
    temperature: float = Field(
        1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 = greedy; OpenAI's range 0 to 2."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    n: int = Field(1, ge=1, le=4, description="Choices (each sampled with its own seed).")
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(
        None, description="Up to 4 sequences; the reply is cut before the first one found."
    )
    seed: int | None = Field(None, description="With sampling, the same seed gives the same choices.")
    user: str | None = Field(None, max_length=256, description="Who asks; rollout arms are sticky per user.")
    stream: bool = Field(False, description=_STREAM_DOC)
    stream_options: StreamOptions | None = Field(None, description="With stream: whether to end with usage.")
    logprobs: bool | None = Field(None, description="Not supported: must be false or null.")
    tools: list[Any] | None = Field(None, description="Not supported: must be empty or null.")


class ChatReply(BaseModel):
    """The assistant's message."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One generated reply."""

    index: int
    message: ChatReply
    logprobs: None = None
    finish_reason: Literal["stop", "length"] = Field(
        description="'length' when max_completion_tokens were generated, 'stop' at a stop sequence or the end token."
    )
    request_id: str = Field(description="Refer to it in feedback on this choice.")


class ChatCompletionResponse(BaseModel):
    """OpenAI's ``chat.completion`` object, plus the version and arm that answered."""

    id: str = Field(description="The first choice's request_id: post feedback on it.")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(description="Unix seconds.")
    model: str = Field(description="'<model name>:<version>' that answered ('base' for the base alone).")
    choices: list[ChatChoice]
    usage: CompletionUsage
    model_version: str
    arm: str
