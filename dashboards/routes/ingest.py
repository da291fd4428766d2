"""Robot data over HTTPS: a robot without direct Kafka access posts its messages here (robot tokens only).

The body is one fleet wire message (`fleet.schemas.encode`, `Content-Type: application/msgpack`): a trajectory
segment, correction, reward signal or heartbeat. The token must be a `robot:produce` token bound to the URL's
robot, and the message must be about that robot too; the dashboard then publishes it on the message's topic,
keyed by robot id, exactly as a robot on the Kafka network would.

The 202 comes only once Kafka has stored the message (acks=all), so a dashboard that dies after answering loses
nothing. While the broker cannot store it (an outage, a full queue) the answer is a 503 within
`DashboardConfig.ingest_ack_timeout_s`: the robot keeps the message in its own spool and sends it again; should
the first copy arrive after all, consumers drop the duplicate (segments are keyed by episode and index).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from dashboards.api_models import error_responses
from dashboards.deps import RobotProducer, ServicesDep
from dashboards.errors import BadRequest, Forbidden, PayloadTooLarge, Unavailable, UnsupportedMediaType
from fleet.schemas import Correction, Heartbeat, RewardSignal, SchemaError, TrajectorySegment, decode

router = APIRouter(tags=["robots"])
ROBOT_KINDS = {cls.KIND: cls for cls in (TrajectorySegment, Correction, RewardSignal, Heartbeat)}
MAX_BODY_BYTES = 8 * 1024 * 1024  # TransportConfig.max_request_bytes: the largest message the topics take
MEDIA_TYPES = ("application/msgpack", "application/x-msgpack", "application/octet-stream")


class MessageAccepted(BaseModel):
    kind: str
    topic: str
    robot_id: str
    partition: int | None  # where Kafka stored it
    offset: int | None


async def _body(request: Request) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"send the message as application/msgpack (fleet.schemas.encode), not {media!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"message of {declared} B exceeds {MAX_BODY_BYTES} B")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"message exceeds {MAX_BODY_BYTES} B")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/robots/{robot_id}/messages",
    response_model=MessageAccepted,
    status_code=202,
    responses=error_responses(413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def post_message(robot_id: str, request: Request, services: ServicesDep, robot: RobotProducer) -> Any:
    """Publish one of this robot's messages (segment, correction, reward, heartbeat) on its Kafka topic; answered
    once Kafka has stored it."""
    body = await _body(request)
    try:
        message = await asyncio.to_thread(decode, body)  # zstd/PNG decoding must not stall the event loop
    except SchemaError as e:
        raise BadRequest(f"not a valid fleet message: {e}") from None
    if message.KIND not in ROBOT_KINDS:
        raise Forbidden(f"robots may send {', '.join(sorted(ROBOT_KINDS))} messages, not {message.KIND!r}")
    about = getattr(message, "robot_id", None)
    if about != robot_id:
        raise Forbidden(f"this message is about robot {about!r}; this token and URL speak for {robot_id!r} only")
    stored = await services.publish_durably(message)
    return MessageAccepted(
        kind=message.KIND, topic=stored.topic, robot_id=robot_id, partition=stored.partition, offset=stored.offset
    )


@router.get("/robots/{robot_id}/commands", responses=error_responses(503))
def robot_commands(robot_id: str, services: ServicesDep, robot: RobotProducer, after: float = 0.0) -> Any:
    """This robot's commands created after `after` (seconds, its own clock), oldest first: how a robot that posts
    through the dashboard hears its operators (a Kafka robot consumes `fleet.commands` itself)."""
    if services.command_feed is None:
        raise Unavailable("this dashboard does not follow fleet.commands (no broker configured)")
    return {"commands": [c.model_dump(mode="json") for c in services.command_feed.since(robot_id, after)]}
