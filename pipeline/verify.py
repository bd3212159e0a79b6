"""`proxycomp verify`: decode a sample of output documents with the model and compare
them with the raw bytes (stored, or re-read from the input), and check every done
shard's Parquet against the checksum in its marker."""

from __future__ import annotations

import dataclasses
import hashlib

import fsspec
import numpy as np
import pyarrow.parquet as pq

from coder import CoderConfig, Packed, Windows, stitch_offsets, unpack
from compressor_model.corpus import Document, read_shard
from compressor_model.numerics import Precision

from .compressors import REGISTRY
from .config import Compressor, JobConfig
from .plan import plan_tasks
from .markers import MarkerIndex
from .model_service import ModelService
from .output import read_metadata
from .redact import redact


def _sha256(url: str, so: dict) -> str:
    h = hashlib.sha256()
    with fsspec.open(url, "rb", **so) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_output(cfg: JobConfig, sample: int, seed: int = 0, service=None, log=print) -> dict:
    so = cfg.storage_options
    index = MarkerIndex(cfg.output, so)
    tasks = [t for t in plan_tasks(cfg) if t.name in index.done]
    markers = index.markers("_done", [t.name for t in tasks])
    report = {"shards": len(tasks), "checksum_failures": [], "checked_docs": 0, "ok_docs": 0, "failed_docs": []}
    rows = []  # (task, row index in the parquet)
    for t in tasks:
        marker = markers[t.name]
        if _sha256(t.out(cfg, "shards"), so) != marker["parquet"]["sha256"]:
            report["checksum_failures"].append(t.name)
        rows += [(t, i) for i in range(marker["rows"])]
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(rows), size=min(sample, len(rows)), replace=False).tolist()) if rows else []
    if picked:
        if cfg.model.compressor is Compressor.NEURAL:
            service = service or ModelService(_same_precision(cfg, rows[picked[0]][0]))
        else:
            service = service or REGISTRY[cfg.model.compressor](cfg)
        info = service.info() if callable(getattr(service, "info", None)) else service.info
        by_task: dict = {}
        for i in picked:
            t, r = rows[i]
            by_task.setdefault(t.name, (t, []))[1].append(r)
        for t, wanted in by_task.values():
            try:
                _verify_rows(cfg, t, wanted, service, info, report)
            except Exception as e:  # noqa: BLE001 - a damaged file fails its rows, not the check
                report["checked_docs"] += len(wanted)
                report["failed_docs"] += [{"shard": t.name, "row": r, "source": redact(t.input_url),
                                           "reason": f"cannot decode: {redact(type(e).__name__ + ': ' + str(e))}"}
                                          for r in wanted]
    report["ok"] = not report["checksum_failures"] and report["ok_docs"] == report["checked_docs"]
    return report


def _same_precision(cfg: JobConfig, task) -> JobConfig:
    """The job config with the precision the output was made with (not what `auto` would
    pick on this machine): decoding needs the producer's exact probabilities."""
    with fsspec.open(task.out(cfg, "shards"), "rb", **cfg.storage_options) as f:
        made = read_metadata(pq.ParquetFile(f)).get("precision")
    if not made:
        return cfg
    return dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, precision=Precision(made)))


def _verify_rows(cfg, task, wanted, service, info, report):
    so = cfg.storage_options
    with fsspec.open(task.out(cfg, "shards"), "rb", **so) as f:
        pf = pq.ParquetFile(f)
        meta = read_metadata(pf)
        table = pf.read().take(wanted)
    if meta.get("namespace") != info["namespace"]:
        report["failed_docs"] += [{"shard": task.name, "row": r, "reason": "made by a different compressor/numerics "
                                   f"({meta.get('numerics')}); verify with the same model and device kind"} for r in wanted]
        report["checked_docs"] += len(wanted)
        return
    raws = table.column("raw").to_pylist()
    if any(r is None for r in raws):  # raw bytes not stored: re-read the input rows
        by_row = {d.row: d.data for d in read_shard(task.input_url, cfg.reader, so) if isinstance(d, Document)}
        raws = [by_row.get(r) for r in table.column("source_row").to_pylist()]
    if meta.get("compressor") != "neural":  # gzip / tokenizer: decoding needs no model
        for i, r in enumerate(wanted):
            got = service.decode_symbols(table.column("symbols")[i].values.to_numpy())
            _tally(report, task, r, raws[i] is not None and got == raws[i])
        return
    coder = CoderConfig(**meta["coder"])
    seg_offs, codes, counts, win_offs = [], [], [], []
    for i in range(table.num_rows):
        seg_offs.append(table.column("seg_offsets")[i].as_py())
        sym = np.asarray(table.column("symbols")[i].as_py(), np.uint16)
        sym_off = np.asarray(table.column("seg_symbol_offsets")[i].as_py(), np.int64)
        win_offs.append(np.asarray(table.column("seg_window_offsets")[i].as_py(), np.int64))
        codes.append(unpack(Packed(sym, sym_off), np.diff(win_offs[-1]), coder)[0])
        counts.append(np.asarray(table.column("window_bytes")[i].as_py(), np.int32))
    seg_off = stitch_offsets(seg_offs)
    win = Windows(np.concatenate(codes) if codes else np.zeros(0, np.uint32),
                  np.concatenate(counts) if counts else np.zeros(0, np.int32), stitch_offsets(win_offs))
    data, bad = service.decode(win, seg_off)
    pos = 0
    seg_i = 0
    for i, r in enumerate(wanted):
        n = int(table.column("n_bytes")[i].as_py())
        n_seg = len(table.column("seg_offsets")[i].as_py()) - 1
        got = data[pos : pos + n].tobytes()
        _tally(report, task, r, raws[i] is not None and got == raws[i] and not bad[seg_i : seg_i + n_seg].any())
        pos += n
        seg_i += n_seg


def _tally(report: dict, task, row: int, ok: bool) -> None:
    report["checked_docs"] += 1
    if ok:
        report["ok_docs"] += 1
    else:
        report["failed_docs"].append({"shard": task.name, "row": row, "source": redact(task.input_url),
                                      "reason": "decoded bytes differ from the original"})
