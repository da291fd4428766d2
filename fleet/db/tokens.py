"""API tokens as every service checks them: only a token's sha256 is stored, and a revoked token is no token.

The dashboard issues and revokes them (dashboards/crud.py); it and the policy server (`fleet serve`) look them up
here, so the rule is written once.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.db.models import ApiToken

MODELS_READ = "models:read"  # read model versions and aliases (and get actions from the policy server)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find_token(session: Session, *, plaintext: str) -> ApiToken | None:
    """The active token with this plaintext (None: unknown or revoked)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(plaintext)))
    return row if row is not None and row.revoked_at is None else None
