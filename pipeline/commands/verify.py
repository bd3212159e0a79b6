"""`proxycomp verify`: decode a sample of output documents with the compressor that made
them and compare them with the raw bytes (stored, or re-read from the input), and check
every done shard's Parquet against the checksum in its marker."""

from __future__ import annotations

import dataclasses

import numpy as np

from compressor_model.corpus import Document, read_shard
from compressor_model.numerics import Precision

from ..backends.model_actor import ModelService
from ..backends.registry import make_backend
from ..config import JobConfig
from ..job.plan import ShardTask, plan_tasks
from ..redact import redact
from ..store.files import sha256_file
from ..store.layout import Marker, OutputLayout
from ..store.markers import MarkerIndex
from ..store.parquet import read_meta, read_rows


def verify_output(cfg: JobConfig, sample: int, seed: int = 0, service=None, log=print) -> dict:
    """`service`: a model service to decode with (default: one loaded here, in the
    precision the output was made in)."""
    so, layout = cfg.storage_options, OutputLayout(cfg.output)
    index = MarkerIndex(cfg.output, so)
    tasks = [t for t in plan_tasks(cfg) if t.name in index.done]
    markers = index.markers(Marker.DONE, [t.name for t in tasks])
    report = {"shards": len(tasks), "checksum_failures": [], "checked_docs": 0, "ok_docs": 0, "failed_docs": []}
    rows = []  # (task, row index in the parquet)
    for t in tasks:
        marker = markers[t.name]
        if sha256_file(layout.shard(t.name), so) != marker["parquet"]["sha256"]:
            report["checksum_failures"].append(t.name)
        rows += [(t, i) for i in range(marker["rows"])]
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(rows), size=min(sample, len(rows)), replace=False).tolist()) if rows else []
    if picked:
        if cfg.model.compressor.needs_model and service is None:
            service = ModelService(_same_precision(cfg, rows[picked[0]][0]))
        backend = make_backend(cfg, service, remote=False)
        by_task: dict = {}
        for i in picked:
            t, r = rows[i]
            by_task.setdefault(t.name, (t, []))[1].append(r)
        for t, wanted in by_task.values():
            try:
                _verify_rows(cfg, t, wanted, backend, report)
            except Exception as e:  # noqa: BLE001 - a damaged file fails its rows, not the check
                report["checked_docs"] += len(wanted)
                report["failed_docs"] += [{"shard": t.name, "row": r, "source": redact(t.input_url),
                                           "reason": f"cannot decode: {redact(type(e).__name__ + ': ' + str(e))}"}
                                          for r in wanted]
    report["ok"] = not report["checksum_failures"] and report["ok_docs"] == report["checked_docs"]
    return report


def _same_precision(cfg: JobConfig, task: ShardTask) -> JobConfig:
    """The job config with the precision the output was made with (not what `auto` would
    pick on this machine): decoding needs the producer's exact probabilities."""
    made = read_meta(OutputLayout(cfg.output).shard(task.name), cfg.storage_options).precision
    if not made:
        return cfg
    return dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, precision=Precision(made)))


def _verify_rows(cfg: JobConfig, task: ShardTask, wanted: list[int], backend, report: dict) -> None:
    so = cfg.storage_options
    stored = read_rows(OutputLayout(cfg.output).shard(task.name), so, wanted)
    if stored.meta.namespace != backend.info.namespace:
        report["failed_docs"] += [{"shard": task.name, "row": r, "reason": "made by a different compressor/numerics "
                                   f"({stored.meta.numerics}); verify with the same model and device kind"} for r in wanted]
        report["checked_docs"] += len(wanted)
        return
    raws = stored.raw
    if any(r is None for r in raws):  # raw bytes not stored: re-read the input rows
        by_row = {d.row: d.data for d in read_shard(task.input_url, cfg.reader, so) if isinstance(d, Document)}
        raws = [by_row.get(int(r)) for r in stored.source_row]
    for r, raw, got in zip(wanted, raws, backend.decode(stored)):
        report["checked_docs"] += 1
        if raw is not None and got == raw:
            report["ok_docs"] += 1
        else:
            report["failed_docs"].append({"shard": task.name, "row": r, "source": redact(task.input_url),
                                          "reason": "decoded bytes differ from the original"})
