"""MLflow with authentication: every caller logs in, each service as its own user with only the permissions it uses.

Production runs MLflow's basic-auth app (`mlflow server --app-name basic-auth`) with `default_permission =
NO_PERMISSIONS`: a caller without a password gets a 401, a user gets only what was granted to it. The MLflow admin
(MLFLOW_ADMIN_PASSWORD, the `mlflow-setup` job only) creates the learner's experiment and the fleet's registered
model, one user per service, and these grants (`fleet models setup-users`):

    learner     MANAGE the experiment and the registered model: its runs, versions, tags and aliases
    dashboard   READ the experiment (the training curves), EDIT the registered model (promote, roll back, pin)
    robots      READ both: find the production version and download its weights, nothing else

A service passes its user as MLflow's own MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. The local stack
(`fleet up`) runs MLflow without authentication unless `FLEET_MLFLOW_ADMIN_PASSWORD` is set (tests, a staging box).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# service -> MLflow resource type -> permission (mlflow.server.auth.permissions)
SERVICE_PERMISSIONS: dict[str, dict[str, str]] = {
    "learner": {"experiment": "MANAGE", "registered_model": "MANAGE"},
    "dashboard": {"experiment": "READ", "registered_model": "EDIT"},
    "robots": {"experiment": "READ", "registered_model": "READ"},
}
ADMIN_USERNAME = "admin"


def auth_ini(database_uri: str) -> str:
    """The basic-auth app's configuration: nothing for anyone without a grant; the admin's password comes from
    MLFLOW_AUTH_ADMIN_PASSWORD (never from this file)."""
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )


def setup_users(
    tracking_uri: str, passwords: Mapping[str, str], *, experiment: str, model_name: str
) -> dict[str, dict[str, str]]:
    """As the MLflow admin (MLFLOW_TRACKING_USERNAME / _PASSWORD): create the experiment and the registered model
    if absent, each service's user (or set its password again: rotation), and grant exactly SERVICE_PERMISSIONS.
    Returns service -> resource type -> permission granted."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    unknown = set(passwords) - set(SERVICE_PERMISSIONS)
    if unknown:
        raise ValueError(f"no MLflow permissions defined for {sorted(unknown)}; known: {sorted(SERVICE_PERMISSIONS)}")
    from fleet.mlflow_client import mlflow_client

    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    resources = {"experiment": experiment_id, "registered_model": model_name}
    auth = AuthServiceClient(tracking_uri)
    granted: dict[str, dict[str, str]] = {}
    for service, password in passwords.items():
        if len(password) < 16:
            raise ValueError(f"the MLflow password of {service} must be at least 16 characters")
        _create_or_replace(  # an existing user gets the password again: rotation
            functools.partial(auth.create_user, service, password),
            functools.partial(auth.update_user_password, service, password),
        )
        for kind, permission in SERVICE_PERMISSIONS[service].items():
            grant = functools.partial(auth.grant_user_permission, service, kind, resources[kind], permission)
            revoke = functools.partial(auth.revoke_user_permission, service, kind, resources[kind])
            _create_or_replace(grant, revoke, grant)  # granted before: replaced, so the grant is exactly this one
        granted[service] = dict(SERVICE_PERMISSIONS[service])
        log.info("MLflow user %s: %s", service, granted[service])
    return granted


def _create_or_replace(create: Callable[[], object], *replace: Callable[[], object]) -> None:
    """`create()`, or each of `replace` in turn when the server answers that the thing already exists."""
    from mlflow.exceptions import RestException

    try:
        create()
    except RestException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        for step in replace:
            step()
