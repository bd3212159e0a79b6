"""Neural compressor benchmark: `python -m benchmarks.engine --json [--data URL]`.

On real code (default: held-out files of the interpreter's standard library, which the
shipped model never trained on; `--data` takes any corpus the readers accept) it runs
calibration, segmentation and windowed coding end to end and prints one JSON object:
model positions per byte for coding and segmentation, the compression rate, held-out
bits/byte, end-to-end bytes/s and where the wall time went. `--roundtrip-files N`
additionally decodes N real source files (the N smallest of the whole standard library)
with the model and checks every byte.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from coder.constants import PROB_TOTAL
from compressor_model.corpus import Document, first_bytes, list_shards, read_shard
from compressor_model.engine import EngineConfig, NeuralCompressor
from compressor_model.model import BOS, CONFIGS, ByteLM
from compressor_model.numerics import Precision, describe_machine
from compressor_model.segment import SegmentConfig
from compressor_model.stdlib import stdlib_files


def load_docs(data: str | None, max_bytes: int, split: str = "heldout") -> list[bytes]:
    if data:
        docs = [d.data for s in list_shards(data) for d in read_shard(s) if isinstance(d, Document) and d.data]
    else:
        docs = [f.text.encode() for f in stdlib_files(None if split == "all" else split)]
    return first_bytes(docs, max_bytes)


@torch.no_grad()
def heldout_bits_per_byte(comp: NeuralCompressor, docs: list[bytes], rows: int = 64) -> float:
    """What coding the documents costs under the coder's 16-bit frequencies, each
    block-sized chunk from BOS, in bits/byte (the same measure for every precision):
    `rows` chunks per forward, summed on the device, read back once."""
    block = comp.model.cfg.block_size
    chunks = [d[s : s + block] for d in docs for s in range(0, len(d), block)]
    bits = torch.zeros((), dtype=torch.float64, device=comp.device)
    for k in range(0, len(chunks), rows):
        part = chunks[k : k + rows]
        x = np.full((len(part), block), BOS, np.int64)
        y = np.zeros((len(part), block), np.int64)
        used = np.zeros((len(part), block), np.bool_)  # padding costs nothing
        for r, c in enumerate(part):
            x[r, 1 : len(c)] = np.frombuffer(c[:-1], np.uint8)
            y[r, : len(c)] = np.frombuffer(c, np.uint8)
            used[r, : len(c)] = True
        f = comp.frequency_rows(torch.from_numpy(x).to(comp.device))
        fy = f.gather(-1, torch.from_numpy(y).to(comp.device)[..., None])[..., 0].double()
        bits += (torch.log2(PROB_TOTAL / fy) * torch.from_numpy(used).to(comp.device)).sum()
    return bits.item() / sum(map(len, chunks))


def flops_per_position(model: ByteLM, context: float) -> float:
    """Forward FLOPs per position: 2 per weight multiply-add, plus attention scores and
    the weighted sum over `context` positions."""
    cfg = model.cfg
    weights = 12 * cfg.n_layer * cfg.n_embd**2 + cfg.n_embd * 256
    return 2 * weights + 4 * cfg.n_layer * cfg.n_embd * context


def make_compressor(args, precision: Precision, graphs: bool = True) -> NeuralCompressor:
    cfg = EngineConfig(lanes=args.lanes, group=args.group or min(args.lanes, EngineConfig.group),
                       lane_sets=args.lane_sets, max_window_bytes=args.max_window_bytes, precision=precision,
                       device=args.device, cuda_graphs=graphs, compile=args.compile)
    seg = SegmentConfig(percentile=args.percentile, call_positions=args.call_positions or SegmentConfig.call_positions)
    if args.model == "shipped":
        return NeuralCompressor.load(args.checkpoint, cfg, seg)
    torch.manual_seed(0)  # random weights of a named config: speed only
    m = ByteLM(CONFIGS[args.model])
    return NeuralCompressor(m, m.fingerprint(), cfg, seg)


def timed_compress(comp: NeuralCompressor, docs: list[bytes], thresholds):
    """(records, seconds, stats) of one compress call, after a warm-up call that compiles
    kernels and captures every CUDA graph (a long-running actor pays that once)."""
    comp.warm_up()
    comp.compress([d[:300] for d in docs[:4]], thresholds)
    comp.stats = type(comp.stats)()
    t = time.perf_counter()
    records = comp.compress(docs, thresholds)
    return records, time.perf_counter() - t, comp.stats


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    comp = make_compressor(args, Precision(args.precision))
    docs = load_docs(args.data, args.bytes, args.split)
    thresholds = comp.calibrate(docs[: max(1, len(docs) // 4)])
    records, wall, st = timed_compress(comp, docs, thresholds)
    n = st.bytes_in
    block = comp.model.cfg.block_size
    out = {
        "data": args.data or "stdlib:heldout",
        "docs": st.docs_out,
        "bytes": n,
        "model": args.model if args.model != "shipped" else f"shipped:{comp.fingerprint}",
        "params": comp.float_model.num_params(),
        "device": str(comp.device),
        "precision": comp.precision.value,
        "precision_requested": args.precision,
        "numerics": comp.numerics,
        "lanes": comp.cfg.lanes, "group": comp.cfg.group, "lane_sets": comp.lane_sets,
        "theta_abs": thresholds.theta_abs,
        "theta_jump": thresholds.theta_jump,
        "segments": st.segments,
        "mean_segment_bytes": n / max(st.segments, 1),
        "unique_segment_fraction": st.unique_segments / max(st.segments, 1),
        "windows": st.windows,
        "symbols": st.symbols_out,
        "bytes_per_symbol": n / max(st.symbols_out, 1),
        "bytes_per_window": n / max(st.windows, 1),
        "model_positions_per_byte": st.code_positions / max(st.coded_bytes, 1),
        "model_positions_per_byte_padded": st.code_padded_positions / max(st.coded_bytes, 1),
        "segmentation_positions_per_byte": st.seg_positions / max(n, 1),
        "coded_bytes": st.coded_bytes,
        "coding_positions_per_s": st.code_padded_positions / max(st.code_time, 1e-9),
        "segmentation_positions_per_s": st.seg_positions / max(st.seg_time, 1e-9),
        "bytes_per_s_segmentation": n / max(st.seg_time, 1e-9),
        "bytes_per_s_coding": st.coded_bytes / max(st.code_time, 1e-9),
        "bytes_per_s": n / wall,
        "wall_s": wall,
        "model_forward_fraction": st.model_time / wall,
        "segmentation_time_fraction": st.seg_time / wall,
        "coding_time_fraction": st.code_time / wall,
        "torch_threads": torch.get_num_threads(),
        **describe_machine(comp.device),
    }
    flops = (flops_per_position(comp.float_model, block / 2) * st.seg_positions
             + flops_per_position(comp.float_model, comp.cfg.max_window_bytes) * st.code_padded_positions)
    out["model_tflops_per_s"] = flops / wall / 1e12
    if args.peak_tflops:
        out["mfu"] = out["model_tflops_per_s"] / args.peak_tflops
    out["gb_per_hour"] = n / wall * 3600 / 1e9
    if args.model == "shipped":
        out["heldout_bits_per_byte"] = heldout_bits_per_byte(comp, docs)
        out["checkpoint_training"] = comp.training_info
    if args.verify:
        t = time.perf_counter()
        out["verified_docs"] = int(sum(comp.verify(records, docs)))
        out["verify_s"] = time.perf_counter() - t
    if args.compare_bytes:
        out.update(compare_precisions(args, comp, docs, thresholds))
    if comp.device.type == "cuda" and args.compare_graphs:
        out.update(compare_graphs(args, comp, docs, thresholds))
    if args.roundtrip_files:
        out.update(roundtrip(comp, thresholds, args.roundtrip_files))
    return out


def compare_precisions(args, comp: NeuralCompressor, docs: list[bytes], thresholds) -> dict:
    """int8, bf16 and fp32 on the same sample (the first compare_bytes of the documents),
    each in a fresh engine with thresholds calibrated by its own model on the same
    calibration docs: bytes/s, bytes/symbol and (shipped model) held-out bits/byte."""
    sample = first_bytes(docs, args.compare_bytes)
    calib = docs[: max(1, len(docs) // 4)]
    n = sum(map(len, sample))
    out = {"precision_compare_bytes": n}
    for p in (Precision.INT8, Precision.BF16, Precision.FP32):
        c = comp if p is comp.precision else make_compressor(args, p)
        th = thresholds if c is comp else c.calibrate(calib)
        records, wall, st = timed_compress(c, sample, th)
        out[f"bytes_per_s_{p.value}"] = n / wall
        out[f"bytes_per_symbol_{p.value}"] = n / max(st.symbols_out, 1)
        if args.model == "shipped":
            out[f"heldout_bits_per_byte_{p.value}"] = heldout_bits_per_byte(c, sample)
    out["int8_vs_fastest_float"] = out["bytes_per_s_int8"] / max(out["bytes_per_s_bf16"], out["bytes_per_s_fp32"])
    out["int8_bytes_per_symbol_vs_fp32"] = out["bytes_per_symbol_int8"] / out["bytes_per_symbol_fp32"] - 1
    return out


def compare_graphs(args, comp: NeuralCompressor, docs, thresholds) -> dict:
    """CUDA graphs against eager calls on the comparison sample: speed-up, same bits."""
    sample = first_bytes(docs, args.compare_bytes or sum(map(len, docs)))
    graph_recs, graph_wall, _ = timed_compress(comp, sample, thresholds)
    eager = make_compressor(args, comp.precision, graphs=False)
    eager_recs, eager_wall, _ = timed_compress(eager, sample, thresholds)
    same = all(np.array_equal(a.symbols, b.symbols) and np.array_equal(a.window_counts, b.window_counts)
               and np.array_equal(a.seg_off, b.seg_off) for a, b in zip(graph_recs, eager_recs))
    n = sum(map(len, sample))
    return {"graph_bytes_per_s": n / graph_wall, "eager_bytes_per_s": n / eager_wall, "graph_speedup": eager_wall / graph_wall,
            "graph_bit_identical": bool(same)}


def roundtrip(comp: NeuralCompressor, thresholds, n_files: int) -> dict:
    """Encode then decode the n smallest stdlib source files; count exact matches."""
    files = sorted(stdlib_files(), key=lambda f: (len(f.text.encode()), f.path))[:n_files]
    docs = [f.text.encode() for f in files]
    t = time.perf_counter()
    records = comp.compress(docs, thresholds)
    ok = comp.verify(records, docs)
    return {
        "roundtrip_files": len(docs),
        "roundtrip_bytes": sum(map(len, docs)),
        "roundtrip_exact": int(sum(ok)),
        "roundtrip_s": time.perf_counter() - t,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one line of JSON (default: indented)")
    ap.add_argument("--data", help="corpus URL (shard or directory); default: stdlib held-out files")
    ap.add_argument("--bytes", type=int, default=400_000, help="bytes of the corpus to compress (0: all)")
    ap.add_argument("--split", choices=["heldout", "train", "all"], default="heldout",
                    help="which standard-library files when there is no --data (held-out: the model never saw them)")
    ap.add_argument("--model", default="shipped", choices=["shipped", *sorted(CONFIGS)],
                    help="shipped checkpoint, or random weights of a named config (speed only)")
    ap.add_argument("--checkpoint", help="checkpoint path (default: the shipped one)")
    ap.add_argument("--lanes", type=int, default=EngineConfig.lanes)
    ap.add_argument("--group", type=int, default=0, help="lanes per model call (default: engine default)")
    ap.add_argument("--lane-sets", type=int, default=0, help="lane sets coded in turn (0: 2 on CUDA, 1 on CPU)")
    ap.add_argument("--call-positions", type=int, default=0, help="positions per segmentation call (0: default)")
    ap.add_argument("--max-window-bytes", type=int, default=EngineConfig.max_window_bytes)
    ap.add_argument("--precision", default="auto", choices=[p.value for p in Precision])
    ap.add_argument("--compare-bytes", type=int, default=100_000,
                    help="also time bf16, fp32 and auto on this many bytes of the sample (0: skip)")
    ap.add_argument("--compare-graphs", action=argparse.BooleanOptionalAction, default=True,
                    help="on CUDA, also run every call eagerly: graph speed-up and identical bits")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="int8 on a CPU: torch.compile the integer model (engine.compile; warm-up excluded from timing)")
    ap.add_argument("--percentile", type=float, default=95.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--roundtrip-files", type=int, default=0)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak, for model FLOP utilization")
    a = ap.parse_args(argv)
    res = run(a)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
