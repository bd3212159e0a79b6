"""The compressor's settings: plain dataclasses and enums, no torch.

They are nested into the job config (`pipeline.config.JobConfig`) and read by processes
that never run the model (shard workers, the driver), so importing them must not pull
in torch.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field

from coder import CoderConfig


class Role(enum.Enum):
    """What a setting changes, declared on its field (`metadata={"role": ...}`; a nested
    section's role is the default of its fields). An output's content config, which its
    shards and reruns must match, is derived from it (`pipeline.config.content_config`)."""

    CONTENT = "content"  # the output's bytes (the default)
    SCHEDULING = "scheduling"  # how fast or where, never a byte
    FLOAT_ONLY = "float-only"  # bytes in the float precisions only (int8 is exact anywhere)


def setting(default, role: Role):
    """A dataclass field with its role."""
    return field(default=default, metadata={"role": role})


class Precision(enum.Enum):
    AUTO = "auto"  # int8
    INT8 = "int8"  # exact integer model (intmodel): the same bits on every machine
    BF16 = "bf16"  # float modes: bits depend on the device, its kernels and the software
    FP32 = "fp32"

    @property
    def is_float(self) -> bool:
        return self in (Precision.BF16, Precision.FP32)

    def resolved(self) -> "Precision":
        """What compression runs in: `auto` is the integer model, on every device."""
        return Precision.INT8 if self is Precision.AUTO else self


class SegmenterKind(enum.Enum):
    ENTROPY = "entropy"
    NEWLINE = "newline"
    FIXED = "fixed"


@dataclass(frozen=True)
class SegmentConfig:
    kind: SegmenterKind = SegmenterKind.ENTROPY
    percentile: float = 95.0  # for calibration of both thresholds
    fixed_bytes: int = 64  # FIXED: segment length
    max_segment_bytes: int = 128  # 99th percentile on code is ~76 bytes; longer ones bound the lane tail
    context_overlap: int = 16  # long documents: bytes of context each later row re-reads at least
    call_positions: int = 4096  # positions per forward pass: rows = call_positions // row length,
    #                             a fixed shape per row length (keeps results batch-invariant)

    def rows_for(self, row_len: int) -> int:
        return max(1, self.call_positions // row_len)


@dataclass(frozen=True)
class Thresholds:
    """Calibrated segmentation thresholds (stored with a run as thresholds.json)."""

    theta_abs: float
    theta_jump: float
    percentile: float
    sample_docs: int
    sample_bytes: int
    fingerprint: str  # of the model the entropies came from
    sample_shards: tuple[str, ...] = ()  # the input shards the sample came from (a job's calibration)
    sample_seconds: float = 0.0  # reading the sample and computing its entropies

    def __post_init__(self):
        object.__setattr__(self, "sample_shards", tuple(self.sample_shards))  # a list, from JSON

    def provenance_free(self) -> dict:
        """What the output's bytes depend on, for its metadata (not where or how fast)."""
        d = asdict(self)
        del d["sample_shards"], d["sample_seconds"]
        return d

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Thresholds":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class EngineConfig:
    lanes: int = setting(256, Role.SCHEDULING)  # segments coded side by side
    group: int = setting(256, Role.FLOAT_ONLY)  # lanes per model call: every call has exactly this shape,
    #                  and only groups with a waiting lane are computed (part of the float numerics)
    lane_sets: int = setting(0, Role.SCHEDULING)  # sets coded in turn while the device computes another;
    #                                                0: 2 on CUDA, 1 on CPU
    max_window_bytes: int = 32  # also the KV cache length per lane
    window_bits: int = 16
    symbol_bits: int = 16
    precision: Precision = Precision.AUTO  # auto: int8 (float modes for comparison)
    device: str = setting("auto", Role.FLOAT_ONLY)  # auto: cuda if available
    cuda_graphs: bool = setting(True, Role.SCHEDULING)  # replay each fixed-shape call as a CUDA graph (same bits as eager)
    compile: bool = setting(True, Role.SCHEDULING)  # int8 on CPUs: fuse the integer model's elementwise work with torch.compile
    #                      (integer results cannot change; each call shape compiles once, ~10-30 s)

    @property
    def coder(self) -> CoderConfig:
        return CoderConfig(self.window_bits, self.symbol_bits, self.max_window_bytes)
