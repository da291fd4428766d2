"""VLA checkpoints: `safetensors` weights + a JSON config, verified before anything is loaded. Nothing unpickles.

Layout of a checkpoint directory::

    config.json          {"format": "fleet-vla", "format_version": 1, "model": VLAConfig,
                          "weights_file": "model.safetensors", "weights_sha256": "...", "metadata": {...}}
    model.safetensors    every parameter of VLAModel, float32

`load_checkpoint` (and `verify_checkpoint`, which robots run on a download before swapping it
in) refuses with `CheckpointError` unless: the config parses into a `VLAConfig`; the weights
file's sha256 equals the recorded one (and the caller's `expected_sha256`, e.g. the registry
tag); the file parses as safetensors (a pickle renamed to `model.safetensors` does not); the
tensor names, shapes and dtypes are exactly those of the model the config builds; and every value
is finite. With `expected_config_sha256` (what a version's signature vouches for, `fleet.signing`)
config.json must have that sha256 too. The bytes that were hashed are the bytes that are parsed (one
read per file), so a file cannot change between the check and the load.

Training state rides alongside in the same way (`save_optimizer` / `load_optimizer`):
`optimizer.safetensors` for the tensors, `optimizer.json` for hyper-parameters and the sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from fleet.durable import atomic_write
from fleet.policy.config import VLAConfig
from fleet.policy.model import VLAModel

FORMAT = "fleet-vla"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
_MAX_JSON_BYTES = 1 << 20

JSONScalar = str | int | float | bool | None


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, tampered with or does not fit its config; it was not loaded."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What verification established about a checkpoint directory."""

    directory: Path  # the checkpoint directory
    config: VLAConfig  # the model config it records
    sha256: str  # sha256 of the weights file (hex)
    num_parameters: int  # total number of weights
    metadata: dict[str, JSONScalar] = field(default_factory=dict)  # free-form tags saved with it


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_json(path: Path, expected_sha256: str | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} not found: not a fleet checkpoint directory (expected {CONFIG_FILE})")
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is larger than {_MAX_JSON_BYTES} bytes; refusing to parse it")
    data = path.read_bytes()
    if expected_sha256 is not None and (sha := _sha256(data)) != expected_sha256.lower():
        raise CheckpointError(f"{path}: sha256 {sha} is not the expected {expected_sha256}")
    try:
        raw = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return raw


def _parse_safetensors(data: bytes, source: Path) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{source} is not a valid safetensors file ({exc}); refusing to load it") from None


def save_checkpoint(model: VLAModel, directory: Path | str, *, metadata: Mapping[str, JSONScalar] | None = None) -> str:
    """Write `model` to `directory` (created if needed); returns the weights' sha256.

    Weights are written before the config that records their hash, each atomically, so a
    concurrent reader sees either the old pair, the new pair, or a hash mismatch, never a mix it accepts.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors_bytes(tensors, metadata={"format": FORMAT})
    sha = _sha256(data)
    meta = dict(metadata or {})
    for key, value in meta.items():
        if not isinstance(value, JSONScalar):
            raise ValueError(f"checkpoint metadata {key!r} must be a JSON scalar, got {type(value).__name__}")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha,
        "num_parameters": model.num_parameters(),
        "metadata": meta,
    }
    atomic_write(directory / WEIGHTS_FILE, data)
    atomic_write(directory / CONFIG_FILE, (json.dumps(config, indent=1) + "\n").encode())
    return sha


def checkpoint_sha256(directory: Path | str) -> str:
    """sha256 (hex) of the checkpoint's weights file as it is on disk (not the recorded value)."""
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: not a fleet checkpoint directory")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(directory: Path | str) -> str:
    """sha256 (hex) of the checkpoint's config.json as it is on disk."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: not a fleet checkpoint directory")
    return _sha256(path.read_bytes())


def _read_verified(
    directory: Path | str, expected_sha256: str | None, expected_config_sha256: str | None = None
) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    directory = Path(directory)
    raw = _read_json(directory / CONFIG_FILE, expected_config_sha256)
    if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: format {raw.get('format')!r} v{raw.get('format_version')!r} is not"
            f" {FORMAT!r} v{FORMAT_VERSION}; upgrade fleet or re-export the checkpoint"
        )
    try:
        config = VLAConfig.from_dict(raw.get("model"))  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{directory}: model config does not parse: {exc}") from None
    if raw.get("weights_file") != WEIGHTS_FILE:
        raise CheckpointError(f"{directory}: weights_file must be {WEIGHTS_FILE!r}, got {raw.get('weights_file')!r}")
    recorded = raw.get("weights_sha256")
    if not isinstance(recorded, str):
        raise CheckpointError(f"{directory}: config.json records no weights_sha256")
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{directory}: metadata must be a JSON object")

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} not found")
    data = weights_path.read_bytes()
    sha = _sha256(data)
    if sha != recorded:
        raise CheckpointError(f"{weights_path}: sha256 {sha} does not match the recorded {recorded}; file is corrupt")
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise CheckpointError(f"{weights_path}: sha256 {sha} is not the expected {expected_sha256}")
    tensors = _parse_safetensors(data, weights_path)

    with torch.device("meta"):  # shapes of the model the config builds, without allocating it
        reference = VLAModel(config).state_dict()
    missing = sorted(set(reference) - set(tensors))
    unexpected = sorted(set(tensors) - set(reference))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: tensors do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, ref in reference.items():
        tensor = tensors[name]
        if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)},"
                f" the config needs {ref.dtype} {tuple(ref.shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{weights_path}: tensor {name!r} has NaN or infinite values")
    info = CheckpointInfo(
        directory=directory,
        config=config,
        sha256=sha,
        num_parameters=sum(t.numel() for t in tensors.values()),
        metadata=metadata,
    )
    return info, tensors


def verify_checkpoint(
    directory: Path | str, expected_sha256: str | None = None, *, expected_config_sha256: str | None = None
) -> CheckpointInfo:
    """Run every check `load_checkpoint` runs (see the module docstring); raise CheckpointError on the first failure."""
    info, _ = _read_verified(directory, expected_sha256, expected_config_sha256)
    return info


def load_checkpoint(
    directory: Path | str, *, expected_sha256: str | None = None, expected_config_sha256: str | None = None
) -> VLAModel:
    """A verified model in eval mode; CheckpointError (and nothing loaded) when any check fails."""
    info, tensors = _read_verified(directory, expected_sha256, expected_config_sha256)
    model = VLAModel(info.config)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


# --- optimizer state (training resume) -------------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, directory: Path | str) -> str:
    """Write an optimizer's state as safetensors (tensors) + JSON (everything else); returns the tensors' sha256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    data = save_safetensors_bytes(tensors, metadata={"format": "fleet-optimizer"})
    sha = _sha256(data)
    meta = {"sha256": sha, "param_groups": state["param_groups"], "scalars": scalars, "type": type(optimizer).__name__}
    atomic_write(directory / OPTIMIZER_FILE, data)
    atomic_write(directory / OPTIMIZER_META_FILE, (json.dumps(meta, indent=1) + "\n").encode())
    return sha


def load_optimizer(optimizer: torch.optim.Optimizer, directory: Path | str) -> None:
    """Restore state saved by `save_optimizer` into `optimizer` (built over the same parameters)."""
    directory = Path(directory)
    meta = _read_json(directory / OPTIMIZER_META_FILE)
    if meta.get("type") != type(optimizer).__name__:
        raise CheckpointError(f"{directory}: optimizer state is for {meta.get('type')}, not {type(optimizer).__name__}")
    path = directory / OPTIMIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    data = path.read_bytes()
    if _sha256(data) != meta.get("sha256"):
        raise CheckpointError(f"{path}: sha256 does not match {OPTIMIZER_META_FILE}; file is corrupt")
    tensors = _parse_safetensors(data, path)
    per_param: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: optimizer tensor {name!r} has NaN or infinite values")
        per_param.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    groups = meta.get("param_groups")
    if not isinstance(groups, list):
        raise CheckpointError(f"{directory}: {OPTIMIZER_META_FILE} has no param_groups")
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: optimizer state does not fit this model: {exc}") from None
