"""`proxycomp analyze ablations|stability|collisions|segments --input URL`: the paper's
compressor analyses (Table 6, Figure 4, Figure 12 / Table 12) on a sample of any corpus
or finished output, each a JSON result and a picture (`pipeline.plots`).

The sample is the calibration's (`pipeline.calibration`): documents chosen by hash from
up to `shards` shards, an equal share each, cut to `doc_bytes`. An output directory is
read through its Parquet's `raw` column. Results depend only on the input, the model and
the seed.
"""

from __future__ import annotations

import enum
import gzip
import os
import random
from collections import defaultdict
from dataclasses import dataclass

import fsspec
import numpy as np
from rapidfuzz.distance import Levenshtein
from tokenizers import Tokenizer

from compressor_model import ablation
from compressor_model.config import EngineConfig, Precision, SegmentConfig, Thresholds
from compressor_model.corpus import ReaderConfig
from compressor_model.engine import NeuralCompressor
from compressor_model.segment import calibrate_thresholds
from compressor_model.stdlib import stdlib_files, take_bytes

from ..backends.model_actor import read_checkpoint
from ..backends.whole_document import train_tokenizer
from ..config import SampleSpec
from ..errors import SettingsError
from ..job.calibration import sample_in_process
from ..job.plan import plan_input
from ..store.files import exists, read_json
from ..store.layout import OutputLayout


class Analysis(enum.Enum):
    ABLATIONS = "ablations"
    STABILITY = "stability"
    COLLISIONS = "collisions"
    SEGMENTS = "segments"


@dataclass(frozen=True)
class AnalysisConfig:
    sample_bytes: int = 200_000
    shards: int = 64
    doc_bytes: int = 4096
    seed: int = 0
    deletion: float = 0.10  # stability: share of characters deleted
    tokenizer: str = ""  # stability: a tokenizer.json; "": BPE (8k) trained on this Python's stdlib train split
    tokenizer_train_bytes: int = 3_000_000  # ... on this much of it
    checkpoint: str = ""  # "": the shipped model
    precision: Precision = Precision.AUTO


def _output_thresholds(url: str, comp: NeuralCompressor, storage_options: dict | None) -> Thresholds | None:
    """An output's own thresholds, when it is an output made with this model."""
    path = OutputLayout(url).thresholds
    if not exists(path, storage_options or {}):
        return None
    th = Thresholds(**read_json(path, storage_options or {}))
    return th if th.fingerprint == comp.fingerprint else None


def sample(url: str, cfg: AnalysisConfig, storage_options: dict | None = None) -> list[bytes]:
    """Documents from a corpus, or from a finished output's Parquet (`raw` column)."""
    so, layout = storage_options or {}, OutputLayout(url)
    is_output = exists(layout.config, so) and exists(layout.shards, so)
    reader = ReaderConfig(text_field="raw") if is_output else ReaderConfig()
    tasks = plan_input(layout.shards if is_output else url, so)
    return sample_in_process(tasks, SampleSpec(bytes=cfg.sample_bytes, shards=cfg.shards, doc_bytes=cfg.doc_bytes),
                             reader, so)[1]


def compressor(cfg: AnalysisConfig, storage_options: dict | None = None) -> NeuralCompressor:
    # Not compiled: a sample is small and the analyses call many shapes (each would compile
    # once, 10-30 s on 2 cores); the integers are the same either way.
    return NeuralCompressor.load(read_checkpoint(cfg.checkpoint, storage_options),
                                 EngineConfig(precision=cfg.precision, compile=False),
                                 SegmentConfig())


def ablations(docs: list[bytes], comp: NeuralCompressor, cfg: AnalysisConfig, th: Thresholds | None = None) -> dict:
    return ablation.run(comp, docs)


def delete_chars(text: str, share: float, rng: random.Random) -> str:
    return "".join(c for c in text if rng.random() >= share)


def stability(docs: list[bytes], comp: NeuralCompressor, cfg: AnalysisConfig, th: Thresholds | None = None) -> dict:
    """Normalized Levenshtein distance between each document's symbols before and after
    deleting `deletion` of its characters at random (seeded), per compressor."""
    rng = random.Random(cfg.seed)
    texts = [d.decode("utf-8", "replace") for d in docs]
    edited = [delete_chars(t, cfg.deletion, rng).encode() for t in texts]
    before = [t.encode() for t in texts]
    tok = _tokenizer(cfg)
    th = th or calibrate_thresholds(comp.entropies(before), comp.seg_cfg.percentile, comp.fingerprint)
    symbols = {
        "neural": lambda ds: [r.symbols.tolist() for r in comp.compress(ds, th)],
        "tokenizer": lambda ds: [tok.encode(d.decode("utf-8", "replace")).ids for d in ds],
        "gzip": lambda ds: [list(gzip.compress(d, mtime=0)) for d in ds],
    }
    out = {}
    for name, fn in symbols.items():
        a, b = fn(before), fn(edited)
        dist = np.array([Levenshtein.normalized_distance(x, y) for x, y in zip(a, b)])
        out[name] = {"mean_distance": float(dist.mean()), "median_distance": float(np.median(dist)),
                     "p10": float(np.percentile(dist, 10)), "p90": float(np.percentile(dist, 90)),
                     "distances": [round(float(x), 4) for x in dist]}
    order = sorted(out, key=lambda k: out[k]["mean_distance"])
    return {**out, "documents": len(docs), "deletion": cfg.deletion, "seed": cfg.seed, "most_to_least_stable": order,
            "paper_order": ["tokenizer", "neural", "gzip"]}


def _tokenizer(cfg: AnalysisConfig) -> Tokenizer:
    if cfg.tokenizer:
        with fsspec.open(cfg.tokenizer, "r") as f:
            return Tokenizer.from_str(f.read())
    return train_tokenizer([f.text for f in take_bytes(stdlib_files("train"), cfg.tokenizer_train_bytes)], 8192)


def lcp(chunks: list[bytes]) -> int:
    return len(os.path.commonprefix(chunks))


def collisions(docs: list[bytes], comp: NeuralCompressor, cfg: AnalysisConfig, th: Thresholds | None = None,
               examples: int = 8) -> dict:
    """Segments grouped by their symbols: a symbol sequence standing for more than one
    distinct chunk is a collision cluster. Its LCP ratio is the prefix all its chunks
    share over their mean length; the share above 0.8 is counted over clusters."""
    th = th or calibrate_thresholds(comp.entropies(docs), comp.seg_cfg.percentile, comp.fingerprint)
    chunks: dict[tuple, dict[bytes, int]] = defaultdict(lambda: defaultdict(int))
    for d, r in zip(docs, comp.compress(docs, th)):
        for s in range(len(r.seg_off) - 1):
            key = tuple(r.symbols[r.sym_off[s] : r.sym_off[s + 1]].tolist())
            chunks[key][d[r.seg_off[s] : r.seg_off[s + 1]]] += 1
    clusters, pairs = [], []
    for key, variants in chunks.items():
        if len(variants) > 1:
            vs = list(variants)
            ratio = lcp(vs) / (sum(map(len, vs)) / len(vs))
            pairs += [lcp([a, b]) / ((len(a) + len(b)) / 2) for i, a in enumerate(vs) for b in vs[i + 1 :]]
            clusters.append({"symbols": list(key), "variants": len(vs), "occurrences": sum(variants.values()),
                             "lcp_ratio": ratio, "examples": [v.decode("utf-8", "replace") for v in
                                                              sorted(vs, key=lambda v: -variants[v])[:6]]})
    clusters.sort(key=lambda c: (-c["variants"], -c["occurrences"]))
    ratios = np.array([c["lcp_ratio"] for c in clusters])
    segs = sum(sum(v.values()) for v in chunks.values())
    in_clusters = sum(c["occurrences"] for c in clusters)
    return {"segments": segs, "distinct_symbol_sequences": len(chunks), "collision_clusters": len(clusters),
            "segments_in_collisions": in_clusters, "share_of_segments_in_collisions": in_clusters / max(1, segs),
            "lcp_ratio_above_0_8": float((ratios > 0.8).mean()) if len(ratios) else None,
            "lcp_ratio_counted_over": "clusters: the prefix all of a cluster's distinct chunks share, over their mean length",
            "lcp_ratio_above_0_8_pairs": float((np.array(pairs) > 0.8).mean()) if pairs else None,
            "colliding_pairs": len(pairs),
            "paper_lcp_ratio_above_0_8": 0.9, "lcp_ratios": [round(float(x), 4) for x in ratios],
            "largest": clusters[:examples]}


def segments(docs: list[bytes], comp: NeuralCompressor, cfg: AnalysisConfig, th: Thresholds | None = None) -> dict:
    """Segment lengths, windows per segment, bytes per window, per-byte entropy."""
    hs = comp.entropies(docs)
    th = th or calibrate_thresholds(hs, comp.seg_cfg.percentile, comp.fingerprint)
    records = comp.compress(docs, th)
    seg_len = np.concatenate([np.diff(r.seg_off) for r in records])
    win_per = np.concatenate([np.diff(r.win_off) for r in records])
    per_win = np.concatenate([np.maximum(r.window_counts, 1) for r in records])
    h = np.concatenate(hs)

    def summary(x):
        return {"mean": float(x.mean()), "median": float(np.median(x)), "p95": float(np.percentile(x, 95)), "max": float(x.max())}

    return {"documents": len(docs), "bytes": int(h.size), "segments": int(seg_len.size), "windows": int(per_win.size),
            "segment_bytes": summary(seg_len), "windows_per_segment": summary(win_per), "bytes_per_window": summary(per_win),
            "entropy_bits": summary(h), "thresholds": {"theta_abs": th.theta_abs, "theta_jump": th.theta_jump,
                                                       "percentile": th.percentile},
            "histograms": {"segment_bytes": _hist(seg_len, np.arange(0, seg_len.max() + 2)),
                           "windows_per_segment": _hist(win_per, np.arange(0, win_per.max() + 2)),
                           "bytes_per_window": _hist(per_win, np.arange(0, per_win.max() + 2)),
                           "entropy_bits": _hist(h, np.linspace(0, 8, 65))}}


def _hist(x: np.ndarray, edges: np.ndarray) -> dict:
    counts, edges = np.histogram(x, edges)
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


RUNNERS = {Analysis.ABLATIONS: ablations, Analysis.STABILITY: stability, Analysis.COLLISIONS: collisions,
           Analysis.SEGMENTS: segments}


def analyze(kind: Analysis, url: str, cfg: AnalysisConfig, storage_options: dict | None = None,
            comp: NeuralCompressor | None = None, docs: list[bytes] | None = None) -> dict:
    """One analysis of url's sample (docs: that sample, when the caller took it already)."""
    docs = sample(url, cfg, storage_options) if docs is None else docs
    if not docs:
        raise SettingsError(f"{url}: no documents to sample")
    comp = comp or compressor(cfg, storage_options)
    th = _output_thresholds(url, comp, storage_options)
    result = RUNNERS[kind](docs, comp, cfg, th)
    return {"analysis": kind.value, "sample_documents": len(docs), "sample_bytes": sum(map(len, docs)),
            "thresholds_from": "the output's thresholds.json" if th else "the sample",
            "model": comp.fingerprint, "precision": comp.precision.value, **result}
