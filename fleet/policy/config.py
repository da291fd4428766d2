"""The VLA model's configuration: one frozen dataclass, serialized into every checkpoint's `config.json`.

The embodiment table is copied into the config (not looked up in `fleet.embodiments` at load
time), so a checkpoint keeps its adapter shapes even after `EMBODIMENTS` changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from fleet.embodiments import EMBODIMENTS
from fleet.naming import unknown

ActionHead = Literal["flow", "discrete"]
TimeDistribution = Literal["beta", "uniform"]
COLOUR_LEXICON_SUFFIX = "+colour-lexicon"  # text_encoder of a colour-lexicon model: "<sentence encoder>+colour-lexicon"
COLOUR_FEATURES = 4  # what a colour-lexicon model's text vector ends with: the named colour's RGB and a flag


@dataclass(frozen=True)
class EmbodimentDims:
    """The shape of one embodiment as the model's adapters were built for it."""

    name: str  # embodiment id, as in `fleet.embodiments.EMBODIMENTS` and `obs["embodiment"]`
    action_dim: int  # width of that embodiment's output adapter (one action step)
    proprio_dim: int  # width of that embodiment's proprio input adapter

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("embodiment name must be non-empty")
        if self.action_dim <= 0 or self.proprio_dim <= 0:
            raise ValueError(f"embodiment {self.name!r}: action_dim and proprio_dim must be positive")


def embodiments_from_registry() -> tuple[EmbodimentDims, ...]:
    """Snapshot of `fleet.embodiments.EMBODIMENTS`, sorted by name (the order fixes embodiment ids)."""
    return tuple(
        EmbodimentDims(spec.name, action_dim=spec.action_dim, proprio_dim=spec.proprio_dim)
        for spec in sorted(EMBODIMENTS.values(), key=lambda s: s.name)
    )


@dataclass(frozen=True)
class VLAConfig:
    """Architecture of the VLA: conv image encoder + MiniLM text + proprio/embodiment tokens -> trunk -> heads."""

    # Embodiments the model has adapters for; the index in this tuple is the embodiment id.
    embodiments: tuple[EmbodimentDims, ...] = field(default_factory=embodiments_from_registry)
    # Camera names read from `obs["images"]`, each encoded by the shared image encoder. The wrist camera sees the
    # fingertips and the named cube below them. With its first mount (straight above the tool) and the same 300
    # demos per pair of pick/push/place x panda/kuka and 10k steps, front alone scored 0.53 mean success on 180
    # held-out episodes, wrist alone 0.84, both 0.85 (research/cameras.py).
    cameras: tuple[str, ...] = ("front", "wrist")
    # Square image side in pixels; must be divisible by 2 ** (len(conv_channels) + 1).
    image_size: int = 64
    # Channels of the stride-2 conv stages; a last stride-2 conv maps to d_model (image tokens).
    conv_channels: tuple[int, ...] = (32, 64, 128)
    # Append each pixel's (x, y) as two input channels of the image encoder (CoordConv).
    coord_channels: bool = True
    # FiLM-modulate every conv stage of the image encoder by the instruction embedding (RT-1).
    film: bool = True
    # Gaussian noise (per dimension) added to the instruction embedding in training only, so the policy reads a
    # neighbourhood of each sentence embedding rather than a handful of exact points: paraphrases it never trained
    # on land near the ones it did. 0 = off (inference never adds it).
    instruction_noise: float = 0.0
    # Gaussian noise (std, in the proprio's own units: metres, radians, gripper opening) added to the proprioception
    # in training only. With exact proprio a policy can replay the demonstrations' paths from where the arm is and
    # barely look at the offset between tool and object in its cameras; noisy proprio makes the image the reliable
    # cue. 0 = off (inference never adds it).
    proprio_noise: float = 0.0
    # Spatial-softmax keypoints of the last conv stage, given to the trunk as one extra token (0 = none).
    keypoints: int = 16
    # Give the trunk the image's grid tokens too; False = only the keypoint token (robomimic-style: image
    # positions only, so the policy cannot memorize scenes by their look).
    grid_tokens: bool = True
    # Size of the frozen sentence embedding of the instruction (all-MiniLM-L6-v2: 384).
    text_dim: int = 384
    # Which sentence encoder produced the instruction embeddings this model was trained on.
    text_encoder: str = "all-MiniLM-L6-v2"
    # Ground the instruction's colour name by hue (fleet.policy.colours): the sentence encoder reads the instruction
    # without it, its RGB from the shipped colour lexicon ends the text vector, and the image encoder gets one more
    # input channel, the pixels of that hue. A colour name never trained on, or an object painted a colour no
    # demonstration had, is then found by its hue. Set with `with_colour_lexicon()` (encoder name and text_dim too).
    colour_lexicon: bool = False
    # Width of every token in the trunk and the action expert.
    d_model: int = 128
    # Attention heads in the trunk and the action expert.
    num_heads: int = 4
    # Transformer layers of the shared trunk.
    trunk_layers: int = 4
    # Transformer (self- + cross-attention) layers of the action expert / discrete decoder.
    expert_layers: int = 2
    # Hidden width of every feed-forward block, as a multiple of d_model.
    ff_mult: int = 2
    # Dropout in the transformers (0 keeps training deterministic given the seed).
    dropout: float = 0.0
    # Which action head: "flow" (pi0-style flow matching, default) or "discrete" (256-bin tokens).
    action_head: ActionHead = "flow"
    # Actions per predicted chunk (H).
    chunk_size: int = 8
    # Euler integration steps from noise to actions at inference (flow head). Each is a pass of the action expert,
    # ~7 ms on this CPU: ten were ~70% of a chunk's inference, which every robot pays 5 times a second. Four act as
    # well (research/flow_steps.py: the same version on the same 240 held-out episodes, 10 vs 4 steps) at half
    # the cost. Training does not depend on it; a checkpoint's config says how its versions are sampled.
    flow_steps: int = 4
    # Distribution of the flow time t during training: "beta" (pi0: Beta(1.5, 1), biased to noise) or "uniform".
    flow_time_dist: TimeDistribution = "beta"
    # Bins per action dimension over [-1, 1] (discrete head).
    action_bins: int = 256
    # Weight of an auxiliary L1 loss that regresses the action chunk straight from the image encoder's keypoint
    # token(s) and the proprio token (0 = off; needs keypoints). The flow loss reaches the encoder only
    # through the trunk and the expert, noisily; this direct path teaches it where the named object is
    # (held-out reach error 0.61 -> 0.20 at 2k steps on pick/panda; see fleet/recipe/train.py for the
    # recipe's curve). Inference does not use the aux head.
    aux_action_weight: float = 1.0
    # Weight of the value loss in `loss/total`.
    value_loss_weight: float = 0.5
    # Stop value-loss gradients at the trunk, so return targets never perturb the action features.
    value_detach_trunk: bool = False

    def __post_init__(self) -> None:
        if not self.embodiments:
            raise ValueError("VLAConfig.embodiments must name at least one embodiment")
        names = [e.name for e in self.embodiments]
        if len(set(names)) != len(names):
            raise ValueError(f"VLAConfig.embodiments has duplicate names: {names}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"VLAConfig.cameras must be non-empty and unique, got {self.cameras}")
        if self.proprio_noise < 0:
            raise ValueError(f"VLAConfig.proprio_noise must be >= 0, got {self.proprio_noise}")
        if self.instruction_noise < 0:
            raise ValueError(f"VLAConfig.instruction_noise must be >= 0, got {self.instruction_noise}")
        if not self.conv_channels or any(c <= 0 for c in self.conv_channels):
            raise ValueError(f"VLAConfig.conv_channels must be positive, got {self.conv_channels}")
        if self.image_size <= 0 or self.image_size % self.image_downsample:
            raise ValueError(
                f"VLAConfig.image_size={self.image_size} must be a positive multiple of {self.image_downsample}"
                f" (2 ** (len(conv_channels) + 1))"
            )
        if self.d_model <= 0 or self.num_heads <= 0 or self.d_model % self.num_heads:
            raise ValueError(f"VLAConfig.d_model={self.d_model} must be a positive multiple of num_heads")
        for name in ("text_dim", "trunk_layers", "expert_layers", "ff_mult", "chunk_size", "flow_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VLAConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VLAConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.action_head not in ("flow", "discrete"):
            raise ValueError(f"VLAConfig.action_head must be 'flow' or 'discrete', got {self.action_head!r}")
        if self.flow_time_dist not in ("beta", "uniform"):
            raise ValueError(f"VLAConfig.flow_time_dist must be 'beta' or 'uniform', got {self.flow_time_dist!r}")
        if self.keypoints < 0:
            raise ValueError(f"VLAConfig.keypoints must be >= 0, got {self.keypoints}")
        if not self.grid_tokens and not self.keypoints:
            raise ValueError("VLAConfig: without grid_tokens the image reaches the trunk only through keypoints > 0")
        if self.action_bins < 2:
            raise ValueError(f"VLAConfig.action_bins must be >= 2, got {self.action_bins}")
        if self.aux_action_weight < 0:
            raise ValueError(f"VLAConfig.aux_action_weight must be >= 0, got {self.aux_action_weight}")
        if self.aux_action_weight and not self.keypoints:
            raise ValueError("VLAConfig.aux_action_weight needs keypoints > 0 (the aux head reads the keypoint token)")
        if self.value_loss_weight < 0:
            raise ValueError(f"VLAConfig.value_loss_weight must be >= 0, got {self.value_loss_weight}")
        if self.colour_lexicon != self.text_encoder.endswith(COLOUR_LEXICON_SUFFIX):
            raise ValueError(
                f"VLAConfig.colour_lexicon={self.colour_lexicon} with text_encoder {self.text_encoder!r}: a colour"
                f" lexicon model reads '<encoder>{COLOUR_LEXICON_SUFFIX}' vectors (use with_colour_lexicon())"
            )
        if self.colour_lexicon and self.text_dim <= COLOUR_FEATURES:
            raise ValueError(f"VLAConfig.text_dim={self.text_dim} leaves no room for the sentence embedding")

    # --- derived shapes -------------------------------------------------------------------------------

    @property
    def image_downsample(self) -> int:
        return 2 ** (len(self.conv_channels) + 1)

    @property
    def image_tokens_per_camera(self) -> int:
        """Grid tokens of one camera (the keypoint token, if any, comes on top)."""
        return (self.image_size // self.image_downsample) ** 2

    @property
    def max_action_dim(self) -> int:
        return max(e.action_dim for e in self.embodiments)

    @property
    def max_proprio_dim(self) -> int:
        return max(e.proprio_dim for e in self.embodiments)

    @property
    def embodiment_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.embodiments)

    def embodiment_index(self, name: str) -> int:
        """Id of an embodiment in this model; a clear KeyError (with a hint) when the model has no adapter for it."""
        for i, e in enumerate(self.embodiments):
            if e.name == name:
                return i
        raise unknown("embodiment", name, self.embodiment_names, detail="this model has adapters for")

    def embodiment(self, name: str) -> EmbodimentDims:
        return self.embodiments[self.embodiment_index(name)]

    # --- JSON ---------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["embodiments"] = [asdict(e) for e in self.embodiments]
        out["cameras"] = list(self.cameras)
        out["conv_channels"] = list(self.conv_channels)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VLAConfig:
        """Inverse of `to_dict`; unknown keys are an error (a newer config must not half-load)."""
        if not isinstance(raw, dict):
            raise ValueError(f"VLA config must be a JSON object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"VLA config has unknown keys {unknown}; known: {sorted(known)}")
        values = {**_BEFORE_IMAGE_OPTIONS, **raw}  # configs saved before these options existed had none of them
        if "embodiments" in values:
            values["embodiments"] = tuple(EmbodimentDims(**e) for e in values["embodiments"])
        for key in ("cameras", "conv_channels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def with_(self, **changes: Any) -> VLAConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def with_colour_lexicon(self) -> VLAConfig:
        """A copy that grounds colour names by hue (`colour_lexicon`), reading the same sentence encoder."""
        if self.colour_lexicon:
            return self
        return replace(
            self,
            colour_lexicon=True,
            text_encoder=self.text_encoder + COLOUR_LEXICON_SUFFIX,
            text_dim=self.text_dim + COLOUR_FEATURES,
        )


# Image-encoder options added after the first checkpoints were written: a config.json without them
# describes a plain conv encoder, so it loads as one.
_BEFORE_IMAGE_OPTIONS: dict[str, Any] = {
    "coord_channels": False, "film": False, "keypoints": 0, "grid_tokens": True, "aux_action_weight": 0.0,
}  # fmt: skip


def debug_model_config(**changes: Any) -> VLAConfig:
    """A tiny model for tests and smoke runs (trains a step in milliseconds)."""
    base = VLAConfig(
        cameras=("front",),
        conv_channels=(8, 16, 32),
        image_size=64,
        d_model=32,
        num_heads=2,
        trunk_layers=1,
        expert_layers=1,
        chunk_size=4,
        flow_steps=4,
    )
    return replace(base, **changes)
