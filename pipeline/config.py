"""The job's configuration: one typed dataclass per package, nested into JobConfig.

Resolution order: dataclass defaults, then a YAML file, then CLI overrides
(`--set section.field=value`, plus the few first-class flags of `proxycomp run`). The
resolved config is written next to the outputs as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field

import yaml

from cache.config import CacheConfig
from compressor_model.config import EngineConfig, SegmentConfig
from compressor_model.corpus import ReaderConfig



class Compressor(enum.Enum):
    """Which proxy compressor makes the symbols (registry: pipeline.compressors)."""

    NEURAL = "neural"
    TOKENIZER = "tokenizer"
    GZIP = "gzip"


@dataclass(frozen=True)
class ModelSource:
    checkpoint: str = ""  # empty: the shipped checkpoint
    compressor: Compressor = Compressor.NEURAL
    tokenizer: str = ""  # tokenizer.json for the tokenizer compressor


@dataclass(frozen=True)
class OutputConfig:
    store_raw: bool = True  # keep the raw bytes of each document in the Parquet
    row_group_docs: int = 1024
    compression: str = "zstd"  # Parquet column compression


@dataclass(frozen=True)
class RunConfig:
    address: str = ""  # Ray address: "" joins $RAY_ADDRESS if set (ray job submit), else starts a local cluster
    model_actors: int = 1  # actors holding the model (one per GPU in a GPU cluster)
    gpus_per_actor: float = 0.0  # 0: CPU actors
    cpus_per_actor: float = 0.0  # 0: on a single-machine cluster every CPU the shard tasks do not
    #                              reserve, split over the actors; on a multi-node cluster 1
    torch_threads: int = 0  # 0: every CPU the actor reserved (rounded up)
    shard_workers: int = 2  # shard tasks in flight (readers/packers/writers)
    shard_cpus: float = 0.25  # Ray CPUs reserved per shard task (they mostly wait on the model)
    # Placement on a mixed cluster: custom resources (declared per node type, see deploy/)
    # that model actors, and shard tasks and cache actors, ask for; e.g. {gpu_node: 1} and
    # {cpu_node: 0.01} keep shard work off the GPU nodes' CPUs. Empty: anywhere it fits.
    model_resources: dict = field(default_factory=dict)
    shard_resources: dict = field(default_factory=dict)
    batch_bytes: int = 512 << 10  # document bytes per model call
    doc_slice_bytes: int = 4 << 20  # longer documents are compressed a slice at a time
    small_shard_bytes: int = 256 << 10  # shards smaller than this (on storage) share tasks and model calls
    group_bytes: int = 1 << 20  # ... up to this many bytes (on storage) per task
    worker_memory_bytes: int = 4 << 30  # a shard worker above this RSS fails its shard with a clear reason
    max_retries: int = 2  # per shard, on worker, actor or storage failure
    retry_backoff_s: float = 2.0  # a retry starts this many seconds x its attempt later (at most 5x)
    calibration_bytes: int = 1 << 20  # sample size for the segmentation thresholds (pipeline.calibration)
    calibration_shards: int = 64  # ... from up to this many shards, chosen by hash, an equal share each
    calibration_doc_bytes: int = 16 << 10  # ... each document cut to this
    calibration_scan_bytes: int = 64 << 20  # ... reading at most this much of a shard
    calibration_local_bytes: int = 16 << 20  # ... in the driver when the chosen shards hold less, else in tasks
    progress: bool = True
    metrics: bool = True  # Ray metrics (pipeline.metrics); a local cluster then serves its dashboard on loopback
    dashboard_port: int = 8265  # the local cluster's dashboard (127.0.0.1 only)


@dataclass(frozen=True)
class JobConfig:
    input: str = ""
    output: str = ""
    storage_options: dict = field(default_factory=dict)  # passed to fsspec (e.g. endpoint_url)
    model: ModelSource = ModelSource()
    reader: ReaderConfig = ReaderConfig()
    segment: SegmentConfig = SegmentConfig()
    engine: EngineConfig = EngineConfig()
    cache: CacheConfig = CacheConfig()
    output_format: OutputConfig = OutputConfig()
    run: RunConfig = RunConfig()


def _convert(tp, value, where: str):
    """Coerce a YAML/CLI value to the annotated type (dataclasses, enums, scalars)."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return value if isinstance(value, tp) else tp(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {[e.value for e in tp]}") from None
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes", "on"):
                return True
            if value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{where}: {value!r} is not a boolean")
        return bool(value)
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {value!r} is not a {tp.__name__}") from None
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping")
        return dict(value)
    return value


def from_dict(cls, data: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, enum.Enum):
            v = v.value
        out[f.name] = v
    return out


def apply_override(data: dict, dotted: str) -> None:
    """`a.b.c=value` into a nested dict; the value is parsed as YAML (so 3, true, x)."""
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r}: expected section.field=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | None = None, overrides: list[str] = ()) -> JobConfig:
    """Defaults, then the YAML file, then `section.field=value` overrides in order."""
    data: dict = {}
    if path:
        import fsspec

        with fsspec.open(path, "r") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config file must be a YAML mapping")
    for o in overrides:
        apply_override(data, o)
    return from_dict(JobConfig, data)


def dump_config(cfg: JobConfig) -> str:
    d = to_dict(cfg)
    d["storage_options"] = {k: "***" if _secretish(k) else v for k, v in d["storage_options"].items()}
    return yaml.safe_dump(d, sort_keys=False)


def content_config(cfg: JobConfig) -> dict:
    """The settings an output's bytes depend on (what goes into every shard's metadata).
    Scheduling and resources (actors, workers, batch sizes, retries, the cache, the lane
    count, the lane sets, CUDA graphs on or off) change how fast a shard is made, never
    what it contains, so they stay out: a shard rerun with more workers is byte-identical."""
    d = to_dict(cfg)
    engine = {k: v for k, v in d["engine"].items() if k not in ("lanes", "lane_sets", "cuda_graphs")}
    return {
        "input": d["input"],
        "model": d["model"],
        "reader": d["reader"],
        "segment": d["segment"],
        "engine": engine,
        "output_format": d["output_format"],
        "run": {"doc_slice_bytes": d["run"]["doc_slice_bytes"]},
    }


def register_secrets(cfg: JobConfig) -> JobConfig:
    """Tell the redactor about this config's credentials (storage options, URL userinfo)."""
    import re

    from .redact import register

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif _secretish(k) and isinstance(v, str):
                register(v)

    walk(cfg.storage_options)
    for url in (cfg.input, cfg.output, cfg.model.checkpoint, cfg.model.tokenizer):
        m = re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^/@\s:]+):([^@\s]+)@", url or "")
        if m:
            register(m.group(2))
    return cfg


def _secretish(key: str) -> bool:
    k = key.lower()
    return any(s in k for s in ("secret", "password", "token", "key")) and "endpoint" not in k
