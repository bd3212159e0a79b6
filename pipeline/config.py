"""The job's configuration: one typed dataclass per package, nested into JobConfig.

Resolution order: dataclass defaults, then a YAML file, then CLI overrides
(`--set section.field=value`, plus the few first-class flags of `proxycomp run`). The
resolved config is written next to the outputs as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field

import fsspec
import yaml

from cache.config import CacheConfig
from compressor_model.config import EngineConfig, Precision, Role, SegmentConfig, setting
from compressor_model.corpus import ReaderConfig

from .errors import SettingsError
from .redact import register


class Compressor(enum.Enum):
    """Which proxy compressor makes the symbols (pipeline.backends.registry)."""

    NEURAL = "neural"
    TOKENIZER = "tokenizer"
    GZIP = "gzip"

    @property
    def needs_model(self) -> bool:
        """Runs in model actors, with entropy thresholds and numerics (else inside the shard tasks)."""
        return self is Compressor.NEURAL


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
class RunConfig:  # scheduling (its JobConfig field says so), but for doc_slice_bytes
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
    doc_slice_bytes: int = setting(4 << 20, Role.CONTENT)  # longer documents are compressed a slice at a time
    small_shard_bytes: int = 256 << 10  # shards smaller than this (on storage) share tasks and model calls
    group_bytes: int = 1 << 20  # ... up to this many bytes (on storage) per task
    worker_memory_bytes: int = 4 << 30  # a shard worker above this RSS fails its shard with a clear reason
    max_retries: int = 2  # per shard: retries after an error of its own (our code, its input, storage)
    max_system_retries: int = 10  # per shard, apart: after the cluster lost something (a worker, an actor, a node)
    retry_backoff_s: float = 2.0  # a retry starts this many seconds x its attempt later (at most 5x)
    stall_timeout_s: float = 900.0  # a shard task with no progress this long is cancelled and retried (0: never)
    straggler_factor: float = 3.0  # at a job's tail, a task running this many times the median one gets a duplicate (0: never) ...
    straggler_min_s: float = 120.0  # ... once it has run at least this long (the first attempt to commit wins)
    drain_grace_s: float = 120.0  # after SIGTERM: how long shards in flight get to commit (then abandoned, cleanly)
    max_failed_fraction: float = 0.5  # stop the job early when this share of finished shards failed ...
    min_failed_to_stop: int = 20  # ... and at least this many did (0: never stop early)
    progress: bool = True  # progress bars, where stderr is a terminal
    log_every_s: float = 60.0  # elsewhere a heartbeat line this often (and at the first shard, and at the end); 0: none
    metrics: bool = True  # Ray metrics (pipeline.metrics); a local cluster then serves its dashboard on loopback
    dashboard_port: int = 8265  # the local cluster's dashboard (127.0.0.1 only)


@dataclass(frozen=True)
class SampleSpec:
    """A sample spread over an input by hashing (pipeline.job.calibration): what the
    segmentation thresholds are calibrated on, what analyses and tokenizer training read."""

    bytes: int = 1 << 20  # sample size
    shards: int = 64  # ... from up to this many shards, chosen by hash, an equal share each
    doc_bytes: int = 16 << 10  # ... each document cut to this
    scan_bytes: int = 64 << 20  # ... reading at most this much of a shard
    local_bytes: int = 16 << 20  # ... in the driver when the chosen shards hold less, else in tasks


@dataclass(frozen=True)
class JobConfig:
    input: str = ""
    output: str = setting("", Role.SCHEDULING)
    storage_options: dict = field(default_factory=dict, metadata={"role": Role.SCHEDULING})  # passed to fsspec
    model: ModelSource = ModelSource()
    reader: ReaderConfig = ReaderConfig()
    segment: SegmentConfig = SegmentConfig()
    engine: EngineConfig = EngineConfig()
    cache: CacheConfig = setting(CacheConfig(), Role.SCHEDULING)
    output_format: OutputConfig = OutputConfig()
    run: RunConfig = setting(RunConfig(), Role.SCHEDULING)
    # The thresholds it gives are stamped into every shard (and checked); which sample
    # gave them is not part of a shard's content.
    calibration: SampleSpec = setting(SampleSpec(), Role.SCHEDULING)

    def __post_init__(self):
        register_secrets(self)  # every process that holds a config redacts its credentials

    def __reduce__(self):
        # Unpickled (a Ray task or actor receives it) through __init__: registered there too.
        return type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self))


def _convert(tp, value, where: str):
    """Coerce a YAML/CLI value to the annotated type (dataclasses, enums, scalars)."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return value if isinstance(value, tp) else tp(value)
        except ValueError:
            raise SettingsError(f"{where}: {value!r} is not one of {[e.value for e in tp]}") from None
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes", "on"):
                return True
            if value.lower() in ("false", "0", "no", "off"):
                return False
            raise SettingsError(f"{where}: {value!r} is not a boolean")
        if isinstance(value, (bool, int)) and value in (0, 1):
            return bool(value)
        raise SettingsError(f"{where}: {value!r} is not a boolean")
    if tp is int:
        return _integer(value, where)
    if tp is float:
        try:
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                return float(value)
        except ValueError:
            pass
        raise SettingsError(f"{where}: {value!r} is not a number")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise SettingsError(f"{where}: expected text, got {value!r}")
        return str(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping")
        return dict(value)
    return value


def _integer(value, where: str) -> int:
    """An integer as written (4, "4", 4.0, 1e6); a value with a fraction is refused, not
    cut: 512.7 lanes must not quietly become 512."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                number = None
    if isinstance(number, float) and number.is_integer() and abs(number) < 2**53:
        return int(number)
    raise SettingsError(f"{where}: {value!r} is not an integer")


# Settings that moved: (old section, old field) -> (new section, new field). Configs
# written by earlier versions (an output's config.yaml, a user's YAML) still load.
MOVED = {("run", f"calibration_{k}"): ("calibration", k) for k in ("bytes", "shards", "doc_bytes", "scan_bytes", "local_bytes")}


def _upgrade(data: dict) -> dict:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for (old_section, old), (new_section, new) in MOVED.items():
        if isinstance(data.get(old_section), dict) and old in data[old_section]:
            data.setdefault(new_section, {})
            data[new_section].setdefault(new, data[old_section].pop(old))
    return data


def from_dict(cls, data: dict, where: str = ""):
    if cls is JobConfig:
        data = _upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SettingsError(f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
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
        raise SettingsError(f"override {dotted!r}: expected section.field=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise SettingsError(f"override {dotted!r}: {p} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise SettingsError(f"override {dotted!r}: the value is not valid YAML ({_yaml_problem(e)})") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or type(e).__name__}{where}"


def read_yaml(url: str, storage_options: dict | None = None) -> dict:
    """A YAML mapping from any fsspec URL; a missing file or bad YAML is a ValueError
    that names the file (and the line)."""
    try:
        with fsspec.open(url, "r", **(storage_options or {})) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise SettingsError(f"{url}: no such file") from None
    except IsADirectoryError:
        raise SettingsError(f"{url}: is a directory, not a YAML file") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"{url}: not valid YAML: {_yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{url}: expected a YAML mapping of settings, got a {type(data).__name__}")
    return data


def load_config(path: str | None = None, overrides: list[str] = ()) -> JobConfig:
    """Defaults, then the YAML file, then `section.field=value` overrides in order; local
    paths made absolute (see absolute_paths)."""
    data: dict = read_yaml(path) if path else {}
    for o in overrides:
        apply_override(data, o)
    return absolute_paths(from_dict(JobConfig, data))


def absolute_path(url: str) -> str:
    """A local path as an absolute path (file:// dropped); any other URL as it is, less a
    trailing slash. What a config stores must mean the same from any directory."""
    if not url:
        return url
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" in url:
        return url.rstrip("/") if not url.endswith("://") else url
    return os.path.abspath(os.path.expanduser(url))


def absolute_paths(cfg: JobConfig) -> JobConfig:
    """The config with every local path absolute: a relative --input stored as typed
    could not be found from another directory (status, verify, export), and a shard's
    metadata would depend on how its input path was spelled."""
    return dataclasses.replace(
        cfg, input=absolute_path(cfg.input), output=absolute_path(cfg.output),
        model=dataclasses.replace(cfg.model, checkpoint=absolute_path(cfg.model.checkpoint),
                                  tokenizer=absolute_path(cfg.model.tokenizer)),
        cache=dataclasses.replace(cfg.cache, warm_from=absolute_path(cfg.cache.warm_from)),
    )


def dump_config(cfg: JobConfig) -> str:
    d = to_dict(cfg)
    d["storage_options"] = {k: "***" if secret_key(k) else v for k, v in d["storage_options"].items()}
    return yaml.safe_dump(d, sort_keys=False)


def content_config(cfg: JobConfig) -> dict:
    """The settings an output's bytes depend on (what goes into every shard's metadata),
    derived from each field's declared `Role`. Scheduling and resources (actors,
    workers, batch sizes, retries, the cache, the lane count, the lane sets, CUDA graphs
    or compilation on or off) change how fast a shard is made, never what it contains,
    so they stay out: a shard rerun with more workers is byte-identical. In int8 the
    float-only settings (device, group size) do not change a bit either, so they stay
    out too: int8 shards are the same bytes wherever they are made."""
    precision = cfg.engine.precision.resolved()
    keep = {Role.CONTENT} if precision is Precision.INT8 else {Role.CONTENT, Role.FLOAT_ONLY}

    def pick(obj, values: dict, default: Role) -> dict:
        out = {}
        for f in dataclasses.fields(obj):
            role, value = f.metadata.get("role", default), getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                if part := pick(value, values[f.name], role):
                    out[f.name] = part
            elif role in keep:
                out[f.name] = values[f.name]
        return out

    d = pick(cfg, to_dict(cfg), Role.CONTENT)
    d["engine"]["precision"] = precision.value  # what `auto` resolved to
    return d


def settings_key(cfg: JobConfig, fingerprint: str) -> str:
    """What every shard of one output must share, known without starting a model: the
    content settings and the model's fingerprint. Left out: where the input and the
    model files live (moving them changes no byte) and the precision and device, which
    the model actor's namespace covers once it runs (`auto` and the precision it picks
    are the same numerics)."""
    d = content_config(cfg)
    del d["input"]
    d["model"] = {"compressor": d["model"]["compressor"], "fingerprint": fingerprint}
    d["engine"] = {k: v for k, v in d["engine"].items() if k not in ("precision", "device")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:24]


# Fields that must be at least 1 (section, field); checked before any cluster starts.
_POSITIVE = [("engine", "lanes"), ("engine", "group"), ("engine", "max_window_bytes"), ("segment", "call_positions"),
             ("segment", "max_segment_bytes"), ("segment", "fixed_bytes"), ("run", "model_actors"),
             ("run", "shard_workers"), ("run", "batch_bytes"), ("run", "doc_slice_bytes"),
             ("output_format", "row_group_docs"), ("cache", "shards"), ("cache", "batch")]


def check_job(cfg: JobConfig) -> None:
    """What can be wrong with a run's settings, found before Ray starts (ValueError)."""
    if not cfg.input:
        raise SettingsError("no input: pass --input URL or set `input:` in the --config file")
    if not cfg.output:
        raise SettingsError("no output: pass --output URL or set `output:` in the --config file")
    for section, name in _POSITIVE:
        value = getattr(getattr(cfg, section), name)
        if value < 1:
            raise SettingsError(f"{section}.{name} must be at least 1, got {value}")
    for section, name in (("run", "max_retries"), ("run", "max_system_retries"), ("run", "min_failed_to_stop"),
                          ("run", "shard_cpus"), ("run", "gpus_per_actor"),
                          ("run", "cpus_per_actor"), ("run", "torch_threads"), ("engine", "lane_sets")):
        value = getattr(getattr(cfg, section), name)
        if value < 0:
            raise SettingsError(f"{section}.{name} must not be negative, got {value}")
    e = cfg.engine
    if e.lanes % (e.group * max(1, e.lane_sets)):
        raise SettingsError(f"engine.lanes ({e.lanes}) must be a multiple of engine.group ({e.group})"
                         + (f" x engine.lane_sets ({e.lane_sets})" if e.lane_sets else ""))
    try:
        e.coder
    except ValueError as err:
        raise SettingsError(f"engine: {err}") from None


def register_secrets(cfg: JobConfig) -> JobConfig:
    """Tell the redactor about this config's credentials (storage options, URL userinfo).
    Every JobConfig does it when it is made or unpickled: no entry point has to."""
    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif secret_key(k) and isinstance(v, str):
                register(v)

    walk(cfg.storage_options)
    for url in (cfg.input, cfg.output, cfg.model.checkpoint, cfg.model.tokenizer):
        m = re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://([^/@\s:]+):([^@\s]+)@", url or "")
        if m:
            register(m.group(2))
    return cfg


def secret_key(key: str) -> bool:
    """Whether a storage option holds a credential (masked in config.yaml, never logged)."""
    k = key.lower()
    return any(s in k for s in ("secret", "password", "token", "key")) and "endpoint" not in k
