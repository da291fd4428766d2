"""Correction review queue: list/filter, frames as PNG, actions as SVG, and verdicts (reviewer)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from dashboards import crud, review
from dashboards.api_models import DB_INT_MAX, CorrectionPublic, ReviewIn
from dashboards.charts import actions_svg
from dashboards.deps import ReviewerUser, ServicesDep, SessionDep, ViewerUser
from dashboards.outbox import Outbox
from fleet.db import Correction

router = APIRouter(prefix="/corrections", tags=["corrections"])


def _cache(request: Request) -> review.EpisodeCache:
    return request.app.state.episode_cache  # type: ignore[no-any-return]


@router.get("", response_model=list[CorrectionPublic])
def list_corrections(
    session: SessionDep,
    user: ViewerUser,
    status: str | None = "pending",
    robot_id: str | None = None,
    task: str | None = None,
    version: str | None = None,
    limit: int = 100,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> Any:
    """Newest first; `status=all` lists every status."""
    query = select(Correction).order_by(Correction.created_at.desc(), Correction.id.desc())
    if status and status != "all":
        query = query.where(Correction.status == status)
    if robot_id:
        query = query.where(Correction.robot_id == robot_id)
    if task:
        query = query.where(Correction.task == task)
    if version:
        query = query.where(Correction.model_version == version)
    return list(session.scalars(query.limit(min(max(limit, 1), 500)).offset(offset)))


@router.get("/{correction_id}")
def get_correction(correction_id: str, request: Request, session: SessionDep, user: ViewerUser) -> dict[str, Any]:
    row = review.get_correction(session, correction_id)
    public = CorrectionPublic.model_validate(row).model_dump()
    return {**public, **review.detail(session, _cache(request), row)}


@router.get("/{correction_id}/frames/{step}.png", response_class=Response)
def frame(
    correction_id: str, step: int, request: Request, session: SessionDep, user: ViewerUser, camera: str | None = None
) -> Response:
    row = review.get_correction(session, correction_id)
    png = review.frame_png(_cache(request), row, step=step, camera=camera)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/{correction_id}/actions.svg", response_class=Response)
def actions_plot(correction_id: str, request: Request, session: SessionDep, user: ViewerUser) -> Response:
    row = review.get_correction(session, correction_id)
    actions, intervention, first = review.actions_window(_cache(request), row)
    return Response(actions_svg(actions, intervention, step_offset=first), media_type="image/svg+xml")


@router.post("/{correction_id}/review")
def review_correction(
    correction_id: str, body: ReviewIn, services: ServicesDep, session: SessionDep, user: ReviewerUser
) -> dict[str, Any]:
    """approve / reject / relabel success: updates the queue and tells the learner (a `Review` on fleet.reviews)."""
    services.require_transport()
    row = review.get_correction(session, correction_id)
    previous = row.status
    _, message = review.apply_review(
        session, row, principal=user, decision=body.decision, success=body.success, reason=body.reason
    )
    Outbox.add(session, message)  # published once this transaction commits, never if it does not
    crud.audit(
        session,
        principal=user,
        action=f"review.{body.decision}",
        target=f"correction:{row.id}",
        reason=body.reason or None,
        details={
            "previous_status": previous,
            "status": row.status,
            "success": body.success,
            "robot_id": row.robot_id,
            "episode_id": row.episode_id,
        },
    )
    session.commit()
    services.outbox.relay_soon()  # never raises: the verdict is committed whatever Kafka says now
    return CorrectionPublic.model_validate(row).model_dump()
