"""`proxycomp report --output URL --dest DIR`: one self-contained HTML page (pictures
inlined, no server, no scripts) and the same figures as JSON, for a finished or running
output: per-shard rates, rejects and failures, throughput over time, each run's cache
hit rate and model busy fraction, the thresholds, and the analyses (`pipeline.analysis`)
on a sample of the output."""

from __future__ import annotations

import base64
import html
import json
import os
import time
from dataclasses import replace

import fsspec
import numpy as np

from .plots import COLORS, PLOTS, plt, png
from .analysis import Analysis, AnalysisConfig, analyze, compressor, sample
from .markers import MarkerIndex
from .plan import output_config, shard_status
from .redact import redact


def markdown_table(kind: str, r: dict) -> str:
    """The result of an analysis as a Markdown table (what `analyze` prints)."""
    if kind == "ablations":
        lines = ["| segmenter | window | symbol bits | bytes/symbol | paper |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {x['segmenter']} | {'W' + str(x['window_bits']) if x['window_bits'] else 'none'} | {x['symbol_bits']} | "
                  f"{x['bytes_per_symbol']:.2f} | {x['paper_bytes_per_symbol']:.1f} |" for x in r["rows"]]
    elif kind == "stability":
        lines = ["| compressor | mean distance | median | p10 | p90 |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {r[n]['mean_distance']:.3f} | {r[n]['median_distance']:.3f} | {r[n]['p10']:.3f} | {r[n]['p90']:.3f} |"
                  for n in r["most_to_least_stable"]]
        lines.append(f"\nmost to least stable: {', '.join(r['most_to_least_stable'])} (paper: {', '.join(r['paper_order'])})")
    elif kind == "collisions":
        share = r["lcp_ratio_above_0_8"]
        pairs = r["lcp_ratio_above_0_8_pairs"]
        lines = ["| segments | distinct symbol sequences | collision clusters | segments in them | LCP ratio > 0.8 |",
                 "| --- | --- | --- | --- | --- |",
                 f"| {r['segments']:,} | {r['distinct_symbol_sequences']:,} | {r['collision_clusters']:,} | "
                 f"{r['share_of_segments_in_collisions']:.1%} | {'-' if share is None else f'{share:.1%}'} of clusters, "
                 f"{'-' if pairs is None else f'{pairs:.1%}'} of {r['colliding_pairs']:,} pairs |"]
    else:
        lines = ["| | mean | median | p95 | max |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {k.replace('_', ' ')} | {r[k]['mean']:.2f} | {r[k]['median']:.2f} | {r[k]['p95']:.2f} | {r[k]['max']:.2f} |"
                  for k in ("segment_bytes", "windows_per_segment", "bytes_per_window", "entropy_bits")]
    return "\n".join(lines)


def gather(output: str, so: dict) -> dict:
    """What the output's markers, stats, run summaries and thresholds say."""
    cfg = output_config(output, so)
    fs, root = fsspec.core.url_to_fs(output, **so)
    index = MarkerIndex(output, so)
    st = shard_status(cfg, index)
    markers = index.markers("_done", st["done"])
    stats_paths = {f"{root.rstrip('/')}/_stats/{n}.json": n for n in st["done"]}
    stats = {stats_paths[p]: json.loads(d) for p, d in fs.cat(list(stats_paths), on_error="return").items()
             if isinstance(d, bytes)} if stats_paths else {}
    finished = index.modified["_done"]
    shards = []
    for n in st["done"]:
        m, s = markers.get(n, {}), stats.get(n, {})
        shards.append({"name": n, "rows": m.get("rows", 0), "rejects": m.get("rejects", 0), "bytes_in": m.get("bytes_in", 0),
                       "symbols_out": m.get("symbols_out", 0),
                       "bytes_per_symbol": m.get("bytes_in", 0) / max(1, m.get("symbols_out", 0)),
                       "cache_hit_rate": s.get("cache_hits", 0) / max(1, s.get("unique_segments", 0)),
                       "finished_at": finished.get(n)})
    runs = []
    run_dir = f"{root.rstrip('/')}/_runs"
    if fs.exists(run_dir):
        for p, d in sorted(fs.cat(sorted(fs.find(run_dir)), on_error="return").items()):
            if isinstance(d, bytes) and p.endswith(".json"):
                r = json.loads(d)
                runs.append({k: r.get(k) for k in ("run_id", "wall_s", "shards_done", "shards_failed", "shards_skipped",
                                                   "bytes_in", "bytes_per_s", "bytes_per_symbol", "cache_hit_rate",
                                                   "model_busy_fraction", "model_actors")} | {"file": p.rsplit("/", 1)[-1]})
    th_path = f"{root.rstrip('/')}/thresholds.json"
    thresholds = json.loads(fs.cat_file(th_path)) if fs.exists(th_path) else None
    return {"output": redact(output), "generated": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "counts": st["counts"], "totals": st["totals"], "failed": st["failed"], "shards": shards, "runs": runs,
            "thresholds": thresholds, "compressor": cfg.model.compressor.value, "checkpoint": cfg.model.checkpoint}


def shard_plots(g: dict) -> dict[str, bytes]:
    out = {}
    rates = [s["bytes_per_symbol"] for s in g["shards"] if s["symbols_out"]]
    if rates:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.hist(rates, bins=min(40, max(5, len(rates))), color=COLORS["neural"])
        ax.set_xlabel("raw bytes per symbol, per shard")
        ax.set_ylabel("shards")
        ax.set_title(f"Compression rate of {len(rates)} shards")
        out["shard_rates"] = png(fig)
    done = sorted((s["finished_at"], s["bytes_in"]) for s in g["shards"] if s["finished_at"] is not None)
    if len(done) > 1:
        t = np.array([d[0] for d in done])
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.step((t - t[0]) / 60, np.cumsum([d[1] for d in done]) / 1e6, where="post", color=COLORS["neural"])
        ax.set_xlabel("minutes since the first shard finished")
        ax.set_ylabel("MB of documents done")
        ax.set_title("Throughput over time (shard completion times)")
        out["throughput"] = png(fig)
    return out


def _table(rows: list[dict], cols: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return html.escape(str(v)) if v is not None else ""

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em;display:block;overflow-x:auto;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}h2{border-bottom:1px solid #ddd}"
       "pre{background:#f7f7f7;padding:.5em;overflow-x:auto}")


def render(g: dict, figures: dict[str, bytes], analyses: dict[str, dict]) -> str:
    c, t = g["counts"], g["totals"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>proxycomp report: {html.escape(g['output'])}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>proxycomp report</h1><p>{html.escape(g['output'])} &middot; {html.escape(g['compressor'])} &middot; "
             f"generated {html.escape(g['generated'])}</p>",
             "<h2>Shards</h2>", _table([{**c, **t, "bytes/symbol": t["bytes_in"] / max(1, t["symbols_out"])}],
                                       ["total", "done", "failed", "pending", "rows", "rejects", "bytes_in", "symbols_out",
                                        "bytes/symbol"])]
    for key, alt in (("shard_rates", "per-shard rate"), ("throughput", "throughput over time")):
        if key in figures:
            parts.append(_img(figures[key], alt))
    worst = sorted(g["shards"], key=lambda s: s["bytes_per_symbol"])[:10]
    parts += ["<h3>Lowest rates</h3>", _table(worst, ["name", "rows", "rejects", "bytes_in", "symbols_out", "bytes_per_symbol",
                                                      "cache_hit_rate"])]
    rejected = sorted((s for s in g["shards"] if s["rejects"]), key=lambda s: -s["rejects"])[:10]
    parts += ["<h2>Rejects and failures</h2>",
              _table(rejected, ["name", "rows", "rejects"]) if rejected else "<p>No rejected documents.</p>",
              _table([{"shard": k, "reason": v} for k, v in g["failed"].items()], ["shard", "reason"]) if g["failed"]
              else "<p>No failed shards.</p>",
              "<h2>Runs</h2>", _table(g["runs"], ["file", "wall_s", "shards_done", "shards_failed", "shards_skipped", "bytes_per_s",
                                                  "bytes_per_symbol", "cache_hit_rate", "model_busy_fraction"])
              if g["runs"] else "<p>No run has finished yet.</p>",
              "<h2>Thresholds</h2>", f"<pre>{html.escape(json.dumps(g['thresholds'], indent=1))}</pre>"]
    for kind, result in analyses.items():
        parts += [f"<h2>Analysis: {html.escape(kind)}</h2>", f"<p>{result['sample_documents']} documents, "
                  f"{result['sample_bytes']:,} bytes sampled from the output.</p>",
                  f"<pre>{html.escape(markdown_table(kind, result))}</pre>", _img(figures[kind], kind)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(output: str, dest: str, so: dict | None = None, cfg: AnalysisConfig = AnalysisConfig(sample_bytes=60_000),
                 kinds: tuple[Analysis, ...] = tuple(Analysis), log=print) -> dict:
    """The analyses use the output's own model (cfg.checkpoint overrides it)."""
    so = so or {}
    g = gather(output, so)
    figures = shard_plots(g)
    analyses: dict[str, dict] = {}
    if g["compressor"] == "neural" and g["counts"]["done"]:
        cfg = replace(cfg, checkpoint=cfg.checkpoint or g["checkpoint"])
        comp = compressor(cfg, so)
        docs = sample(output, cfg, so)  # one sample for every analysis
        for kind in kinds:
            log(f"analysis {kind.value} on a sample of the output")
            analyses[kind.value] = analyze(kind, output, cfg, so, comp, docs)
            figures[kind.value] = PLOTS[kind.value](analyses[kind.value])
    os.makedirs(dest, exist_ok=True)
    page, data = os.path.join(dest, "report.html"), os.path.join(dest, "report.json")
    with open(page, "w") as f:
        f.write(render(g, figures, analyses))
    with open(data, "w") as f:
        json.dump({**g, "analyses": analyses}, f, indent=1)
    return {"html": page, "json": data, "shards": g["counts"], "analyses": sorted(analyses)}
