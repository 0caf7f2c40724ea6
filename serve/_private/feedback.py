"""Accepting feedback: 202 only once Kafka has it from every in-sync replica, else 503."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse

from cl.events import FeedbackEvent
from serve._private.producer_link import ProducerLink
from serve.schemas import FeedbackAccepted
from streams.errors import ProduceError

__all__ = ["accept_feedback"]

CONNECT_WAIT_S = 5.0
ACK_TIMEOUT_S = 10.0


async def accept_feedback(
    link: ProducerLink,
    topic: str,
    event: FeedbackEvent,
    *,
    connect_wait_s: float = CONNECT_WAIT_S,
    ack_timeout_s: float = ACK_TIMEOUT_S,
) -> FeedbackAccepted | JSONResponse:
    """Produce ``event`` to ``topic`` keyed by its ``request_id`` and wait for ``acks=all``.

    Args:
        link: The ingress's producer.
        topic: The feedback topic.
        event: Validated feedback.
        connect_wait_s: How long to wait for a Kafka connection in progress.
        ack_timeout_s: How long to wait for the acknowledgement.

    Returns:
        ``FeedbackAccepted`` (the route answers 202) when Kafka acknowledged the event,
        otherwise a 503 response saying nothing was stored.
    """
    try:
        producer = await asyncio.to_thread(link.get, connect_wait_s)
        await asyncio.to_thread(producer.send_and_wait, topic, event, key=event.request_id, timeout_s=ack_timeout_s)
    except ProduceError as e:
        return JSONResponse(
            status_code=503,
            content={"detail": f"feedback not accepted: Kafka is unavailable ({e}); nothing was stored, retry later"},
            headers={"Retry-After": "5"},
        )
    return FeedbackAccepted(event_id=event.event_id, request_id=event.request_id)
