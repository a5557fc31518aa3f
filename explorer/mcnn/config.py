"""The typed, validated config of one training job (``python -m explorer.mcnn.train --config``).

All validation lives here: a config that loads is a config the job can run. YAML and JSON are both
accepted; unknown keys are errors, and every error names the key path and the bad value.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from explorer.mcnn.schedule import parse_piecewise
from mcnn_base.errors import ConfigError
from mcnn_base.hostnames import validate_hostname

Precision = Literal["float32", "mixed_bfloat16", "float32_bf16math"]
# the precisions whose math runs in bf16: fast only on a CPU with bf16 hardware
BF16_MATH = frozenset({"mixed_bfloat16", "float32_bf16math"})
FPMATH_ENV = "ONEDNN_DEFAULT_FPMATH_MODE"  # float32_bf16math: oneDNN may compute fp32 in bf16

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "FaultConfig",
    "LayoutConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "SplitConfig",
    "TrainConfig",
    "format_validation_error",
    "load_config",
]

SEED_SCHEDULE = "0.008;2;0.032;5;0.029;10;0.026;15;0.001;20;0.0001"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    protocol: Literal["random", "loco"] = "random"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    fold: int = Field(0, ge=0)
    seed: int = 0


class AugmentConfig(_Strict):
    flips: bool = True
    rot90: bool = True  # 90° turns on square inputs, 180° only on non-square ones
    random_crop: tuple[int, int] | None = None  # (h, w): train on random crops, validate on centre


class DataConfig(_Strict):
    root: Path
    image_size: tuple[int, int] = (64, 80)
    split: SplitConfig = SplitConfig()
    drop_dmso: bool = False
    illumination_correction: bool = False
    # "unit": pixels in [0, 1] (docs/DESIGN.md §1.4); "standardize": minus the training set's
    # per-channel mean, over its std (helps plain SGD leave the initial plateau on small data).
    normalize: Literal["unit", "standardize"] = "unit"
    cache_dir: Path | None = None  # default: $MCNN_CACHE_DIR or ~/.cache/mcnn-explorer/shards
    augment: AugmentConfig = AugmentConfig()

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError(f"image_size must be at least 8x8, got {v}")
        return v

    @model_validator(mode="after")
    def _crop(self) -> DataConfig:
        crop = self.augment.random_crop
        if crop is not None and (crop[0] > self.image_size[0] or crop[1] > self.image_size[1]
                                 or min(crop) < 8):
            raise ValueError(f"augment.random_crop {crop} must fit in image_size "
                             f"{self.image_size} and be at least 8x8")
        return self

    @property
    def model_input_size(self) -> tuple[int, int]:
        return self.augment.random_crop or self.image_size


class ScheduleConfig(_Strict):
    piecewise: str = SEED_SCHEDULE
    warmup_epochs: float = Field(0.0, ge=0.0)
    linear_scaling: bool = False
    reference_batch: int = Field(256, gt=0)

    @field_validator("piecewise")
    @classmethod
    def _parse(cls, v: str) -> str:
        return parse_piecewise(v).render()


class OptimizerConfig(_Strict):
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5e-5, ge=0.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    # Evaluate an exponential moving average of the weights (Polyak averaging) instead of the
    # raw weights; None evaluates the raw weights. Its horizon in epochs (the same data at every
    # batch size), reached after a ramp of about 9x that many epochs (explorer/mcnn/ema.py).
    ema_epochs: float | None = Field(None, gt=0.0)


class FaultConfig(_Strict):
    """Deliberate faults, for testing the explorer's failure handling. Never set in real runs."""

    kind: Literal["raise", "nan", "hang", "exit", "kill"]
    rank: int = Field(0, ge=0)
    at_step: int = Field(0, ge=0)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LayoutConfig(_Strict):
    """Where the job runs (read by ``mcnn-explore train`` and export, ignored by the job itself).

    An exported best config carries its layout, so ``mcnn-explore train --config best.yaml``
    replays it through the same launcher without extra flags.
    """

    hosts: tuple[str, ...] = ("localhost",)
    ranks_per_node: int = Field(1, ge=1)
    threads_per_rank: int = Field(1, ge=1)
    binding: Literal["none", "core", "socket"] = "core"
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("hosts must name at least one host")
        for host in v:
            validate_hostname(host)
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(f"environment variable name {name!r} is not a valid identifier")
        return v


class TrainConfig(_Strict):
    data: DataConfig
    per_worker_batch: int = Field(8, gt=0)
    schedule: ScheduleConfig = ScheduleConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    max_epochs: float = Field(20.0, gt=0.0)
    target_accuracy: float | None = Field(None, gt=0.0, le=1.0)
    max_steps: int | None = Field(None, gt=0)  # stop after this many updates (benchmarks)
    eval: bool = True  # False: throughput-only (no validation)
    # evaluate every this many epochs (0.5: twice an epoch); evaluation time stays on the clock
    eval_every_epochs: float = Field(1.0, gt=0.0)
    intra_op_threads: int = Field(0, ge=0)  # 0 = TF default
    inter_op_threads: int = Field(0, ge=0)
    # float32_bf16math: float32 variables and tensors, oneDNN's math in bf16 (FPMATH_ENV=BF16)
    precision: Precision = "float32"
    seed: int = 0
    comm: Literal["auto", "horovod", "local"] = "auto"
    events: Path | None = None
    # rank 0 writes a ``progress`` event at most this often inside an epoch: the driver's stall
    # detector reads a silent events file as a hung job (e.g. a rank stuck in a collective)
    progress_every_s: float = Field(30.0, gt=0.0)
    fault: FaultConfig | None = None
    layout: LayoutConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid training config {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {loc}: {err['msg']}{shown}")
    return "\n".join(lines)


def config_from_dict(data: Any, source: str = "<dict>") -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"training config {source} must be a mapping, got {type(data).__name__}")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> TrainConfig:
    """Load a ``.json``, ``.yaml`` or ``.yml`` training config.

    Raises:
        ConfigError: a missing file, a parse error (with its line) or an invalid value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return config_from_dict(data, str(path))
