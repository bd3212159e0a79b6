"""`proxycomp plan`: what a run would cost, before it spends anything. From the input's
listing and a small hash-chosen sample (the calibration sampler), and the output's
markers when there is one; nothing is written anywhere.

GPU-hours come from a rate in bytes per second per GPU: `--bytes-per-s-per-gpu`, or
the `bytes_per_s_pipeline` (else `bytes_per_s_engine`) of a `make bench-gpu`
summary.json (`--bench`), else the projection in deploy/README.md, which says it is one.
"""

from __future__ import annotations

import dataclasses
import json
import time

import fsspec

from compressor_model.corpus import Document, ShardError, first_bytes, read_shard
from compressor_model.engine import NeuralCompressor

from ..backends.model_actor import read_checkpoint
from ..config import JobConfig, SampleSpec
from ..job.calibration import sample_in_process
from ..job.plan import changed_inputs, plan_tasks
from ..redact import redact
from ..store.files import exists
from ..store.layout import Marker
from ..store.markers import MarkerIndex

PROJECTED_BYTES_PER_S_PER_GPU = 2e6  # deploy/README.md's capacity plan (40M model, H100): a projection, not a measurement


def _rate(per_gpu: float | None, bench: str | None, so: dict) -> tuple[float, str]:
    if per_gpu:
        return per_gpu, "--bytes-per-s-per-gpu"
    if bench:
        with fsspec.open(bench, "rb", **so) as f:
            s = json.loads(f.read())
        for key in ("bytes_per_s_pipeline", "bytes_per_s_engine"):
            if s.get(key):
                return float(s[key]), f"{key} of {redact(bench)} (measured on {s.get('gpu') or s.get('device')})"
        raise ValueError(f"{redact(bench)}: no bytes_per_s_pipeline or bytes_per_s_engine (not a bench-gpu summary?)")
    return PROJECTED_BYTES_PER_S_PER_GPU, "assumed: deploy/README.md's projection for the 40M model on an H100 (not measured)"


def _read_whole(tasks, cfg: JobConfig, budget: int) -> list[tuple[int, int, int]]:
    """(stored bytes, documents, text bytes) of the smallest shards, each read to its end,
    up to `budget` text bytes in all."""
    out = []
    for t in sorted(tasks, key=lambda t: t.size)[:8]:
        docs = raw = 0
        try:
            for item in read_shard(t.input_url, cfg.reader, cfg.storage_options):
                if isinstance(item, Document):
                    docs, raw = docs + 1, raw + len(item.data)
                if raw > budget:
                    break
        except ShardError:
            continue
        if raw > budget:
            break
        out.append((t.size, docs, raw))
        budget -= raw
    return out


def plan_run(cfg: JobConfig, sample_bytes: int = 256 << 10, model_bytes: int = 20_000, per_gpu: float | None = None,
             bench: str | None = None, usd_per_gpu_hour: float | None = None) -> dict:
    t0 = time.perf_counter()
    tasks = plan_tasks(cfg)
    stored = sum(t.size for t in tasks)
    _, docs, _ = sample_in_process(tasks, SampleSpec(bytes=sample_bytes, doc_bytes=sample_bytes), cfg.reader,
                                   cfg.storage_options)
    names = {t.name for t in tasks}
    out: dict = {"input": redact(cfg.input), "shards": len(tasks), "stored_bytes": stored,
                 "sample": {"documents": len(docs), "bytes": sum(map(len, docs))}}
    # Raw bytes and documents per stored byte, from the smallest shards read whole: a
    # compressed input (.zst, Parquet) holds more text than its size says.
    whole = _read_whole(tasks, cfg, sample_bytes)
    if whole:
        s_bytes, s_docs, raw = (sum(w[k] for w in whole) for k in range(3))
        out["estimated"] = {"raw_bytes": round(stored * raw / max(1, s_bytes)),
                            "documents": round(stored * s_docs / max(1, s_bytes)),
                            "from": f"{len(whole)} whole shard(s), {s_bytes:,} stored bytes"}
    raw_total = (out.get("estimated") or {}).get("raw_bytes", stored)
    if cfg.output and exists(cfg.output, cfg.storage_options):
        index = MarkerIndex(cfg.output, cfg.storage_options)
        done = index.markers(Marker.DONE, [t.name for t in tasks if t.name in index.done])
        stale = changed_inputs(tasks, done)
        out["output"] = {"done": len(done), "stale": len(stale), "failed": len(index.failed & names),
                         "to_run": len(tasks) - len(done) + len(stale)}
        left = {t.name for t in tasks if t.name not in done or t.name in stale}
        raw_total = raw_total * sum(t.size for t in tasks if t.name in left) / max(1, stored)
    if model_bytes and cfg.model.compressor.needs_model and docs:
        engine = dataclasses.replace(cfg.engine, compile=False)  # a small sample: compiling would cost more than it saves
        comp = NeuralCompressor.load(read_checkpoint(cfg.model.checkpoint, cfg.storage_options), engine, cfg.segment)
        few = first_bytes(docs, model_bytes)
        n = sum(map(len, few))
        th = comp.calibrate(few)
        comp.compress(few, th)
        st = comp.stats
        out["model_positions_per_byte"] = {"segmentation": round(st.seg_positions / n, 3),
                                           "coding": round(st.code_positions / n, 3), "sample_bytes": n,
                                           "bytes_per_symbol": round(n / max(1, st.symbols_out), 3)}
    rate, source = _rate(per_gpu, bench, cfg.storage_options)
    hours = raw_total / rate / 3600
    out["to_compress_bytes"] = round(raw_total)
    out["gpu"] = {"bytes_per_s_per_gpu": rate, "rate_from": source, "gpu_hours": round(hours, 2)}
    if usd_per_gpu_hour is not None:
        out["gpu"]["usd"] = round(hours * usd_per_gpu_hour, 2)
        out["gpu"]["usd_per_gpu_hour"] = usd_per_gpu_hour
    out["plan_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def text(p: dict) -> str:
    lines = [f"input: {p['input']}: {p['shards']:,} shards, {p['stored_bytes']:,} bytes stored"]
    if "estimated" in p:
        e = p["estimated"]
        lines.append(f"estimated: {e['raw_bytes']:,} bytes of text in {e['documents']:,} documents (from {e['from']})")
    if "output" in p:
        o = p["output"]
        lines.append(f"output: {o['done']:,} done ({o['stale']:,} stale), {o['failed']:,} failed: {o['to_run']:,} shard(s) to run")
    if "model_positions_per_byte" in p:
        m = p["model_positions_per_byte"]
        lines.append(f"model positions per byte: {m['segmentation']} segmentation + {m['coding']} coding, "
                     f"{m['bytes_per_symbol']} bytes/symbol, on a {m['sample_bytes']:,}-byte sample (a small sample "
                     "overstates segmentation: its rows are padded to a fixed shape)")
    g = p["gpu"]
    cost = f", ${g['usd']:,.2f} at ${g['usd_per_gpu_hour']:g}/GPU-hour" if "usd" in g else ""
    lines.append(f"to compress: {p['to_compress_bytes']:,} bytes: {g['gpu_hours']:,.1f} GPU-hours{cost} at "
                 f"{g['bytes_per_s_per_gpu'] / 1e6:,.2f} MB/s per GPU ({g['rate_from']})")
    return "\n".join(lines)
