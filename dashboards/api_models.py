"""Request and response shapes of the JSON API (create / update / public, as in the FastAPI template)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DB_INT_MAX = 2**31 - 1  # largest id/offset every supported database takes (PostgreSQL INTEGER)


class ApiIn(BaseModel):
    """Base of request bodies: text with NUL characters is refused here (PostgreSQL text cannot hold NUL)."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in items):
            raise ValueError("must not contain NUL characters")
        return value


Reason = Field(min_length=1, max_length=2000, description="Why: written to the audit log.")
OptionalReason = Field(default="", max_length=2000, description="Why (optional): written to the audit log.")


class LoginIn(ApiIn):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    username: str
    role: str
    disabled: bool = False


class SessionPublic(UserPublic):
    csrf_token: str | None = None  # send back as X-CSRF-Token on mutating requests made with the cookie


class UserCreate(ApiIn):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["viewer", "reviewer", "operator", "admin"]
    reason: str = OptionalReason


class UserUpdate(ApiIn):
    role: Literal["viewer", "reviewer", "operator", "admin"] | None = None
    disabled: bool | None = None
    reason: str = Reason


class TokenCreate(ApiIn):
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


class RevokeIn(ApiIn):
    reason: str = OptionalReason


class RobotCommandIn(ApiIn):
    action: Literal["pause", "resume", "stop", "assign_task", "out_of_rotation"]
    task_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
    instruction: str | None = Field(default=None, max_length=500)
    reason: str = OptionalReason


class FleetCommandIn(ApiIn):
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


class ReviewIn(ApiIn):
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
    reason: str = ""  # why the takeover fired
    channel: str | None = None  # "canary": taken over from a canary version
    start_step: int
    end_step: int
    status: str
    relabel_success: bool | None
    created_at: Any


class ModelActionIn(ApiIn):
    reason: str = Reason


class CanaryStartIn(ApiIn):
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")
    fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of the robots seen recently.")
    robots: list[str] = Field(default_factory=list, max_length=1000, description="Robots always on the canary.")
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


class ErrorPublic(BaseModel):
    """Every refusal of the API (except request validation, 422) has this shape."""

    detail: str = Field(description="What went wrong and, where possible, what to do next.")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error status codes (all `ErrorPublic`)."""
    return {code: {"model": ErrorPublic, "description": ERROR_MEANINGS[code]} for code in codes}


ERROR_MEANINGS = {
    400: "Bad request: the input is well-formed but not acceptable (the detail says why).",
    401: "Not authenticated: log in or send `Authorization: Bearer <token>`.",
    403: "Authenticated but not allowed (role, token scope, robot, or a missing CSRF header).",
    404: "No such resource.",
    409: "Conflict with the current state (e.g. production is pinned, the name exists).",
    413: "The request body is too large.",
    415: "Wrong Content-Type for this route.",
    429: "Too many failed logins (wait for Retry-After seconds) or too many open event streams.",
    503: "A backing service (Kafka, MLflow) is unreachable or not configured.",
}
