"""`proxycomp`: run, plan, calibrate, status, verify, export, analyze, report, train-tokenizer, demo.

    proxycomp run --input URL --output URL [--config job.yaml] [--shards NAME,...] [--force]
    proxycomp plan --input URL [--output URL] [--usd-per-gpu-hour P] [--json]
    proxycomp run --config job.yaml                  (input: and output: in the YAML)
    proxycomp status --output URL [--json]
    proxycomp verify --output URL [--sample N]
    proxycomp calibrate --input URL --output URL
    proxycomp export --format lingua-jsonl --output URL --dest DIR [--chunks N --seed S]
    proxycomp analyze ablations|stability|collisions|segments --input URL [--dest DIR] [--json]
    proxycomp report --output URL --dest DIR
    proxycomp train-tokenizer --input URL --output tokenizer.json [--vocab-size N]
    proxycomp demo [--output DIR]

Settings: defaults < --config YAML < --set section.field=value (repeatable) < flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

from .config import Compressor, JobConfig, SampleSpec, load_config, secret_key
from .errors import Drained, InternalError, Interrupted, JobError, SettingsError
from .redact import redact

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in proxycomp (the message says so)
EXIT_DRAINED = 75  # EX_TEMPFAIL: stopped on SIGTERM, incomplete; resubmitting continues
ANALYSIS_EXTRA = ("matplotlib", "rapidfuzz")  # `proxycomp[analysis]`: pictures, edit distances


def _storage_options(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise SettingsError(f"--storage-option {p!r}: expected KEY=VALUE")
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k] = v
    return out


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable)")


def _job_args(ap: argparse.ArgumentParser) -> None:
    # Not required here: --config may give them (the shipped RayJob and cluster commands
    # do); run_job says which is missing once every source is merged.
    ap.add_argument("--input", help="input shard or directory/prefix (local path, s3://, any fsspec URL); "
                                    "default: the config's `input:`")
    ap.add_argument("--output", help="output directory/prefix URL; default: the config's `output:`")
    ap.add_argument("--config", help="YAML job config (a full example: deploy/job-gpu.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="config override, applied after --config (repeatable)")
    ap.add_argument("--checkpoint", help="compressor checkpoint URL (default: the shipped one)")
    ap.add_argument("--compressor", choices=[c.value for c in Compressor], help="which proxy compressor "
                    "(default: model.compressor, neural)")
    ap.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local cluster)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars even on a terminal (logs get a heartbeat line every run.log_every_s)")
    _common(ap)


def _config(a) -> JobConfig:
    overrides = list(a.set)
    for k, v in _storage_options(a.storage_option).items():
        overrides.append(f"storage_options.{k}={json.dumps(v)}")
    for flag, key in (("input", "input"), ("output", "output"), ("checkpoint", "model.checkpoint"),
                      ("compressor", "model.compressor"), ("address", "run.address")):
        v = getattr(a, flag, None)
        if v is not None:
            overrides.append(f"{key}={json.dumps(v)}")
    if getattr(a, "no_progress", False):
        overrides.append("run.progress=false")
    return load_config(a.config, overrides)


def _output_config(output: str, so: dict) -> JobConfig:
    from .job.plan import output_config

    return output_config(output, so)


def cmd_run(a) -> int:
    from .job.driver import run_job

    cfg = _config(a)
    summary = run_job(cfg, [s for s in (a.shards or "").split(",") if s] or None, a.force, log=_log, keep_stale=a.keep_stale)
    print(json.dumps(summary.to_dict()) if a.json else summary.text())
    return 0 if not summary.shards_failed else 3


def cmd_plan(a) -> int:
    from .commands.plan import plan_run, text

    cfg = _config(a)
    if not cfg.input:
        raise SettingsError("no input: pass --input URL or set `input:` in the --config file")
    p = plan_run(cfg, a.sample_bytes, a.model_sample_bytes, a.bytes_per_s_per_gpu, a.bench, a.usd_per_gpu_hour)
    print(json.dumps(p) if a.json else text(p))
    return 0


def cmd_calibrate(a) -> int:
    from .job.driver import calibrate_job

    th = calibrate_job(_config(a), log=_log)
    print(th.to_json())
    return 0


def cmd_status(a) -> int:
    from .job.plan import shard_status

    cfg = _output_config(a.output, _storage_options(a.storage_option))
    st = shard_status(cfg, max_reads=a.max_reads or None)
    if a.json:
        print(json.dumps(st))
    else:
        c = st["counts"]
        print(f"{c['done']} done, {c['failed']} failed, {c['pending']} pending, of {c['total']} shards"
              + (f"; {c['stale']} of the done are stale (input changed since; `run` redoes them)" if c["stale"] else ""))
        t = st["totals"]
        print(f"rows {t['rows']:,}  rejects {t['rejects']:,}  bytes in {t['bytes_in']:,}  symbols out {t['symbols_out']:,}")
        if c["unread"]:
            print(f"(totals and the stale check cover {c['done'] - c['unread']:,} of the {c['done']:,} done shards: "
                  f"{c['unread']:,} markers are not in the ledger yet; `--max-reads 0` reads them all)")
        for name, reason in st["failed"].items():
            print(f"FAILED {name}: {reason}")
        if a.failed and st["failed"]:
            print(f"rerun them: {_rerun_command(a.output, sorted(st['failed']), cfg.storage_options)}")
        if st["stale"]:
            print(f"stale: {', '.join(st['stale'][:20])}{' ...' if len(st['stale']) > 20 else ''}")
    return 0


def _rerun_command(output: str, names: list[str], so: dict) -> str:
    """A command to paste: the output's own config, the named shards, the storage options
    again (their secrets as the variables to fill in, never the values)."""
    opts = "".join(f" --storage-option {k}=\"${{{k.upper()}}}\"" if secret_key(k) else f" --storage-option {k}={v}"
                   for k, v in so.items())
    return f"proxycomp run --config {redact(output).rstrip('/')}/config.yaml --shards {','.join(names)}{opts}"


def cmd_verify(a) -> int:
    from .commands.verify import verify_output

    cfg = _output_config(a.output, _storage_options(a.storage_option))
    rep = verify_output(cfg, a.sample, a.seed, log=_log)
    if a.json:
        print(json.dumps(rep))
    else:
        print(f"checked {rep['checked_docs']} documents in {rep['shards']} shards: {rep['ok_docs']} exact")
        for s in rep["checksum_failures"]:
            print(f"CHECKSUM MISMATCH {s}")
        for f in rep["failed_docs"][:20]:
            print(f"FAILED {f['shard']} row {f['row']}: {f['reason']}")
    return 0 if rep["ok"] else 4


def cmd_demo(a) -> int:
    """Everything on an embedded default: stdlib sample -> run (local Ray) -> verify."""
    from compressor_model.stdlib import stdlib_files, take_bytes

    from .commands.demo import write_shards
    from .commands.verify import verify_output
    from .job.driver import run_job

    inp, out = os.path.join(a.output, "input"), os.path.join(a.output, "output")
    files = take_bytes(stdlib_files("heldout"), a.max_bytes)
    write_shards(files, inp, a.shards)
    _log(f"input: {len(files)} held-out standard-library files, {sum(len(f.text.encode()) for f in files):,} bytes, "
         f"in {a.shards} shards under {inp}")
    overrides = [f"input={json.dumps(inp)}", f"output={json.dumps(out)}", "run.address=local"]
    cfg = load_config(None, overrides)
    summary = run_job(cfg, None, True, log=_log)  # always redo: the demo shows the whole job
    print(summary.text())
    rep = verify_output(cfg, a.verify_sample, log=_log)
    print(f"verify: {rep['ok_docs']} of {rep['checked_docs']} sampled documents decode exactly; "
          f"checksums {'ok' if not rep['checksum_failures'] else 'MISMATCH'}")
    print(f"Parquet: {os.path.abspath(out)}/shards/")
    return 0 if rep["ok"] and not summary.shards_failed else 4


def cmd_export(a) -> int:
    from .commands.export import LinguaExport, export_lingua

    cfg = _output_config(a.output, _storage_options(a.storage_option))
    spec = LinguaExport(a.dest, chunks=a.chunks, seed=a.seed, name=a.name, key=a.key, pack=a.pack)
    print(json.dumps(export_lingua(cfg, spec, log=_log)))
    return 0


def cmd_train_tokenizer(a) -> int:
    import fsspec

    from .backends.whole_document import train_tokenizer
    from .job.calibration import sample_in_process
    from .job.plan import plan_input

    so = _storage_options(a.storage_option)
    spec = SampleSpec(bytes=a.max_bytes, doc_bytes=a.max_bytes)
    texts = [d.decode("utf-8", errors="replace") for d in sample_in_process(plan_input(a.input, so), spec, storage_options=so)[1]]
    tok = train_tokenizer(texts, a.vocab_size)
    with fsspec.open(a.output, "w", **so) as f:
        f.write(tok.to_str())
    print(json.dumps({"vocab_size": tok.get_vocab_size(), "trained_on_bytes": sum(len(t.encode()) for t in texts),
                      "output": redact(a.output)}))
    return 0


def _analysis_modules(cmd: str):
    """analysis, plots and report: they need the `analysis` extra, which a worker image
    need not carry (`proxycomp run` does without it)."""
    try:
        from .analysis import analyses, plots, report
    except ImportError as e:
        if (e.name or "").split(".")[0] in ANALYSIS_EXTRA:
            raise JobError(f"proxycomp {cmd} needs the analysis extra ({e.name} is not installed): "
                           "pip install 'proxycomp[analysis]'") from e
        raise
    return analyses, plots, report


def cmd_analyze(a) -> int:
    analysis, plots, report = _analysis_modules("analyze")
    Analysis, AnalysisConfig, analyze = analysis.Analysis, analysis.AnalysisConfig, analysis.analyze
    PLOTS, markdown_table = plots.PLOTS, report.markdown_table

    cfg = AnalysisConfig(sample_bytes=a.sample_bytes, shards=a.sample_shards, doc_bytes=a.doc_bytes, seed=a.seed,
                         checkpoint=a.checkpoint or "", tokenizer=a.tokenizer or "")
    so = _storage_options(a.storage_option)
    kind = Analysis(a.kind)
    result = analyze(kind, a.input, cfg, so)
    dest = os.path.abspath(a.dest)
    os.makedirs(dest, exist_ok=True)
    base = os.path.join(dest, kind.value)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".png", "wb") as f:
        f.write(PLOTS[kind.value](result))
    _log(f"wrote {base}.json and {base}.png")  # --dest defaults to ./analysis: say where that is
    print(json.dumps(result) if a.json else markdown_table(kind.value, result))
    return 0


def cmd_report(a) -> int:
    analysis, _, report = _analysis_modules("report")
    AnalysisConfig, write_report = analysis.AnalysisConfig, report.write_report
    cfg = AnalysisConfig(sample_bytes=a.sample_bytes, checkpoint=a.checkpoint or "")
    out = write_report(a.output, a.dest, _storage_options(a.storage_option), cfg, log=_log)
    print(json.dumps(out) if a.json else f"{out['html']}\n{out['json']}")
    return 0


def _log(msg: str) -> None:
    print(f"[proxycomp] {redact(msg)}", file=sys.stderr, flush=True)


ANALYSES = {
    "ablations": "Table 6's compression side: bytes per symbol by segmenter, window and symbol bits",
    "stability": "how much the symbols change when a tenth of the characters are deleted (neural vs tokenizer vs gzip)",
    "collisions": "distinct segments that share one symbol sequence, and how long a prefix they share",
    "segments": "segment and window lengths and per-byte entropies, with the thresholds",
}

EXIT_STATUS = """exit status: 0 done (or nothing to do), 2 bad arguments, settings or input location,
3 some shards failed (listed; `proxycomp status` shows why), 4 verify found a mismatch,
130 interrupted (finished shards stay done: run the same command again to continue)"""


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, where it has one (and the help does not say)."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d in ([], "", argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parser(sub, name: str, help: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=_Help, **kw)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="proxycomp", description="Neural proxy compression of code corpora on Ray.",
                                 epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = _parser(sub, "run", "compress input shards into Parquet output shards", epilog=EXIT_STATUS)
    _job_args(p)
    p.add_argument("--shards", help="comma-separated output names or input file names (globs) to (re)run")
    p.add_argument("--force", action="store_true", help="redo every shard (with --shards: the named ones), done or not")
    p.add_argument("--keep-stale", action="store_true",
                   help="keep done shards whose input changed since (size, ETag or mtime) instead of redoing them")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(fn=cmd_run)

    p = _parser(sub, "plan", "what a run would do and cost, from listings and a small sample; writes nothing")
    _job_args(p)
    p.add_argument("--sample-bytes", type=int, default=256 << 10, help="document bytes read to estimate sizes")
    p.add_argument("--model-sample-bytes", type=int, default=20_000,
                   help="bytes the model compresses to count positions per byte (0: skip; no model loaded)")
    p.add_argument("--bytes-per-s-per-gpu", type=float, help="throughput per GPU for the GPU-hours")
    p.add_argument("--bench", help="a `make bench-gpu` summary.json to take that throughput from")
    p.add_argument("--usd-per-gpu-hour", type=float, help="price, for the cost")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(fn=cmd_plan)

    p = _parser(sub, "calibrate", "compute segmentation thresholds from an input sample (writes thresholds.json)")
    _job_args(p)
    p.set_defaults(fn=cmd_calibrate)

    p = _parser(sub, "status", "what is done, failed and pending")
    p.add_argument("--output", required=True, help="a proxycomp output URL")
    p.add_argument("--json", action="store_true", help="print the shard lists and counts as JSON")
    p.add_argument("--failed", action="store_true", help="also print a command that reruns the failed shards")
    p.add_argument("--max-reads", type=int, default=2000, metavar="N",
                   help="done markers to fetch that the ledger does not hold yet, for totals and the stale check "
                        "(default 2000: seconds; the rest are counted, and said; 0: every one)")
    _common(p)
    p.set_defaults(fn=cmd_status)

    p = _parser(sub, "verify", "decode a sample of outputs and compare them with the inputs; check every checksum",
                epilog="exit status 4 if any sampled document or checksum does not match")
    p.add_argument("--output", required=True, help="a proxycomp output URL")
    p.add_argument("--sample", type=int, default=100, help="documents to decode, drawn over all done shards")
    p.add_argument("--seed", type=int, default=0, help="seeds which documents are drawn")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    _common(p)
    p.set_defaults(fn=cmd_verify)

    p = _parser(sub, "export", "write JSONL for the paper's public trainer (lingua fork)")
    p.add_argument("--output", required=True, help="a proxycomp output URL")
    p.add_argument("--format", choices=["lingua-jsonl"], default="lingua-jsonl", help="what to write")
    p.add_argument("--dest", required=True, help="local directory: writes <dest>/<name>/<name>.chunk.NN.jsonl")
    p.add_argument("--chunks", type=int, default=1, help="chunk files: the trainer's world size or a divisor of it")
    p.add_argument("--seed", type=int, default=0, help="seeds the documents' shuffle across and within chunks")
    p.add_argument("--name", default="proxycomp", help="source name (the trainer's data.sources key)")
    p.add_argument("--key", default="", help="JSONL field for the compressed data (default: m1_ac_ow<W>)")
    p.add_argument("--pack", type=int, default=0, help="the trainer's pack_<B> (default: W; must divide W)")
    _common(p)
    p.set_defaults(fn=cmd_export)

    p = _parser(sub, "train-tokenizer", "train a byte-level BPE tokenizer for the tokenizer compressor")
    p.add_argument("--input", required=True, help="corpus shards to sample")
    p.add_argument("--output", required=True, help="where to write tokenizer.json")
    p.add_argument("--vocab-size", type=int, default=32000, help="tokens in the vocabulary")
    p.add_argument("--max-bytes", type=int, default=50_000_000, help="sample size")
    _common(p)
    p.set_defaults(fn=cmd_train_tokenizer)

    kinds = "; ".join(f"{k}: {v}" for k, v in ANALYSES.items())
    p = _parser(sub, "analyze", f"the paper's compressor analyses on a sample, as JSON, PNG and a table ({kinds})")
    p.add_argument("kind", choices=list(ANALYSES), help="which analysis")
    p.add_argument("--input", required=True, help="corpus shards, or a proxycomp output (its raw column)")
    p.add_argument("--dest", default="analysis", help="writes <dest>/<kind>.json and <dest>/<kind>.png")
    p.add_argument("--sample-bytes", type=int, default=200_000, help="bytes sampled, spread over the shards")
    p.add_argument("--sample-shards", type=int, default=64, help="shards sampled, chosen by hash")
    p.add_argument("--doc-bytes", type=int, default=4096, help="each sampled document cut to this")
    p.add_argument("--seed", type=int, default=0, help="seeds the stability analysis's deletions")
    p.add_argument("--checkpoint", help="compressor checkpoint URL (default: the shipped one)")
    p.add_argument("--tokenizer", help="stability: tokenizer.json (default: BPE trained on this Python's stdlib)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    _common(p)
    p.set_defaults(fn=cmd_analyze)

    p = _parser(sub, "report", "one self-contained HTML page (and JSON) about an output directory")
    p.add_argument("--output", required=True, help="a proxycomp output URL (finished or running)")
    p.add_argument("--dest", required=True, help="local directory: writes report.html and report.json")
    p.add_argument("--sample-bytes", type=int, default=60_000, help="sample of the output for the analyses' plots")
    p.add_argument("--checkpoint", help="compressor checkpoint URL (default: the output's own)")
    p.add_argument("--json", action="store_true", help="print where the files are as JSON")
    _common(p)
    p.set_defaults(fn=cmd_report)

    p = _parser(sub, "demo", "compress a slice of this Python's standard library end to end, then verify it")
    p.add_argument("--output", default="out/demo", help="writes its input shards to <output>/input, the job's output "
                                                        "to <output>/output")
    p.add_argument("--max-bytes", type=int, default=300_000, help="bytes of held-out standard-library code")
    p.add_argument("--shards", type=int, default=4, help="input shards they are written into")
    p.add_argument("--verify-sample", type=int, default=40, help="documents verify decodes")
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except JobError as e:
        print(f"proxycomp: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except ValueError as e:  # a library's argument check: ours to fix when it is the coder's
        if not _raised_in(e, "coder"):
            print(f"proxycomp: error: {redact(str(e))}", file=sys.stderr)
            return 2
        return _internal(InternalError(f"{type(e).__name__} from the coder: {e}"))
    except InternalError as e:
        return _internal(e)
    except OSError as e:  # storage: permissions, a full disk, a path that is a file
        print(f"proxycomp: error: {redact(type(e).__name__ + ': ' + str(e))}", file=sys.stderr)
        return 2
    except Drained as e:
        s = e.summary
        print(f"proxycomp: drained on SIGTERM after {s.wall_s:.0f} s: {s.shards_done} shard(s) committed in this run, "
              f"{s.shards_failed} failed, {s.shards_left} not run. Resubmit the same command to continue: finished "
              "shards are skipped.", file=sys.stderr)
        return EXIT_DRAINED
    except Interrupted as e:
        s = e.summary
        print(f"proxycomp: interrupted after {s.wall_s:.0f} s: {s.shards_done} shard(s) finished and committed in this run, "
              f"{s.shards_failed} failed; shards in flight were not committed. Run the same command again to continue: "
              "finished shards are skipped.", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        more = " before any shard ran; nothing was committed. Run the same command again to start." if a.cmd == "run" else ""
        print(f"proxycomp: {a.cmd} interrupted{more}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never let a raw traceback print credentials
        print(f"proxycomp: unexpected error: {redact(type(e).__name__ + ': ' + str(e))}", file=sys.stderr)
        if os.environ.get("PROXYCOMP_DEBUG"):
            import traceback

            print(redact(traceback.format_exc()), file=sys.stderr)
        return 1


def _raised_in(e: BaseException, package: str) -> bool:
    """Whether the innermost frame of e's traceback is in this package's code. The coder
    only ever gets arrays the pipeline made: its argument checks failing is our bug."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").split(".")[0] == package


def _internal(e: BaseException) -> int:
    text = str(e) if isinstance(e, InternalError) else str(InternalError(str(e)))
    print(f"proxycomp: {redact(text)}", file=sys.stderr)
    if os.environ.get("PROXYCOMP_DEBUG"):
        import traceback

        print(redact(traceback.format_exc()), file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
