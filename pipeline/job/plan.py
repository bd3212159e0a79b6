"""What a run has to do, from listings: the input's shards and their output names, which
are done or failed (store.markers), grouping small shards, the status of an output
and its manifest. Nothing here imports Ray or torch, so `proxycomp status` starts fast."""

from __future__ import annotations

import fnmatch
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import fsspec

from compressor_model.config import Precision
from compressor_model.corpus import SHARD_SUFFIXES, list_shards

from ..config import JobConfig, absolute_paths, from_dict, read_yaml
from ..errors import JobError
from ..redact import redact
from ..store.files import write_json_atomic
from ..store.layout import Marker, OutputLayout
from ..store.markers import MarkerIndex


@dataclass
class ShardTask:
    index: int
    input_url: str
    name: str  # output name (no extension)
    size: int = 0  # bytes on storage, for grouping small shards
    fingerprint: str = ""  # the input's listing tag (ETag or mtime, and size): its marker records it



def output_config(output: str, storage_options: dict) -> JobConfig:
    """The config a run wrote next to its outputs, with these storage options."""
    url = OutputLayout(output).config
    try:
        fs, path = fsspec.core.url_to_fs(output, **storage_options)
        is_file, found = fs.isfile(path), fs.exists(fsspec.core.url_to_fs(url, **storage_options)[1])
    except Exception as e:  # noqa: BLE001 - any storage backend error; report it scrubbed
        raise JobError(f"cannot read {redact(output)}: {redact(type(e).__name__ + ': ' + str(e))}") from None
    if is_file:
        raise JobError(f"{redact(output)} is a file; a proxycomp output is a directory (or prefix) holding config.yaml")
    if not found:
        raise JobError(f"{redact(url)} not found: is {redact(output)} the output of a proxycomp run?")
    data = read_yaml(url, storage_options)
    data["storage_options"] = storage_options
    data["output"] = output
    return absolute_paths(from_dict(JobConfig, data))


def shard_name(input_root: str, url: str) -> str:
    """Deterministic output name from the input shard's path under the input root."""
    root = input_root.rstrip("/")
    rel = url[len(root) :].lstrip("/") if url.startswith(root) and url != root else url.rsplit("/", 1)[-1]
    for suf in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if rel.lower().endswith(suf):
            rel = rel[: -len(suf)]
            break
    return rel.replace("/", "__")


def plan_tasks(cfg: JobConfig) -> list[ShardTask]:
    """The job's input shards, in listing order, with their output names."""
    return plan_input(cfg.input, cfg.storage_options)


def plan_input(url: str, storage_options: dict) -> list[ShardTask]:
    try:
        urls = list_shards(url, storage_options, tags=True)
    except Exception as e:  # noqa: BLE001 - any storage backend error; report it scrubbed
        raise JobError(f"cannot list input {redact(url)}: {redact(type(e).__name__ + ': ' + str(e))}") from None
    if not urls:
        raise JobError(f"no input shards (.jsonl, .jsonl.zst, .parquet) under {redact(url)}")
    tasks = [ShardTask(i, u, shard_name(url, u), n, tag) for i, (u, n, tag) in enumerate(urls)]
    first: dict[str, ShardTask] = {}
    for t in tasks:
        other = first.setdefault(t.name, t)
        if other is not t:
            raise JobError(f"input shards {redact(other.input_url)} and {redact(t.input_url)} both map to the output "
                           f"name {t.name!r}; rename or move one of them")
    return tasks


def group_small(tasks: list[ShardTask], small_bytes: int, group_bytes: int, parallel: int = 1) -> list[list[ShardTask]]:
    """Shards under small_bytes (on storage) travel together in listing order, up to
    group_bytes per group; every other shard is a group of its own. Groups are made
    small enough that there are at least `parallel` of them when the small shards
    allow it, so grouping never leaves shard workers idle."""
    small = sum(t.size for t in tasks if t.size < small_bytes)
    group_bytes = min(group_bytes, max(1, -(-small // max(1, parallel))))
    groups: list[list[ShardTask]] = []
    current: list[ShardTask] = []
    size = 0
    for t in tasks:
        if t.size >= small_bytes:
            groups.append([t])
            continue
        if current and size + t.size > group_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += t.size
    if current:
        groups.append(current)
    return groups


def select(tasks: list[ShardTask], patterns: list[str]) -> list[ShardTask]:
    """Tasks whose output name or input file name matches one of the patterns (globs)."""
    out = [t for t in tasks if any(fnmatch.fnmatch(t.name, p) or fnmatch.fnmatch(t.input_url.rsplit("/", 1)[-1], p)
                                   for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(t.name, p) or fnmatch.fnmatch(t.input_url.rsplit("/", 1)[-1], p)
                                              for t in tasks)]
    if unknown:
        raise JobError(f"--shards: no shard matches {unknown}; known: {[t.name for t in tasks][:20]}")
    return out


def continue_in_made_precision(index: MarkerIndex, cfg: JobConfig, tasks: list[ShardTask], log) -> JobConfig:
    """`engine.precision: auto` over an output whose done shards were made in a float
    precision (before int8 was the default): continue it in that precision, so that
    one output holds one numerics. Any other case: the config as it is."""
    if not cfg.model.compressor.needs_model or cfg.engine.precision is not Precision.AUTO:
        return cfg
    done = [t.name for t in tasks if t.name in index.done]
    made = {m.get("precision") for m in index.markers(Marker.DONE, done).values()} - {None}
    if len(made) != 1 or not Precision(next(iter(made))).is_float:
        return cfg
    p = Precision(made.pop())
    log(f"continuing in {p.value}, the precision the {len(done)} done shard(s) of this output were made in "
        f"(int8, the default, gives the same bits on every machine: --force redoes the output in it)")
    return replace(cfg, engine=replace(cfg.engine, precision=p))


def _made_in(markers: dict) -> str:
    made = sorted({m["precision"] for m in markers.values() if m.get("precision")})
    return f" (made in {', '.join(made)}: engine.precision={made[0]} continues it)" if len(made) == 1 else ""


def check_mixing(index: MarkerIndex, cfg: JobConfig, key: str, ours: str, tasks: list[ShardTask], redo: set[str],
                 named: bool) -> list[str]:
    """Refuse a run that would leave shards made with other settings next to its own:
    one output, one compressor and one set of settings. `key` is the marker field
    compared (`settings`, known before any model starts, or the model actor's
    `namespace`, which adds the numerics); markers without it are not judged here.
    `redo`: the shards this run (re)writes; the others must match. Returns the shards
    in `redo` whose markers do not: they are redone, and their markers go first."""
    done = [t.name for t in tasks if t.name in index.done]
    markers = index.markers(Marker.DONE, done)
    stale = sorted(n for n, m in markers.items() if m.get(key) is not None and m[key] != ours)
    keep = [n for n in stale if n not in redo]
    hint = _made_in({n: markers[n] for n in keep}) if key == "settings" else ""
    if keep and named:
        raise JobError(
            f"{len(keep)} other shard(s) in {redact(cfg.output)} were made by a different compressor or settings "
            f"(e.g. {keep[:3]}){hint}, and --shards reruns only the shards it names, so this output would mix them; "
            "run with the settings that made the output, or use another --output, or --force without --shards "
            "to redo every shard with these settings"
        )
    if keep:
        raise JobError(
            f"{len(keep)} shard(s) in {redact(cfg.output)} were made by a different compressor or settings "
            f"(e.g. {keep[:3]}){hint}; use another --output, or --force to redo them"
        )
    return [n for n in stale if n in redo]


def changed_inputs(tasks: list[ShardTask], done_markers: dict[str, dict]) -> list[str]:
    """Done shards whose input changed since their output was made (its listing tag is
    not the one the marker recorded). Markers of versions that recorded none: unknown,
    not counted."""
    return [t.name for t in tasks if t.name in done_markers
            and done_markers[t.name].get("input_fingerprint") not in (None, t.fingerprint)]


def shard_status(cfg: JobConfig, index: MarkerIndex | None = None, max_reads: int | None = None) -> dict:
    """Done / failed / pending per input shard, from the markers' listings (the source of
    truth); `index`: the output's markers, when the caller listed them already.

    Totals and staleness need the done markers' contents. Those the ledger lacks are
    fetched, at most `max_reads` of them (None: all): over a large output whose ledger
    is behind, the counts come at once and `unread` says how many done shards the
    totals and the stale check do not cover yet."""
    with ThreadPoolExecutor(1) as pool:  # the output's listings while the input is listed
        listing = pool.submit(MarkerIndex, cfg.output, cfg.storage_options) if index is None else None
        tasks = plan_tasks(cfg)
        index = index or listing.result()
    names = [t.name for t in tasks]
    listed = [n for n in names if n in index.done]
    skip = set(index.unread(Marker.DONE, listed)[max_reads:]) if max_reads is not None else set()
    done = index.markers(Marker.DONE, [n for n in listed if n not in skip])
    failed = index.markers(Marker.FAILED, [n for n in names if n in index.failed])
    totals = {k: sum(m.get(k, 0) for m in done.values()) for k in ("rows", "rejects", "bytes_in", "symbols_out")}
    out = {"done": [n for n in names if n in done or n in skip],
           "failed": {n: failed[n].get("reason", "") for n in names if n in failed},
           "stale": changed_inputs(tasks, done)}  # done, but made from an earlier version of the input
    out["pending"] = [n for n in names if n not in out["done"] and n not in out["failed"]]
    out["counts"] = {"total": len(tasks), "done": len(out["done"]), "failed": len(out["failed"]), "pending": len(out["pending"]),
                     "stale": len(out["stale"]), "unread": len(skip)}
    out["totals"] = totals
    return out


def write_manifest(cfg: JobConfig, tasks: list[ShardTask], seen: MarkerIndex | None = None,
                   ran: set[str] = frozenset()) -> dict:
    """manifest.json: every input shard's state. The listing is taken afresh when shards
    ran since `seen` was listed (they added markers); markers `seen` read are not fetched
    again, except those of the shards that ran."""
    if seen is not None and not ran:
        index = seen
    else:
        index = MarkerIndex(cfg.output, cfg.storage_options)
        if seen is not None:
            index.keep(seen, ran)
    names = [t.name for t in tasks]
    done = index.markers(Marker.DONE, [n for n in names if n in index.done])
    failed = index.markers(Marker.FAILED, [n for n in names if n in index.failed])
    index.save()
    shards = {}
    for t in tasks:
        if t.name in done:
            m = done[t.name]
            shards[t.name] = {"status": "done", **{k: m[k] for k in ("input", "rows", "rejects", "docs_in", "bytes_in", "symbols_out", "parquet")}}
        elif t.name in failed:
            shards[t.name] = {"status": "failed", **failed[t.name]}
        else:
            shards[t.name] = {"status": "pending", "input": redact(t.input_url)}
    manifest = {"schema_version": 1, "input": redact(cfg.input), "shards": shards}
    write_json_atomic(OutputLayout(cfg.output).manifest, manifest, cfg.storage_options)
    return manifest
