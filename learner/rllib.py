"""The learner's update engine: the VLA as an RLlib (new API stack) `TorchRLModule`, its loss in a `TorchLearner`.

RLlib runs the update, so the same code trains on this CPU machine (`num_learners=0`, in-process,
no `ray.init`) and data-parallel on GPUs / Ray nodes (`num_learners=N`, `num_gpus_per_learner=1`).
There are no EnvRunners: the fleet is the data source, batches come from `learner.replay`.

    engine = VLALearner(RLlibConfig(), model_config=debug_model_config())
    stats = engine.update(batch)                  # batch: dict of numpy columns from ReplayBuffer.sample
    weights = engine.get_state_dict()             # VLAModel state dict (torch) -> safetensors checkpoint
    engine.set_state_dict(weights)                # rollback / restore: set_weights, never set_state (NOTES)
    engine.reset_optimizer()                      # with new weights: AdamW starts cold
    published = engine.to_model(ema=True)         # the weights' moving average (`ema_decay`), what is published

The loss (`VLATorchLearner.compute_loss_for_module`): one forward of `VLAModel.loss`, whose value
predictions (detached) `learner.replay.sample_weights` turns into per-sample weights inside the same pass
(demos and interventions 1, autonomous steps AWR `exp(A / beta)` clipped): weighted flow-matching / BC +
value regression on the RECAP returns. A separate value forward would cost ~20% of an update.

With `freeze` ("encoder" or "perception", `fleet.policy.model.Freeze`) the frozen parameters get no gradient
and no optimizer state, and batches carry the frozen part's cached output (`image_tokens` or `memory`, see
`learner.features`) in place of the images, so the update never runs that part.

With `ema_decay` > 0 each learner also keeps an exponential moving average of the weights, updated after
every step (`after_gradient_based_update`); checkpoints publish the average and training goes on from the
raw weights (as π0 and Diffusion Policy evaluate their EMA weights). Measured offline from the bench's
version 1 (600 demos, batches of 32, eval gate of 20 episodes per pair every 300 updates): the raw weights'
success swings with the last few hundred steps (0.45 / 0.53 / 0.32 / 0.44 / 0.35 on demos at lr 3e-4;
0.33 / 0.48 / 0.36 / 0.53 on the fleet's corrections at 1e-4) where the 0.995 average holds (0.55 / 0.55 /
0.52 / 0.53 / 0.64; 0.49 / 0.47 / 0.54 / 0.57): a version published from raw weights is mostly a draw of
that noise.

Over 400 lines because RLlib's pieces for the VLA (its config, RLModule, TorchLearner, AlgorithmConfig) and
the small engine the learner service drives must agree on one batch layout and one loss; apart, each would restate
them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from fleet.placement import LEARNER_RESOURCE
from fleet.policy.config import VLAConfig
from fleet.policy.model import FREEZE_LEVELS, Freeze, VLAModel
from fleet.policy.train import ADAM_BETAS, parameter_groups
from learner.replay import AUTONOMOUS, sample_weights

log = logging.getLogger(__name__)
MODULE_ID = DEFAULT_MODULE_ID  # the single RLModule of the learner's MultiRLModule ("default_policy")
_PREFIX = "vla."  # state-dict prefix of the VLAModel inside the RLModule
_OBSERVATION_COLUMNS = ("images", "image_tokens", "memory")  # a batch carries one of them (see VLAModel)
_MODEL_COLUMNS = ("instruction_embedding", "proprio", "embodiment_id", "actions", "action_mask")


Precision = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "auto")


def resolve_precision(precision: Precision, device: str = "cpu") -> Literal["fp32", "bf16"]:
    """What the updates run in: `auto` is bf16 where the device multiplies bfloat16 natively (a CUDA GPU that
    supports it, a CPU with AMX tiles), fp32 elsewhere (emulated bf16 is slower than fp32)."""
    if precision != "auto":
        return precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_amx() else "fp32"


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU lists AMX bf16 tiles among its flags (Linux's /proc/cpuinfo; False elsewhere)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return False
    return any("amx_bf16" in line.split() for line in lines if line.startswith("flags"))


@dataclass(frozen=True)
class RLlibConfig:
    """How RLlib updates the VLA."""

    lr: float = 3e-4  # AdamW learning rate (constant: the stream never ends, so no decay schedule)
    # Linear warm-up of the learning rate over a fresh optimizer's first updates (at start and after a restart from
    # production): the first steps of a cold AdamW are its largest, as pre-training's warm-up knows.
    warmup_updates: int = 100
    weight_decay: float = 1e-4  # AdamW weight decay on weight matrices (none on norms, biases, embeddings)
    grad_clip: float = 1.0  # max global gradient norm (RLlib clips before the step)
    awr_beta: float = 0.5  # AWR temperature on advantages (returns are normalized to about [-1, 0])
    awr_max_weight: float = 20.0  # clip of exp(A / beta), so one lucky step cannot dominate a batch
    num_learners: int = 0  # 0 = one in-process learner (CPU); N > 0 = N remote data-parallel learners (needs Ray)
    num_gpus_per_learner: float = 0.0  # GPUs per learner when num_learners > 0
    # Each remote learner asks for one unit of the learner node's resource (fleet.placement), so the learners run on
    # the node kept for them and robots on the others; needs num_learners > 0 (an in-process learner runs where the
    # learner service was started).
    learner_node: bool = False
    seed: int = 0  # seeds torch before the module is built (same initial weights per seed)
    ema_decay: float = 0.0  # > 0: keep (and publish) a moving average of the weights, w <- d * w + (1 - d) * new
    # What the updates hold fixed (`fleet.policy.model.Freeze`): "none", "encoder" (2x cheaper updates) or
    # "perception" (only the action expert and value head train). Batches must then carry the cached features.
    freeze: Freeze = "none"
    # The update's matmuls: "fp32", or "bf16" (autocast: bfloat16 matmuls, fp32 weights, optimizer, attention and
    # reductions). On a CPU with AMX (Xeon 4th gen and later) bf16 matmuls run ~6x faster at the VLA's sizes and an
    # update with the image encoder frozen costs ~12% less; on CPUs without native bf16 it is slower. "auto": bf16
    # where the hardware has it (resolve_precision).
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.freeze not in FREEZE_LEVELS:
            raise ValueError(f"RLlibConfig.freeze must be one of {FREEZE_LEVELS}, got {self.freeze!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"RLlibConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.warmup_updates < 0:
            raise ValueError("RLlibConfig: lr and grad_clip must be positive, weight_decay and warmup_updates >= 0")
        if self.awr_beta <= 0 or self.awr_max_weight < 1:
            raise ValueError("RLlibConfig: awr_beta must be positive and awr_max_weight >= 1")
        if self.num_learners < 0 or self.num_gpus_per_learner < 0:
            raise ValueError("RLlibConfig: num_learners and num_gpus_per_learner must be >= 0")
        if self.learner_node and self.num_learners < 1:
            raise ValueError("RLlibConfig: learner_node places remote learners; set num_learners >= 1")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"RLlibConfig.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class TrainingStats:
    """What one update did; `to_log_dict` gives the MLflow metric names."""

    loss_total: float  # backpropagated loss
    loss_action: float  # weighted flow-matching / BC loss
    loss_value: float  # value-head Huber loss on the RECAP returns
    loss_aux: float  # weighted L1 of the VLA's auxiliary chunk regression (0 when the model has none)
    mean_weight: float  # mean per-sample weight of the batch
    mean_advantage: float  # mean advantage of the batch's autonomous steps (0 when none)
    autonomous_fraction: float  # share of the batch that is autonomous (AWR-weighted) steps
    batch_size: int  # samples in the batch
    update_ms: float  # wall time of the update
    learning_rate: float = 0.0  # AdamW's rate for this update (below `lr` while warming up)

    def to_log_dict(self) -> dict[str, float]:
        return {
            "losses/total": self.loss_total,
            "losses/action": self.loss_action,
            "losses/value": self.loss_value,
            "losses/aux": self.loss_aux,
            "charts/mean_weight": self.mean_weight,
            "charts/mean_advantage": self.mean_advantage,
            "charts/autonomous_fraction": self.autonomous_fraction,
            "charts/batch_size": float(self.batch_size),
            "charts/update_ms": self.update_ms,
            "charts/learning_rate": self.learning_rate,
        }


class VLARLModule(TorchRLModule):
    """The fleet VLA as an RLlib module; `model_config["vla"]` is a `VLAConfig.to_dict()`."""

    def setup(self) -> None:
        config = self.model_config
        assert isinstance(config, dict)  # the plain dict `RLModuleSpec(model_config=...)` was given below
        self.vla = VLAModel(VLAConfig.from_dict(config["vla"]))
        frozen = set(self.vla.frozen_parameters(config.get("freeze", "none")))
        for name, parameter in self.vla.named_parameters():
            parameter.requires_grad_(name not in frozen)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        actions, values = self.vla.predict(_model_batch(batch))
        return {Columns.ACTIONS: actions, Columns.VF_PREDS: values}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """The weighted loss's one forward pass (values for the advantages included). It runs here, inside the
        module's forward, so that data-parallel learners (DDP, `num_learners` > 1) see every parameter it uses."""
        config = self.model_config
        assert isinstance(config, dict)
        kinds, model_batch = batch["kind"].long(), _model_batch(batch)
        returns = model_batch["returns"]

        def weigh(values: torch.Tensor) -> torch.Tensor:
            beta, max_weight = config["awr_beta"], config["awr_max_weight"]
            return sample_weights(kinds, returns, values.float(), beta=beta, max_weight=max_weight)

        if config.get("precision", "fp32") == "bf16":
            device = next(self.vla.parameters()).device.type
            with torch.autocast(device, dtype=torch.bfloat16):
                out = self.vla.loss(model_batch, weights=weigh)
            return {k: v.float() for k, v in out.items()}  # losses, values and weights in fp32 from here
        return dict(self.vla.loss(model_batch, weights=weigh))


def _model_batch(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The VLAModel columns of an RLlib batch, with the dtypes the model checks."""
    out = {k: batch[k] for k in _OBSERVATION_COLUMNS + _MODEL_COLUMNS + ("returns", "return_mask") if k in batch}
    out["embodiment_id"] = out["embodiment_id"].long()
    for key in ("action_mask", "return_mask"):
        if key in out:
            out[key] = out[key].bool()
    if "returns" in out:
        out["returns"] = out["returns"].float()
    return out


class VLATorchLearner(TorchLearner):
    """Weighted VLA loss: HG-DAgger on interventions, AWR on autonomous steps, value regression on returns.

    Also the weights' moving average when `ema_decay` > 0 (see the module docstring).
    """

    _ema: dict[str, torch.Tensor] | None = None
    skipped_updates = 0  # batches whose gradient was not finite (`apply_gradients`)
    _grad_norm: torch.Tensor | None = None  # this update's global gradient norm, from the clip

    def _vla_module(self, module_id: str = MODULE_ID) -> VLARLModule:
        assert self._module is not None  # built by RLlib before any update
        module = self._module[module_id].unwrapped()
        assert isinstance(module, VLARLModule)
        return module

    def _vla(self) -> VLAModel:
        return self._vla_module().vla

    def reset_ema(self, state: dict[str, np.ndarray] | None = None) -> None:
        """Start the average at `state` (numpy arrays by VLAModel key), else at the current weights."""
        current = self._vla().state_dict()
        if state is None:
            self._ema = {k: v.detach().clone() for k, v in current.items()}
        else:
            # A copy: the average is updated in place and must not write into the caller's arrays.
            self._ema = {
                k: torch.tensor(np.asarray(state[k]), dtype=v.dtype, device=v.device) for k, v in current.items()
            }

    def ema_state(self) -> dict[str, np.ndarray]:
        """The average (the current weights when it is off or has not started)."""
        weights = self._ema if self._ema is not None else self._vla().state_dict()
        return {k: v.detach().cpu().numpy() for k, v in weights.items()}

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        assert isinstance(self.config, VLAAlgorithmConfig)
        decay = self.config.ema_decay
        if decay <= 0:
            return
        if self._ema is None:
            self.reset_ema()
            return
        with torch.no_grad():
            averages, values = [], []
            for key, value in self._vla().state_dict().items():
                if self._ema[key].is_floating_point():
                    averages.append(self._ema[key])
                    values.append(value)
                else:
                    self._ema[key].copy_(value)
            torch._foreach_lerp_(averages, values, 1.0 - decay)  # one call for every tensor

    def _get_clip_function(self) -> Any:  # type: ignore[override]  # RLlib's is static; this one keeps the norm
        return self._clip_by_global_norm

    def _clip_by_global_norm(self, gradients: dict[Any, torch.Tensor], *, grad_clip: float, grad_clip_by: str) -> Any:
        # RLlib's global-norm clip takes one norm per tensor and scales them one by one in Python (~3% of an update
        # with the image encoder frozen); here one foreach norm and one foreach scale. The norm is kept for
        # `apply_gradients`' finite check.
        assert grad_clip_by == "global_norm"  # what build_algorithm_config sets
        grads = [g for g in gradients.values() if g is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        self._grad_norm = norm
        if grads and torch.isfinite(norm):  # RLlib's coefficient: scale down only, never up
            torch._foreach_mul_(grads, torch.clamp(grad_clip / (norm + 1e-6), max=1.0))
        return norm

    def apply_gradients(self, gradients_dict: dict[Any, torch.Tensor]) -> None:
        # One check of the global norm (the clip's) in place of RLlib's two per tensor (`torch_skip_nan_gradients`
        # turns those off; ~6% of an update here): a batch whose gradient is not finite is skipped whole, the weights
        # and AdamW's moments untouched, where RLlib would zero the bad tensors and step with the rest.
        norm, self._grad_norm = self._grad_norm, None
        if norm is None:  # not clipped: the norm is computed here
            grads = [g for g in gradients_dict.values() if g is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else None
        if norm is not None and not torch.isfinite(norm):
            self.skipped_updates += 1
            log.warning("learner: a batch's gradient is not finite; update skipped (%d so far)", self.skipped_updates)
            return
        super().apply_gradients(gradients_dict)

    def configure_optimizers_for_module(self, module_id: str, config: AlgorithmConfig | None = None) -> None:
        # Pre-training's AdamW (betas, no decay on norms and embeddings); frozen parts get no optimizer state.
        assert isinstance(config, VLAAlgorithmConfig)
        assert self._module is not None
        module = self._module[module_id]
        assert isinstance(module, torch.nn.Module)
        groups = parameter_groups(module, config.vla_weight_decay)
        # Fused: one kernel for every tensor's step, where the default on a CPU loops over them in Python (~7% of
        # an update with the image encoder frozen on this machine's CPU).
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=ADAM_BETAS, fused=True)
        params = [p for group in groups for p in group["params"]]
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        assert isinstance(self.config, VLAAlgorithmConfig)
        warmup, lr = self.config.warmup_updates, float(self.config.lr)
        for _, optimizer in self.get_optimizers_for_module(MODULE_ID):
            # AdamW's own step count: it restarts with the optimizer's state and is restored with a checkpoint's.
            steps = next((float(s["step"]) for s in optimizer.state.values() if "step" in s), 0.0)
            rate = lr * min(1.0, (steps + 1.0) / warmup) if warmup > 0 else lr
            for group in optimizer.param_groups:
                group["lr"] = rate
            self.metrics.log_value((MODULE_ID, "learning_rate"), rate, window=1)

    def compute_loss_for_module(
        self, *, module_id: str, config: AlgorithmConfig, batch: dict[str, Any], fwd_out: dict[str, Any]
    ) -> torch.Tensor:
        out = fwd_out  # the module's forward_train computed the loss (see VLARLModule._forward_train)
        kinds, returns = batch["kind"].long(), batch["returns"].float()
        values, weights = out["value"], out["weights"]
        autonomous = kinds == AUTONOMOUS
        advantage = (returns - values)[autonomous]
        for key, value in (
            ("loss_total", out["loss/total"]),
            ("loss_action", out["loss/action"]),
            ("loss_value", out["loss/value"]),
            ("loss_aux", out["loss/aux"]),
            ("mean_weight", weights.mean()),
            ("mean_advantage", advantage.mean() if bool(autonomous.any()) else values.new_zeros(())),
            ("autonomous_fraction", autonomous.float().mean()),
        ):
            self.metrics.log_value((module_id, key), value.detach().item(), window=1)
        return out["loss/total"]


class VLAAlgorithmConfig(AlgorithmConfig):
    """An AlgorithmConfig that only builds learners (no env runners): the fleet streams the data."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class)
        self.vla_weight_decay = 1e-4  # AdamW weight decay (RLlibConfig.weight_decay)
        self.ema_decay = 0.0  # RLlibConfig.ema_decay
        self.warmup_updates = 0  # RLlibConfig.warmup_updates

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=VLARLModule)

    def get_default_learner_class(self) -> type[TorchLearner]:
        return VLATorchLearner


def build_algorithm_config(config: RLlibConfig, model_config: VLAConfig) -> VLAAlgorithmConfig:
    """The RLlib config for `model_config` (spaces are placeholders: RLlib requires them, the VLA ignores them)."""
    algo = VLAAlgorithmConfig()
    algo.vla_weight_decay = config.weight_decay
    algo.ema_decay = config.ema_decay
    algo.warmup_updates = config.warmup_updates
    box = gym.spaces.Box(-1.0, 1.0, (model_config.max_action_dim,), np.float32)
    algo.environment(observation_space=box, action_space=box)
    # Data-parallel learners (num_learners > 1) wrap the module in DDP: a batch that holds one embodiment, or no
    # intervention rows, leaves other embodiments' adapters without a gradient, which DDP must expect.
    algo.framework(
        "torch",
        torch_skip_nan_gradients=True,  # RLlib's two checks per tensor; VLATorchLearner.apply_gradients checks once
        torch_ddp_kwargs={"find_unused_parameters": True},
    )
    algo.training(lr=config.lr, grad_clip=config.grad_clip, grad_clip_by="global_norm")
    algo.rl_module(
        rl_module_spec=RLModuleSpec(
            module_class=VLARLModule,
            observation_space=box,
            action_space=box,
            model_config={
                "vla": model_config.to_dict(),
                "freeze": config.freeze,
                "precision": resolve_precision(config.precision, "cuda" if config.num_gpus_per_learner else "cpu"),
                "awr_beta": config.awr_beta,
                "awr_max_weight": config.awr_max_weight,
            },  # fmt: skip
        )
    )
    algo.learners(
        num_learners=config.num_learners,
        num_gpus_per_learner=config.num_gpus_per_learner,
        custom_resources_per_learner={LEARNER_RESOURCE: 1} if config.learner_node else {},
        learner_class=VLATorchLearner,
    )
    algo.debugging(seed=config.seed)
    return algo


class VLALearner:
    """An RLlib `LearnerGroup` over the VLA with the tiny interface the service needs."""

    def __init__(self, config: RLlibConfig, *, model_config: VLAConfig) -> None:
        self.config = config
        self.model_config = model_config
        torch.manual_seed(config.seed)
        self.group = build_algorithm_config(config, model_config).build_learner_group()

    def update(self, batch: dict[str, np.ndarray]) -> TrainingStats:
        """One gradient step on a replay batch (numpy columns, see `ReplayBuffer.sample`)."""
        n = int(len(batch["kind"]))
        start = time.perf_counter()
        results = self.group.update(batch=MultiAgentBatch({MODULE_ID: SampleBatch(dict(batch))}, env_steps=n))
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        stats = results[0][MODULE_ID] if isinstance(results, list) else results[MODULE_ID]

        def value(key: str) -> float:
            item = stats[key]
            return float(item.peek() if hasattr(item, "peek") else item)

        return TrainingStats(
            loss_total=value("loss_total"),
            loss_action=value("loss_action"),
            loss_value=value("loss_value"),
            loss_aux=value("loss_aux"),
            mean_weight=value("mean_weight"),
            mean_advantage=value("mean_advantage"),
            autonomous_fraction=value("autonomous_fraction"),
            batch_size=n,
            update_ms=elapsed_ms,
            learning_rate=value("learning_rate"),
        )

    def get_state_dict(self) -> dict[str, torch.Tensor]:
        """The VLAModel's weights (CPU tensors, keys as `VLAModel.state_dict()`), via `get_weights()`."""
        weights = self.group.get_weights([MODULE_ID])[MODULE_ID]
        return {k.removeprefix(_PREFIX): torch.as_tensor(np.asarray(v)).clone() for k, v in weights.items()}

    def set_state_dict(self, state: dict[str, torch.Tensor], *, ema: dict[str, torch.Tensor] | None = None) -> None:
        """Load VLAModel weights into every learner (`set_weights`; `set_state` can leave weights stale); the
        moving average restarts at `ema` (a resumed checkpoint's published weights), else at `state`."""
        arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
        self.group.set_weights({MODULE_ID: {_PREFIX + k: v for k, v in arrays.items()}})
        if self.config.ema_decay > 0:
            start = arrays if ema is None else {k: v.detach().cpu().numpy() for k, v in ema.items()}
            self._each_learner(lambda learner: learner.reset_ema(start))

    def reset_optimizer(self) -> None:
        """Forget every learner's AdamW moments and step counts (training restarts from other weights)."""

        def clear(learner: TorchLearner) -> None:
            for _, optimizer in learner.get_optimizers_for_module(MODULE_ID):
                optimizer.state.clear()

        self._each_learner(clear)

    def get_ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights' moving average (the current weights when `ema_decay` is 0)."""
        if self.config.ema_decay <= 0:
            return self.get_state_dict()
        first = self._each_learner(lambda learner: learner.ema_state())[0]  # data-parallel learners agree
        return {k: torch.as_tensor(v).clone() for k, v in first.items()}

    def _each_learner(self, fn: Any) -> list[Any]:
        results = self.group.foreach_learner(fn)
        for result in results:
            if not result.ok:
                raise RuntimeError(f"learner call failed: {result.get()}")
        return [result.get() for result in results]

    def to_model(self, *, ema: bool = False) -> VLAModel:
        """A standalone VLAModel (eval mode) with the learner's current weights, or with their moving average
        (`ema=True`; the same weights when `ema_decay` is 0): what checkpoints publish."""
        model = VLAModel(self.model_config)
        model.load_state_dict(self.get_ema_state_dict() if ema else self.get_state_dict(), strict=True)
        return model.eval()

    def shutdown(self) -> None:
        self.group.shutdown()
