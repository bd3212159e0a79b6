"""PNG pictures of the analyses (matplotlib, headless: the Agg backend, no display)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no window server, same pixels everywhere

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

COLORS = {"neural": "#1f77b4", "tokenizer": "#2ca02c", "gzip": "#d62728", "ours": "#1f77b4", "paper": "#aaaaaa"}


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no version stamp: same bytes per input
    plt.close(fig)
    return buf.getvalue()


def counts_axis(ax) -> None:
    """A y axis of counts: whole-number ticks only."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def label(row: dict) -> str:
    w = f"W{row['window_bits']}" if row["window_bits"] else "no windows"
    return f"{row['segmenter']}\n{w}, {row['symbol_bits']}-bit"


def ablations(result: dict) -> bytes:
    rows = result["rows"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.bar(x - 0.2, [r["bytes_per_symbol"] for r in rows], 0.4, label="this model, this sample", color=COLORS["ours"])
    ax.bar(x + 0.2, [r["paper_bytes_per_symbol"] for r in rows], 0.4, label="paper (Table 6)", color=COLORS["paper"])
    ax.set_xticks(x, [label(r) for r in rows], fontsize=8)
    ax.set_ylabel("raw bytes per symbol")
    ax.set_title(f"Table 6 ablations: {result['bytes']:,} bytes, {result['documents']} documents")
    ax.legend()
    return png(fig)


def stability(result: dict) -> bytes:
    names = [n for n in ("tokenizer", "neural", "gzip") if n in result]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot([result[n]["distances"] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), [f"{n}\nmean {result[n]['mean_distance']:.3f}" for n in names])
    ax.set_ylabel("normalized Levenshtein distance")
    ax.set_title(f"Stability: {result['deletion']:.0%} of characters deleted, {result['documents']} documents")
    return png(fig)


def collisions(result: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 4))
    ratios = result["lcp_ratios"]
    ax.hist(ratios, bins=np.linspace(0, 1, 21), color=COLORS["neural"])
    ax.axvline(0.8, color="k", linestyle="--", linewidth=1)
    share = result["lcp_ratio_above_0_8"]
    ax.set_xlabel("LCP ratio (shared prefix / mean chunk length)")
    ax.set_ylabel("collision clusters")
    counts_axis(ax)
    ax.set_title(f"Collisions: {result['collision_clusters']} clusters, "
                 f"{share:.0%} above 0.8 (paper: >90%)" if share is not None else "Collisions: none")
    return png(fig)


def segments(result: dict) -> bytes:
    h = result["histograms"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, key, xlabel in ((axes[0, 0], "segment_bytes", "segment length (bytes)"),
                            (axes[0, 1], "windows_per_segment", "windows per segment"),
                            (axes[1, 0], "bytes_per_window", "bytes per window"),
                            (axes[1, 1], "entropy_bits", "next-byte entropy (bits)")):
        edges, counts = np.array(h[key]["edges"]), np.array(h[key]["counts"])
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=COLORS["neural"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        counts_axis(ax)
    th = result["thresholds"]
    axes[1, 1].axvline(th["theta_abs"], color="r", linestyle="--", label=f"θ_abs {th['theta_abs']:.2f}")
    axes[1, 1].axvline(th["theta_jump"], color="k", linestyle=":", label=f"θ_jump {th['theta_jump']:.2f} (a rise)")
    axes[1, 1].legend(fontsize=8)
    fig.suptitle(f"Segments and windows: {result['segments']:,} segments, {result['windows']:,} windows")
    return png(fig)


PLOTS = {"ablations": ablations, "stability": stability, "collisions": collisions, "segments": segments}
