"""The model registry as the dashboard sees it: an interface, a loader and one normalized view.

The real client is `fleet.registry.Registry` (MLflow model registry); tests inject a fake through
`create_app(..., registry=...)`. Version objects are read leniently (attributes or mapping keys,
MLflow-style `tags` as a fallback) so the page keeps working while the registry grows fields.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fleet.naming import version_number
from fleet.registry_views import OperatorRegistry
from fleet.settings import Settings

log = logging.getLogger(__name__)


def load_registry(settings: Settings) -> OperatorRegistry | None:
    """`fleet.registry.Registry(settings)`, or None (model routes answer 503) when it is unavailable."""
    try:
        from fleet.registry import Registry  # type: ignore[import-not-found,unused-ignore]
    except ImportError as e:
        log.warning("model registry client not available (%s): the models page is read-only empty", e)
        return None
    return Registry(settings)  # type: ignore[no-any-return]


def _get(obj: Any, *names: str) -> Any:
    tags = _field(obj, "tags") or {}
    for name in names:
        value = _field(obj, name)
        if value is None and isinstance(tags, Mapping):
            value = tags.get(name)
        if value is not None:
            return value
    return None


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _metrics(obj: Any) -> dict[str, float]:
    raw = _get(obj, "eval_metrics", "metrics") or {}
    out: dict[str, float] = {}
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            try:
                out[str(key)] = float(value)
            except (TypeError, ValueError):
                continue
    tags = _field(obj, "tags") or {}
    if isinstance(tags, Mapping):
        for key, value in tags.items():
            if str(key).startswith("eval/") and str(key) not in out:
                try:
                    out[str(key)] = float(value)
                except (TypeError, ValueError):
                    continue
    return out


def _time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float):  # MLflow gives milliseconds since the epoch
        seconds = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    return str(value)


def version_view(obj: Any) -> dict[str, Any]:
    """One version as the API returns it."""
    count = _get(obj, "correction_count", "corrections", "correction_ids")
    gate = _get(obj, "gate_passed")
    return {
        "version": str(_get(obj, "version")),
        "parent_version": _get(obj, "parent_version", "parent"),
        "created_at": _time(_get(obj, "created_at", "creation_timestamp")),
        "eval_metrics": _metrics(obj),
        "correction_count": int(count) if count is not None else None,
        "data_window": _get(obj, "data_window", "data_offsets") or None,
        "gate_passed": gate if isinstance(gate, bool) else (str(gate).lower() == "true" if gate is not None else None),
        "sha256": _get(obj, "sha256"),
    }


def version_key(version: str) -> tuple[int, str]:
    """Numeric MLflow versions sort as numbers."""
    number = version_number(version)
    return (number, "") if number is not None else (1 << 62, version)


def call_registry(registry: OperatorRegistry | None, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a registry method, turning its failures into dashboard errors (404 / 409 / 503)."""
    from dashboards.errors import Conflict, DashboardError, NotFound, Unavailable

    if registry is None:
        raise Unavailable(
            "the model registry is not available: run `fleet up` (MLflow) or set FLEET_MLFLOW_TRACKING_URI"
        )
    try:
        return getattr(registry, method)(*args, **kwargs)
    except DashboardError:
        raise
    except LookupError as e:
        raise NotFound(f"registry: {e}") from None
    except ValueError as e:  # e.g. production is pinned, or the version failed its gate
        raise Conflict(f"registry refused: {e}") from None
    except RuntimeError as e:  # fleet.registry.RegistryError: unreachable (503) or refused (409)
        if type(e).__name__.endswith("RegistryError") and "MLflow registry at" not in str(e):
            raise Conflict(f"registry refused: {e}") from None
        log.warning("registry call %s failed: %s", method, e)
        raise Unavailable(str(e)) from None
    except Exception as e:
        log.warning("registry call %s failed: %s", method, e)
        raise Unavailable(f"registry call {method} failed: {type(e).__name__}: {e}") from None
