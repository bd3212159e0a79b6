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
import re
import time
from dataclasses import replace

import fsspec
import numpy as np

from ..job.plan import output_config, shard_status
from ..redact import redact
from ..store.layout import Marker, OutputLayout
from ..store.markers import MarkerIndex
from .analyses import Analysis, AnalysisConfig, analyze, compressor, sample
from .plots import COLORS, PLOTS, counts_axis, plt, png


def analysis_table(kind: str, r: dict) -> tuple[list[str], list[list[str]], str]:
    """The result of an analysis as (columns, rows of formatted cells, a note)."""
    note = ""
    if kind == "ablations":
        cols = ["segmenter", "window", "symbol bits", "bytes/symbol", "paper"]
        rows = [[x["segmenter"], f"W{x['window_bits']}" if x["window_bits"] else "none", str(x["symbol_bits"]),
                 f"{x['bytes_per_symbol']:.2f}", f"{x['paper_bytes_per_symbol']:.1f}"] for x in r["rows"]]
    elif kind == "stability":
        cols = ["compressor", "mean distance", "median", "p10", "p90"]
        rows = [[n, *(f"{r[n][k]:.3f}" for k in ("mean_distance", "median_distance", "p10", "p90"))]
                for n in r["most_to_least_stable"]]
        note = f"most to least stable: {', '.join(r['most_to_least_stable'])} (paper: {', '.join(r['paper_order'])})"
    elif kind == "collisions":
        share, pairs = r["lcp_ratio_above_0_8"], r["lcp_ratio_above_0_8_pairs"]
        cols = ["segments", "distinct symbol sequences", "collision clusters", "segments in them", "LCP ratio > 0.8"]
        rows = [[f"{r['segments']:,}", f"{r['distinct_symbol_sequences']:,}", f"{r['collision_clusters']:,}",
                 f"{r['share_of_segments_in_collisions']:.1%}",
                 f"{'-' if share is None else f'{share:.1%}'} of clusters, "
                 f"{'-' if pairs is None else f'{pairs:.1%}'} of {r['colliding_pairs']:,} pairs"]]
    else:
        cols = ["", "mean", "median", "p95", "max"]
        rows = [[k.replace("_", " "), *(f"{r[k][s]:.2f}" for s in ("mean", "median", "p95", "max"))]
                for k in ("segment_bytes", "windows_per_segment", "bytes_per_window", "entropy_bits")]
    return cols, rows, note


def markdown_table(kind: str, r: dict) -> str:
    """The result of an analysis as a Markdown table (what `analyze` prints)."""
    cols, rows, note = analysis_table(kind, r)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines + ([f"\n{note}"] if note else []))


def _rejects(fs, path, names: list[str], per_shard: int = 20) -> list[dict]:
    """The first rejected documents of these shards, with their reasons."""
    out = []
    for n, data in sorted(fs.cat([path(n) for n in names], on_error="return").items()) if names else []:
        if isinstance(data, bytes):
            for line in data.decode().splitlines()[:per_shard]:
                r = json.loads(line)
                out.append({"shard": n.rsplit("/", 1)[-1].rsplit(".", 1)[0], "row": r.get("row"), "id": r.get("id"),
                            "reason": r.get("reason")})
    return out


def gather(output: str, so: dict) -> dict:
    """What the output's markers, stats, run summaries and thresholds say."""
    cfg = output_config(output, so)
    fs, _ = fsspec.core.url_to_fs(output, **so)

    def path(url: str) -> str:
        return fsspec.core.url_to_fs(url, **so)[1]

    index = MarkerIndex(output, so)
    st = shard_status(cfg, index)
    markers = index.markers(Marker.DONE, st["done"])
    layout = OutputLayout(output)
    stats_paths = {path(layout.stats(n)): n for n in st["done"]}
    stats = {stats_paths[p]: json.loads(d) for p, d in fs.cat(list(stats_paths), on_error="return").items()
             if isinstance(d, bytes)} if stats_paths else {}
    finished = index.modified[Marker.DONE]
    shards = []
    for n in st["done"]:
        m, s = markers.get(n, {}), stats.get(n, {})
        shards.append({"name": n, "rows": m.get("rows", 0), "rejects": m.get("rejects", 0), "bytes_in": m.get("bytes_in", 0),
                       "symbols_out": m.get("symbols_out", 0),
                       "bytes_per_symbol": m.get("bytes_in", 0) / max(1, m.get("symbols_out", 0)),
                       "cache_hit_rate": s.get("cache_hits", 0) / max(1, s.get("unique_segments", 0)),
                       "finished_at": finished.get(n)})
    runs = []
    run_dir = path(layout.runs)
    if fs.exists(run_dir):
        for p, d in sorted(fs.cat(sorted(fs.find(run_dir)), on_error="return").items()):
            if isinstance(d, bytes) and p.endswith(".json"):
                r = json.loads(d)
                runs.append({k: r.get(k) for k in ("run_id", "wall_s", "shards_done", "shards_failed", "shards_skipped",
                                                   "bytes_in", "bytes_per_s", "bytes_per_symbol", "cache_hit_rate",
                                                   "model_busy_fraction", "model_actors")} | {"file": p.rsplit("/", 1)[-1]})
    rejects = _rejects(fs, lambda n: path(layout.rejects(n)), [s["name"] for s in shards if s["rejects"]])
    th_path = path(layout.thresholds)
    thresholds = json.loads(fs.cat_file(th_path)) if fs.exists(th_path) else None
    return {"output": redact(output), "generated": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "counts": st["counts"], "totals": st["totals"], "failed": st["failed"], "rejected": rejects, "shards": shards,
            "runs": runs,
            "thresholds": thresholds, "compressor": cfg.model.compressor.value, "checkpoint": cfg.model.checkpoint}


def shard_plots(g: dict) -> dict[str, bytes]:
    out = {}
    rates = [s["bytes_per_symbol"] for s in g["shards"] if s["symbols_out"]]
    if rates:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.hist(rates, bins=min(40, max(5, len(rates))), color=COLORS["neural"])
        ax.set_xlabel("raw bytes per symbol, per shard")
        ax.set_ylabel("shards")
        counts_axis(ax)
        ax.set_title(f"Compression rate of {len(rates)} shards")
        out["shard_rates"] = png(fig)
    done = sorted((s["finished_at"], s["bytes_in"]) for s in g["shards"] if s["finished_at"] is not None)
    if len(done) > 1:
        t = np.array([d[0] for d in done])
        span = t[-1] - t[0]
        unit, scale = ("hours", 3600) if span > 3 * 3600 else ("minutes", 60) if span > 180 else ("seconds", 1)
        total = sum(d[1] for d in done)
        size, div = ("GB", 1e9) if total > 3e9 else ("MB", 1e6) if total > 3e6 else ("KB", 1e3)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.step((t - t[0]) / scale, np.cumsum([d[1] for d in done]) / div, where="post", color=COLORS["neural"])
        ax.set_xlim(0, max(span / scale, 1e-9))
        ax.set_ylim(0, total / div * 1.05)
        ax.set_xlabel(f"{unit} since the first shard finished")
        ax.set_ylabel(f"{size} of documents done")
        ax.set_title("Throughput over time (shard completion times)")
        out["throughput"] = png(fig)
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v) if v is not None else ""


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,]*\.?\d+%?", text.strip()))


def _html_table(cols: list[str], rows: list[list[str]]) -> str:
    """Numbers right-aligned (digits line up), words left."""
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td class='{'n' if _numeric(v) else 't'}'>{html.escape(v)}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table(rows: list[dict], cols: list[str]) -> str:
    return _html_table(cols, [[_cell(r.get(c)) for c in cols] for r in rows])


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


# Tables never grow past the page: cells wrap (long shard names and reasons too).
CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:.5em 0 1.5em;max-width:100%;table-layout:auto;font-size:90%}"
       "td,th{border:1px solid #ccc;padding:3px 8px;overflow-wrap:anywhere;vertical-align:top}"
       "td.n{text-align:right;white-space:nowrap}td.t{text-align:left}th{background:#f3f3f3;text-align:center}"
       "img{max-width:100%;border:1px solid #eee;margin:.5em 0}h2{border-bottom:1px solid #ddd;margin-top:1.5em}"
       "p.note{color:#555}")


def _thresholds(th: dict | None) -> str:
    if not th:
        return "<p>None (this output's segmenter needs none, or no run has calibrated yet).</p>"
    rows = [{"setting": k.replace("_", " "), "value": ", ".join(v) if isinstance(v, list) else v} for k, v in th.items()]
    return _table(rows, ["setting", "value"])


def render(g: dict, figures: dict[str, bytes], analyses: dict[str, dict]) -> str:
    c, t = g["counts"], g["totals"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>proxycomp report: {html.escape(g['output'])}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>proxycomp report</h1><p>{html.escape(g['output'])} &middot; {html.escape(g['compressor'])} &middot; "
             f"generated {html.escape(g['generated'])}</p>",
             "<h2>Shards</h2>", _table([{**c, **t, "bytes/symbol": t["bytes_in"] / max(1, t["symbols_out"])}],
                                       ["total", "done", "stale", "failed", "pending", "rows", "rejects", "bytes_in", "symbols_out",
                                        "bytes/symbol"])]
    for key, alt in (("shard_rates", "per-shard rate"), ("throughput", "throughput over time")):
        if key in figures:
            parts.append(_img(figures[key], alt))
    worst = sorted(g["shards"], key=lambda s: s["bytes_per_symbol"])[:10]
    parts += ["<h3>Lowest rates</h3>", _table(worst, ["name", "rows", "rejects", "bytes_in", "symbols_out", "bytes_per_symbol",
                                                      "cache_hit_rate"])]
    rejected = sorted((s for s in g["shards"] if s["rejects"]), key=lambda s: -s["rejects"])[:10]
    parts += ["<h2>Rejects and failures</h2>",
              (_table(rejected, ["name", "rows", "rejects"]) + "<h3>Rejected documents (the first of each shard)</h3>"
               + _table(g["rejected"], ["shard", "row", "id", "reason"])) if rejected else "<p>No rejected documents.</p>",
              ("<h3>Failed shards</h3>" + _table([{"shard": k, "reason": v} for k, v in g["failed"].items()], ["shard", "reason"]))
              if g["failed"] else "<p>No failed shards.</p>",
              "<h2>Runs</h2>", _table(g["runs"], ["file", "wall_s", "shards_done", "shards_failed", "shards_skipped", "bytes_per_s",
                                                  "bytes_per_symbol", "cache_hit_rate", "model_busy_fraction"])
              if g["runs"] else "<p>No run has finished yet.</p>",
              "<h2>Thresholds</h2>", _thresholds(g["thresholds"])]
    for kind, result in analyses.items():
        cols, rows, note = analysis_table(kind, result)
        parts += [f"<h2>Analysis: {html.escape(kind)}</h2>", f"<p>{result['sample_documents']} documents, "
                  f"{result['sample_bytes']:,} bytes sampled from the output.</p>", _html_table(cols, rows),
                  f"<p class='note'>{html.escape(note)}</p>" if note else "", _img(figures[kind], kind)]
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
