"""``Ingress``: the HTTP edge (FastAPI on Ray Serve) in front of the model replicas.

==============================  ========================================================================================
``POST /v1/predict``            classify ``text`` or ``features`` -> label, probabilities, version
``POST /v1/generate``           continue a ``prompt`` -> text, version
``POST /v1/completions``        OpenAI-style completions for the lm head (:mod:`serve._private.completions`)
``POST /v1/chat/completions``   OpenAI-style chat for the lm head, the model's chat template (:mod:`serve._private.chat`)
``POST /v1/feedback``           a :class:`cl.events.FeedbackEvent` -> 202 once Kafka acknowledged it
``GET /v1/models``              registered versions, aliases, what each replica serves and holds
``GET /v1/rollout``             the rollout: traffic split, champion history, what it waits for
``POST /v1/admin/promote``      make a version the champion
``POST /v1/admin/rollback``     take the challenger to 0, or make any earlier version champion
``POST /v1/admin/traffic``      set a challenger's share
``GET /healthz``                liveness
``GET /openapi.json``           the OpenAPI document (``/docs`` renders it)
==============================  ========================================================================================

With ``auth.enabled`` (the default) every route but ``/healthz`` and the docs needs an API key
with the right role, checked by its ``require_role`` dependency (:mod:`serve._private.access`):
401 without a valid key, 403 without the role, 429 for feedback over the per-key rate. Bodies
over ``serve.max_body_bytes`` get 413. Admin actions and refusals go to the audit trail
(``cl audit``) and ``cl.events``.

Every answered request is logged to ``topics.requests`` as a :class:`cl.events.RequestEvent`
keyed by its ``request_id``, after the response is sent (it never delays an answer); the
producer is flushed when the ingress shuts down. The two OpenAI routes also stream
(``stream: true``, :mod:`serve._private.sse`): the text arrives from the replica's
``generate_stream`` as it is generated, and what was sent is logged when the stream ends.
Feedback is different: it is answered 202 only after every in-sync replica of
``topics.feedback`` has it, and 503 otherwise, so a 202 always means "accepted and durable".

Bad input gets 422 with ``{"detail": [{"loc", "field", "msg", "type"}]}``, naming the field.
Every refusal is a :class:`serve._private.errors.Refusal`, raised where it is found (the access
check, the input checks, a replica's error answer, the controller) and answered by one handler.

With rollouts on (``serve.serve_new_versions = false``) every request that pins no version is
routed by the rollout controller's traffic split (:mod:`serve.rollout_controller`): sticky
per ``user_id``, answered with its arm (``champion`` or ``challenger``).
"""

# No ``from __future__ import annotations`` here: Serve re-wraps the route methods, and
# FastAPI must see real classes (not strings) in their signatures.
import asyncio
import functools
import logging
import time
import uuid
from typing import Any, Callable

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from cl.config import Config
from cl.events import FeedbackEvent, RequestEvent, RequestInput, RequestOutput
from cl.security import audit_event
from cl.serving.inference import GenerateItem, InputError, Limits, PredictItem, check_generate, check_predict
from cl.versions import version_order
from serve._private import body_limit, completions, sse
from serve._private import chat as chat_api
from serve._private.access import Access, Caller, require_role
from serve._private.errors import Refusal, validation_error_response
from serve._private.feedback import accept_feedback
from serve._private.metrics import MeasureRequests, record_served
from serve._private.producer_link import ProducerLink
from serve._private.status_board import get_board
from serve._private.traffic import TrafficRouter
from serve.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    FeedbackAccepted,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ModelsResponse,
    PredictRequest,
    PredictResponse,
    PromoteRequest,
    ReplicaState,
    RollbackRequest,
    RolloutDecisions,
    TrafficRequest,
    VersionEntry,
)
from streams.producer import EventProducer

__all__ = ["Ingress", "app"]

logger = logging.getLogger("ray.serve")

LOG_CONNECT_WAIT_S = 5.0
COUNTS_EVERY_S = 0.5  # how often request / error counts go to the rollout controller

app = FastAPI(
    title="cl: online continual-learning service",
    version="1",
    description="A Mixture-of-Experts model that learns from its users' feedback. "
    "Predict or generate, then post feedback on the request_id you got back. "
    "Send an API key (`cl keys create`) as 'Authorization: Bearer <key>'.",
)
app.add_middleware(body_limit.BodyLimit)
app.add_middleware(MeasureRequests)  # outermost: it also counts what BodyLimit refuses


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")
STREAMED = {200: {"description": "With stream: true, server-sent events.", "content": {sse.MEDIA_TYPE: {}}}}


def _shaped(request: Request, response: JSONResponse) -> JSONResponse:
    """An error answer as its path gives them: the OpenAI routes add OpenAI's ``error`` object."""
    return completions.with_openai_error(response) if request.url.path.endswith(OPENAI_PATHS) else response


def _unreachable(error: Exception) -> dict[str, Any]:
    """The answer of a replica that died or could not be reached: a retryable 503."""
    logger.warning("model replica call failed: %s", error)
    return {
        "error": {
            "status": 503,
            "field": "",
            "message": f"no model replica could answer ({type(error).__name__}); retry in a moment",
        }
    }


@app.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _shaped(request, validation_error_response(request.url.path, exc))


@app.exception_handler(Refusal)
async def _refused(request: Request, refusal: Refusal) -> JSONResponse:
    return _shaped(request, refusal.response())


# Everything the class uses must be defined above it: ``serve.ingress`` captures the class
# (and the module globals its methods see) when the decorator runs.
@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    """Validates, routes to the model replicas, logs requests and takes feedback.

    Args:
        replica: Handle to the ``ModelReplica`` deployment.
        config: ``Config.to_dict()`` of the service.
        batching: Call the replicas' batched methods (else their unbatched twins).
    """

    def __init__(self, replica: DeploymentHandle, config: dict[str, Any], batching: bool = True) -> None:
        from cl.model.base_model import base_model_config, build_tokenizer
        from cl.registry import AdapterRegistry
        from cl.serving.chat import DEFAULT_TEMPLATE, compile_template

        self.config = Config.from_dict(config)
        cfg = self.config
        body_limit.configure(cfg.serve.max_body_bytes)
        self.access = Access(cfg, announce=self._announce)
        self.replica = replica
        self.batching = batching
        self.limits = Limits.from_serve(cfg.serve)
        self.model_config = base_model_config(cfg.model, cfg.serve.adapter_cache_size)
        self.tokenizer = build_tokenizer(cfg.model)  # the chat template's, for /v1/chat/completions
        compile_template(self.tokenizer.chat_template or DEFAULT_TEMPLATE)  # a broken template fails here, at start
        self.registry = AdapterRegistry(cfg.mlflow.tracking_uri, cfg.mlflow.model_name)
        self.board = get_board(cfg.app)
        bootstrap = cfg.kafka.bootstrap_servers
        self.kafka = ProducerLink(
            lambda: EventProducer(bootstrap, client_id=f"{cfg.app}-ingress"), what=f"Kafka at {bootstrap}"
        )  # connects in the background from now on
        self.logged = 0
        self.log_failures = 0
        self.router = TrafficRouter(memory=cfg.rollout.memory_users)
        self.controller = None
        self._tasks: list[asyncio.Task] = []
        if not cfg.serve.serve_new_versions:
            from serve.rollout_controller import get_controller

            self.controller = get_controller(cfg)

    # -- rollout ----------------------------------------------------------------------------

    async def _route(self, user_id: Any, pinned: Any) -> tuple[Any, str]:
        """``(version, arm)`` for a request; starts following the controller on first use."""
        if self.controller is not None and not self._tasks:
            try:
                self.router.apply(await self.controller.routing.remote(-2, 0.0))
            except Exception as e:  # noqa: BLE001 - serve the champion until the controller answers
                logger.warning("rollout controller not answering yet: %s", e)
            self._tasks = [asyncio.create_task(self._follow_routing()), asyncio.create_task(self._report_counts())]
        return self.router.route(user_id, pinned)

    async def _follow_routing(self) -> None:
        while True:
            try:
                self.router.apply(await self.controller.routing.remote(self.router.epoch, 10.0))
            except Exception as e:  # noqa: BLE001 - controller restarting: keep the last split
                logger.warning("rollout routing: %s", e)
                await asyncio.sleep(0.5)

    async def _report_counts(self) -> None:
        while True:
            await asyncio.sleep(COUNTS_EVERY_S)
            counts = self.router.take_counts()
            if counts:
                try:
                    await self.controller.record_requests.remote(counts)
                except Exception as e:  # noqa: BLE001
                    logger.warning("rollout request counts lost: %s", e)

    async def _call_replica(self, method: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """The replica's answer; a replica that died or could not be reached answers a retryable 503."""
        try:
            return await method.remote(payload)
        except Exception as e:  # noqa: BLE001 - Ray raises ActorDiedError, RayActorError, ... while Serve replaces it
            return _unreachable(e)

    async def _first_message(self, stream: Any) -> dict[str, Any]:
        """A replica stream's first message (its version, or its error), like :meth:`_call_replica`'s answer."""
        try:
            return await stream.__anext__()
        except Exception as e:  # noqa: BLE001 - as in _call_replica; StopAsyncIteration too
            return _unreachable(e)

    def _count(self, version: Any, result: dict[str, Any]) -> None:
        error = result.get("error")
        if version is not None and (error is None or int(error.get("status", 500)) >= 500):
            self.router.count(version, ok=error is None)

    async def _infer(
        self, request: Request, kind: str, user_id: Any, pinned: Any, payloads: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str]:
        """The one path of every inference endpoint: route, call the replicas, count, note what served.

        Args:
            request: The HTTP request (the metrics note the version and arm on it).
            kind: The replicas' method, ``predict`` or ``generate`` (batched, or its unbatched twin).
            user_id: Who asks; the rollout keeps a user on one arm.
            pinned: The version the request pins, or None to follow the traffic split.
            payloads: One replica call each, all to the same version (a completion's choices).

        Returns:
            The replicas' answers, in order, and the arm that served them.

        Raises:
            Refusal: The first error answer: 422 for the request, 503 (retry) when no replica could answer.
        """
        version, arm = await self._route(user_id, pinned)
        method = getattr(self.replica, kind if self.batching else f"{kind}_unbatched")
        results = await asyncio.gather(*(self._call_replica(method, {**p, "model_version": version}) for p in payloads))
        for result in results:
            self._count(version, result)
        failed = next((r["error"] for r in results if "error" in r), None)
        if failed is not None:
            raise Refusal.from_replica(failed)
        record_served(request, results[0]["model_version"], arm)
        return results, arm

    async def _infer_stream(
        self, request: Request, user_id: Any, pinned: Any, payloads: list[dict[str, Any]]
    ) -> tuple[list[Any], list[str], str]:
        """:meth:`_infer` for streamed generations: open one replica stream per payload.

        Returns:
            The streams, past their first message; the version each runs; the arm.

        Raises:
            Refusal: As :meth:`_infer`, before anything is sent: the first message of every
                stream says whether its request was accepted.
        """
        version, arm = await self._route(user_id, pinned)
        method = self.replica.options(stream=True).generate_stream
        streams = [method.remote({**p, "model_version": version}) for p in payloads]
        firsts = await asyncio.gather(*(self._first_message(s) for s in streams))
        for first in firsts:
            self._count(version, first)
        failed = next((f["error"] for f in firsts if "error" in f), None)
        if failed is not None:
            for stream in streams:
                stream.cancel()
            raise Refusal.from_replica(failed)
        record_served(request, firsts[0]["model_version"], arm)
        return streams, [f["model_version"] for f in firsts], arm

    async def _admin(self, caller: Caller, action: str, body: Any, call: Callable[[], Any]) -> RolloutDecisions:
        """Run an admin ``call`` on the controller for an admitted caller; audit what happened."""
        details = body.model_dump()
        if self.controller is None:
            await self.access.record(action, caller.actor, "409 rollouts off", details)
            raise Refusal(
                409,
                "serve.serve_new_versions",
                "rollouts are off: each new version serves at once; "
                "set serve.serve_new_versions = false to run canary rollouts",
            )
        try:
            decisions = await call()
        except Exception as e:  # noqa: BLE001 - the actor's ValueError names the problem
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, ValueError):
                message = str(cause).splitlines()[-1]
                await self.access.record(action, caller.actor, "422 refused", {**details, "message": message})
                raise Refusal(422, "version", message) from e
            await self.access.record(action, caller.actor, f"500 {type(e).__name__}", details)
            raise
        await self.access.record(action, caller.actor, "ok", {**details, "decisions": decisions})
        self.router.apply(await self.controller.routing.remote(-2, 0.0))  # this replica knows at once
        return RolloutDecisions(decisions=decisions)

    def _announce(self, record: dict[str, Any]) -> None:
        """Publish an audit record on ``cl.events`` if Kafka is connected (the file has it anyway)."""
        try:
            self.kafka.get(timeout_s=0).send(self.config.topics.events, audit_event(record))
        except Exception as e:  # noqa: BLE001
            logger.warning("audit record %s not announced on %s: %s", record.get("seq"), self.config.topics.events, e)

    # -- Kafka ----------------------------------------------------------------------------

    def _log_request(self, **fields: Any) -> None:
        """Queue a ``RequestEvent`` of ``fields`` on the requests topic, keyed by request id.

        Runs after the response is sent, in a worker thread; failures are counted and logged.
        """
        request_id = fields["request_id"]
        try:
            event = RequestEvent(**fields)
            future = self.kafka.get(timeout_s=LOG_CONNECT_WAIT_S).send(
                self.config.topics.requests, event, key=request_id
            )
        except Exception as e:  # noqa: BLE001 - logging must not fail the request
            self._log_failed(e, request_id)
            return
        self.logged += 1
        future.add_errback(lambda error: self._log_failed(error, request_id))

    def _log_generation(
        self, job: completions.Job, text: str, request_id: str, version: str, arm: str, user_id: str | None
    ) -> None:
        """Log one served choice of a completion or chat: its prompt (a chat's rendered) and its text."""
        self._log_request(
            request_id=request_id,
            kind="generate",
            input=RequestInput(text=job.prompt),
            output=RequestOutput(text=text),
            model_version=version,
            arm=arm,
            user_id=user_id,
        )

    def _log_failed(self, error: Exception, request_id: str) -> None:
        self.log_failures += 1
        logger.warning("request %s not logged to %s: %s", request_id, self.config.topics.requests, error)

    # -- endpoints --------------------------------------------------------------------------

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        summary="Classify text or a feature vector",
        dependencies=[require_role("predict", PredictRequest)],
    )
    async def predict(self, body: PredictRequest, background: BackgroundTasks, request: Request) -> Any:
        try:
            check_predict(
                PredictItem(text=body.text, features=body.features), self.model_config, self.limits, self.tokenizer
            )
        except InputError as e:
            raise Refusal(422, e.field, e.message) from e
        payload = {"text": body.text, "features": body.features}
        [result], arm = await self._infer(request, "predict", body.user_id, body.model_version, [payload])
        response = PredictResponse(
            request_id=uuid.uuid4().hex,
            label=result["label"],
            probabilities=result["probabilities"],
            model_version=result["model_version"],
            arm=arm,
        )
        background.add_task(
            self._log_request,
            request_id=response.request_id,
            kind="predict",
            input=RequestInput(text=body.text, features=body.features),
            output=RequestOutput(label=response.label, probabilities=response.probabilities),
            model_version=response.model_version,
            arm=arm,
            user_id=body.user_id,
        )
        return response

    @app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        summary="Continue a prompt",
        dependencies=[require_role("predict", GenerateRequest)],
    )
    async def generate(self, body: GenerateRequest, background: BackgroundTasks, request: Request) -> Any:
        item = GenerateItem(
            prompt=body.prompt,
            max_new_tokens=body.max_new_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
        )
        try:
            check_generate(item, self.model_config, self.limits, self.tokenizer)
        except InputError as e:
            raise Refusal(422, e.field, e.message) from e
        payload = body.model_dump(exclude={"user_id", "model_version"})
        [result], arm = await self._infer(request, "generate", body.user_id, body.model_version, [payload])
        response = GenerateResponse(
            request_id=uuid.uuid4().hex, text=result["text"], model_version=result["model_version"], arm=arm
        )
        background.add_task(
            self._log_request,
            request_id=response.request_id,
            kind="generate",
            input=RequestInput(text=body.prompt),
            output=RequestOutput(text=response.text),
            model_version=response.model_version,
            arm=arm,
            user_id=body.user_id,
        )
        return response

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        summary="Complete a prompt, as OpenAI's completions API does (lm head)",
        dependencies=[require_role("predict", CompletionRequest)],
        responses=STREAMED,
    )
    async def complete(self, body: CompletionRequest, background: BackgroundTasks, request: Request) -> Any:
        try:
            pinned = completions.pinned_version(body, self.config.mlflow.model_name)
            jobs = completions.plan(body)
            for job in jobs:
                check_generate(job.item, self.model_config, self.limits, self.tokenizer)
        except InputError as e:
            raise Refusal(422, completions.FIELD_NAMES.get(e.field, e.field), e.message) from e
        return await self._openai_answer(request, background, body, jobs, pinned, chat=False)

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        summary="Reply to a chat, as OpenAI's chat completions API does (lm head, the model's chat template)",
        dependencies=[require_role("predict", ChatCompletionRequest)],
        responses=STREAMED,
    )
    async def chat_complete(self, body: ChatCompletionRequest, background: BackgroundTasks, request: Request) -> Any:
        try:
            pinned = chat_api.pinned_version(body, self.config.mlflow.model_name)
            jobs = chat_api.plan(body, chat_api.render(body, self.tokenizer))
            for job in jobs:
                check_generate(job.item, self.model_config, self.limits, self.tokenizer)
        except InputError as e:
            raise Refusal(422, chat_api.field_name(body, e.field), e.message) from e
        return await self._openai_answer(request, background, body, jobs, pinned, chat=True)

    async def _openai_answer(
        self,
        request: Request,
        background: BackgroundTasks,
        body: CompletionRequest | ChatCompletionRequest,
        jobs: list[completions.Job],
        pinned: str | None,
        *,
        chat: bool,
    ) -> Any:
        """Run a completion's or chat's checked jobs and answer: whole, or streamed as generated."""
        payloads = [completions.payload(j) for j in jobs]
        if body.stream:
            return await self._streamed_answer(request, body, jobs, pinned, payloads, chat=chat)
        results, arm = await self._infer(request, "generate", body.user, pinned, payloads)
        served = completions.ServedAs(self.config.mlflow.model_name, results[0]["model_version"], arm)
        request_ids = [uuid.uuid4().hex for _ in jobs]
        texts = [r["text"] for r in results]
        if chat:
            response: Any = chat_api.respond(body, jobs, texts, request_ids, served)  # type: ignore[arg-type]
            served_texts = [c.message.content for c in response.choices]
        else:
            response = completions.respond(body, jobs, texts, request_ids, served)  # type: ignore[arg-type]
            served_texts = [c.text for c in response.choices]
        for job, text, request_id, result in zip(jobs, served_texts, request_ids, results):
            # each as the replica that ran it says
            background.add_task(self._log_generation, job, text, request_id, result["model_version"], arm, body.user)
        return response

    async def _streamed_answer(
        self,
        request: Request,
        body: CompletionRequest | ChatCompletionRequest,
        jobs: list[completions.Job],
        pinned: str | None,
        payloads: list[dict[str, Any]],
        *,
        chat: bool,
    ) -> StreamingResponse:
        """The server-sent events of ``stream: true``; each choice is logged with what it sent."""
        streams, versions, arm = await self._infer_stream(request, body.user, pinned, payloads)
        choices = [sse.StreamedChoice(job, uuid.uuid4().hex, stream) for job, stream in zip(jobs, streams)]
        loop = asyncio.get_running_loop()

        def log(texts: list[str]) -> None:  # in a worker thread: the producer may wait for Kafka
            for choice, text, version in zip(choices, texts, versions):
                log_one = functools.partial(
                    self._log_generation, choice.job, text, choice.request_id, version, arm, body.user
                )
                loop.run_in_executor(None, log_one)

        options = body.stream_options
        events = sse.stream_events(
            chat=chat,
            choices=choices,
            served=completions.ServedAs(self.config.mlflow.model_name, versions[0], arm),
            created=int(time.time()),
            stop=body.stop,
            include_usage=bool(options and options.include_usage),
            on_end=log,
        )
        return StreamingResponse(events, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)

    @app.post(
        "/v1/feedback",
        status_code=202,
        response_model=FeedbackAccepted,
        summary="Rate a served request",
        responses={
            503: {"description": "Kafka did not acknowledge the feedback; nothing was accepted, retry."},
            429: {"description": "More feedback from this key than auth.feedback_rate_per_s; retry after Retry-After."},
        },
        dependencies=[require_role("feedback", FeedbackEvent)],
    )
    async def feedback(self, body: FeedbackEvent) -> Any:
        return await accept_feedback(self.kafka, self.config.topics.feedback, body)

    @app.get(
        "/v1/models",
        response_model=ModelsResponse,
        summary="Versions, aliases and what is served",
        dependencies=[require_role(None)],
    )
    async def models(self) -> Any:
        try:
            versions = await asyncio.to_thread(self.registry.list_versions)
        except Exception as e:  # noqa: BLE001 - MLflow down: serving goes on, this listing cannot
            logger.warning("model registry not answering: %s", e)
            raise Refusal(
                503,
                "",
                f"the model registry at {self.config.mlflow.tracking_uri} does not answer ({type(e).__name__}); "
                "serving goes on, retry later",
                type="registry_unavailable",
                loc=[],
                retry_after=5,
            ) from e
        replicas = [
            ReplicaState(**{k: s[k] for k in ReplicaState.model_fields}) for s in await self.board.snapshot.remote()
        ]
        aliases = {alias: v.version for v in versions for alias in v.aliases}
        return ModelsResponse(
            model_name=self.config.mlflow.model_name,
            base_version=self.config.model.base_version,
            versions=[
                VersionEntry(version=v.version, aliases=list(v.aliases), tags=v.tags, created_ms=v.created_ms)
                for v in versions
            ],
            aliases=aliases,
            serving=sorted({r.current_version for r in replicas}, key=version_order),
            replicas=replicas,
        )

    @app.get(
        "/v1/rollout",
        summary="The rollout: traffic split, champion history, what it waits for",
        dependencies=[require_role(None)],
    )
    async def rollout(self) -> Any:
        if self.controller is None:
            return {"enabled": False, "reason": "serve.serve_new_versions = true: each new version serves at once"}
        return {"enabled": True, **await self.controller.status.remote()}

    @app.post("/v1/admin/promote", response_model=RolloutDecisions, summary="Make a version the champion")
    async def admin_promote(self, body: PromoteRequest, caller: Caller = require_role("admin", PromoteRequest)) -> Any:
        return await self._admin(caller, "promote", body, lambda: self.controller.promote.remote(body.version))

    @app.post(
        "/v1/admin/rollback",
        response_model=RolloutDecisions,
        summary="Roll the challenger back, or make any earlier version the champion",
    )
    async def admin_rollback(
        self, body: RollbackRequest, caller: Caller = require_role("admin", RollbackRequest)
    ) -> Any:
        return await self._admin(caller, "rollback", body, lambda: self.controller.rollback.remote(body.to_version))

    @app.post("/v1/admin/traffic", response_model=RolloutDecisions, summary="Set a challenger's share of traffic")
    async def admin_traffic(self, body: TrafficRequest, caller: Caller = require_role("admin", TrafficRequest)) -> Any:
        return await self._admin(
            caller, "traffic", body, lambda: self.controller.set_traffic.remote(body.version, body.weight)
        )

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness")
    async def healthz(self) -> HealthResponse:
        return HealthResponse(
            status="ok",
            app=self.config.app,
            kafka_connected=self.kafka.connected,
            requests_logged=self.logged,
            request_log_failures=self.log_failures,
        )

    def __del__(self) -> None:
        kafka = getattr(self, "kafka", None)
        if kafka is not None:
            try:
                kafka.close(timeout_s=10.0)  # flush the request log
            except Exception as e:  # noqa: BLE001
                logger.warning("request log producer did not flush cleanly: %s", e)
