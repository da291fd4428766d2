"""Request and response shapes of the JSON API (create / update / public, as in the FastAPI template)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Reason = Field(min_length=1, max_length=2000, description="Why: written to the audit log.")
OptionalReason = Field(default="", max_length=2000, description="Why (optional): written to the audit log.")


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    username: str
    role: str
    disabled: bool = False


class SessionPublic(UserPublic):
    csrf_token: str | None = None  # send back as X-CSRF-Token on mutating requests made with the cookie


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["viewer", "reviewer", "operator", "admin"]
    reason: str = OptionalReason


class UserUpdate(BaseModel):
    role: Literal["viewer", "reviewer", "operator", "admin"] | None = None
    disabled: bool | None = None
    reason: str = Reason


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(min_length=1, description="e.g. ['robot:produce', 'models:read'] or ['role:viewer']")
    robot_id: str | None = Field(default=None, max_length=64, description="Robot tokens: the robot it speaks for.")
    reason: str = OptionalReason


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    scopes: str
    robot_id: str | None
    revoked: bool = False


class TokenCreated(TokenPublic):
    token: str  # shown once; only its sha256 is stored


class RevokeIn(BaseModel):
    reason: str = OptionalReason


class RobotCommandIn(BaseModel):
    action: Literal["pause", "resume", "stop", "assign_task", "out_of_rotation"]
    task_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    instruction: str | None = Field(default=None, max_length=500)
    reason: str = OptionalReason


class FleetCommandIn(BaseModel):
    action: Literal["pause", "resume", "stop"]
    reason: str = OptionalReason


class CommandPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    command_id: str
    robot_id: str
    action: str
    issued_by: str
    issued_at: float
    task_id: str | None = None
    instruction: str | None = None
    status: str
    applied_at: float | None = None
    error: str | None = None


class ReviewIn(BaseModel):
    decision: Literal["approve", "reject", "relabel"]
    success: bool | None = Field(default=None, description="relabel only: the episode's corrected outcome")
    reason: str = OptionalReason


class CorrectionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    robot_id: str
    episode_id: str
    task: str
    model_version: str | None
    operator: str
    start_step: int
    end_step: int
    status: str
    relabel_success: bool | None
    created_at: Any


class ModelActionIn(BaseModel):
    reason: str = Reason


class AuditPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    created_at: Any
    actor: str
    role: str
    action: str
    target: str
    reason: str | None
    details: dict[str, Any]
