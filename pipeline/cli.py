"""`proxycomp`: run, calibrate, status, verify, export, analyze, report, train-tokenizer, demo.

    proxycomp run --input URL --output URL [--config job.yaml] [--shards NAME,...] [--force]
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

from .config import Compressor, JobConfig, from_dict, load_config, register_secrets
from .redact import redact


def _storage_options(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        k, _, v = p.partition("=")
        out[k] = yaml.safe_load(v)
    return out


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable)")


def _job_args(ap: argparse.ArgumentParser, need_io: bool = True) -> None:
    ap.add_argument("--input", required=need_io, help="input shard or directory/prefix (local path, s3://, any fsspec URL)")
    ap.add_argument("--output", required=need_io, help="output directory/prefix URL")
    ap.add_argument("--config", help="YAML job config")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override (repeatable)")
    ap.add_argument("--checkpoint", help="compressor checkpoint URL (default: the shipped one)")
    ap.add_argument("--compressor", choices=[c.value for c in Compressor], help="which proxy compressor")
    ap.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local cluster)")
    ap.add_argument("--no-progress", action="store_true")
    _common(ap)


def _config(a) -> JobConfig:
    overrides = list(a.set)
    for flag, key in (("input", "input"), ("output", "output"), ("checkpoint", "model.checkpoint"),
                      ("compressor", "model.compressor"), ("address", "run.address")):
        v = getattr(a, flag, None)
        if v is not None:
            overrides.append(f"{key}={json.dumps(v)}")
    if getattr(a, "no_progress", False):
        overrides.append("run.progress=false")
    cfg = load_config(a.config, overrides)
    so = _storage_options(a.storage_option)
    if so:
        cfg = from_dict(JobConfig, {**_asdict_shallow(cfg), "storage_options": {**cfg.storage_options, **so}})
    return register_secrets(cfg)


def _asdict_shallow(cfg) -> dict:
    from dataclasses import fields

    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def _output_config(output: str, so: dict) -> JobConfig:
    from .plan import output_config

    return output_config(output, so)


def cmd_run(a) -> int:
    from .job import run_job

    cfg = _config(a)
    summary = run_job(cfg, [s for s in (a.shards or "").split(",") if s] or None, a.force, log=_log)
    print(json.dumps(summary.to_dict()) if a.json else summary.text())
    return 0 if not summary.shards_failed else 3


def cmd_calibrate(a) -> int:
    from .job import calibrate_job

    th = calibrate_job(_config(a), log=_log)
    print(th.to_json())
    return 0


def cmd_status(a) -> int:
    from .plan import shard_status

    cfg = _output_config(a.output, _storage_options(a.storage_option))
    st = shard_status(cfg)
    if a.json:
        print(json.dumps(st))
    else:
        c = st["counts"]
        print(f"{c['done']} done, {c['failed']} failed, {c['pending']} pending, of {c['total']} shards")
        t = st["totals"]
        print(f"rows {t['rows']:,}  rejects {t['rejects']:,}  bytes in {t['bytes_in']:,}  symbols out {t['symbols_out']:,}")
        for name, reason in st["failed"].items():
            print(f"FAILED {name}: {reason}")
    return 0


def cmd_verify(a) -> int:
    from .verify import verify_output

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
    from .job import run_job
    from compressor_model.stdlib import stdlib_files, take_bytes
    from .sample import write_shards
    from .verify import verify_output

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
    from .export import LinguaExport, export_lingua

    cfg = _output_config(a.output, _storage_options(a.storage_option))
    spec = LinguaExport(a.dest, chunks=a.chunks, seed=a.seed, name=a.name, key=a.key, pack=a.pack)
    print(json.dumps(export_lingua(cfg, spec, log=_log)))
    return 0


def cmd_train_tokenizer(a) -> int:
    from .compressors import train_tokenizer
    from .calibration import sample_in_process
    from .plan import plan_tasks

    cfg = load_config(None, [f"input={json.dumps(a.input)}", "output=\"unused\"", f"run.calibration_bytes={a.max_bytes}",
                             f"run.calibration_doc_bytes={a.max_bytes}"])
    so = _storage_options(a.storage_option)
    if so:
        cfg = from_dict(JobConfig, {**_asdict_shallow(cfg), "storage_options": so})
    texts = [d.decode("utf-8", errors="replace") for d in sample_in_process(plan_tasks(cfg), cfg)[1]]
    tok = train_tokenizer(texts, a.vocab_size)
    import fsspec

    with fsspec.open(a.output, "w", **so) as f:
        f.write(tok.to_str())
    print(json.dumps({"vocab_size": tok.get_vocab_size(), "trained_on_bytes": sum(len(t.encode()) for t in texts),
                      "output": redact(a.output)}))
    return 0


def cmd_analyze(a) -> int:
    from .analysis import Analysis, AnalysisConfig, analyze
    from .plots import PLOTS
    from .report import markdown_table

    cfg = AnalysisConfig(sample_bytes=a.sample_bytes, shards=a.sample_shards, doc_bytes=a.doc_bytes, seed=a.seed,
                         checkpoint=a.checkpoint or "", tokenizer=a.tokenizer or "")
    so = _storage_options(a.storage_option)
    kind = Analysis(a.kind)
    result = analyze(kind, a.input, cfg, so)
    os.makedirs(a.dest, exist_ok=True)
    base = os.path.join(a.dest, kind.value)
    with open(base + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(base + ".png", "wb") as f:
        f.write(PLOTS[kind.value](result))
    if a.json:
        print(json.dumps(result))
    else:
        print(markdown_table(kind.value, result))
        print(f"\n{base}.json, {base}.png")
    return 0


def cmd_report(a) -> int:
    from .analysis import AnalysisConfig
    from .report import write_report

    cfg = AnalysisConfig(sample_bytes=a.sample_bytes, checkpoint=a.checkpoint or "")
    out = write_report(a.output, a.dest, _storage_options(a.storage_option), cfg, log=_log)
    print(json.dumps(out) if a.json else f"{out['html']}\n{out['json']}")
    return 0


def _log(msg: str) -> None:
    print(f"[proxycomp] {redact(msg)}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="proxycomp", description="Neural proxy compression of code corpora on Ray.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="compress input shards into Parquet output shards")
    _job_args(p)
    p.add_argument("--shards", help="comma-separated output names or input file names (globs) to (re)run")
    p.add_argument("--force", action="store_true", help="redo shards even if they are done")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("calibrate", help="compute segmentation thresholds from an input sample")
    _job_args(p)
    p.set_defaults(fn=cmd_calibrate)

    p = sub.add_parser("status", help="what is done, failed and pending")
    p.add_argument("--output", required=True)
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("verify", help="decode a sample of outputs and compare with the inputs")
    p.add_argument("--output", required=True)
    p.add_argument("--sample", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("export", help="write JSONL for the paper's public trainer (lingua fork)")
    p.add_argument("--output", required=True, help="a proxycomp output URL")
    p.add_argument("--format", choices=["lingua-jsonl"], default="lingua-jsonl")
    p.add_argument("--dest", required=True, help="local directory: writes <dest>/<name>/<name>.chunk.NN.jsonl")
    p.add_argument("--chunks", type=int, default=1, help="chunk files: the trainer's world size or a divisor of it")
    p.add_argument("--seed", type=int, default=0, help="seeds the documents' shuffle across and within chunks")
    p.add_argument("--name", default="proxycomp", help="source name (the trainer's data.sources key)")
    p.add_argument("--key", default="", help="JSONL field for the compressed data (default m1_ac_ow<W>)")
    p.add_argument("--pack", type=int, default=0, help="the trainer's pack_<B> (default W; must divide W)")
    _common(p)
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer for the tokenizer compressor")
    p.add_argument("--input", required=True, help="corpus shards to sample")
    p.add_argument("--output", required=True, help="where to write tokenizer.json")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--max-bytes", type=int, default=50_000_000, help="sample size")
    _common(p)
    p.set_defaults(fn=cmd_train_tokenizer)

    p = sub.add_parser("analyze", help="the paper's compressor analyses on a sample: JSON and a PNG")
    p.add_argument("kind", choices=["ablations", "stability", "collisions", "segments"])
    p.add_argument("--input", required=True, help="corpus shards, or a proxycomp output (its raw column)")
    p.add_argument("--dest", default="analysis", help="writes <dest>/<kind>.json and <dest>/<kind>.png")
    p.add_argument("--sample-bytes", type=int, default=200_000)
    p.add_argument("--sample-shards", type=int, default=64)
    p.add_argument("--doc-bytes", type=int, default=4096, help="each sampled document cut to this")
    p.add_argument("--seed", type=int, default=0, help="seeds the stability analysis's deletions")
    p.add_argument("--checkpoint", help="compressor checkpoint URL (default: the shipped one)")
    p.add_argument("--tokenizer", help="stability: tokenizer.json (default: BPE trained on this Python's stdlib)")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(fn=cmd_analyze)

    p = sub.add_parser("report", help="one self-contained HTML page (and JSON) about an output directory")
    p.add_argument("--output", required=True, help="a proxycomp output URL (finished or running)")
    p.add_argument("--dest", required=True, help="local directory: writes report.html and report.json")
    p.add_argument("--sample-bytes", type=int, default=60_000, help="sample of the output for the analyses' plots")
    p.add_argument("--checkpoint", help="compressor checkpoint URL (default: the output's own)")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("demo", help="compress a slice of this Python's standard library end to end")
    p.add_argument("--output", default="out/demo")
    p.add_argument("--max-bytes", type=int, default=300_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--verify-sample", type=int, default=40)
    p.set_defaults(fn=cmd_demo)

    a = ap.parse_args(argv)
    from .job import JobError

    try:
        return a.fn(a)
    except (JobError, ValueError) as e:
        print(f"proxycomp: error: {redact(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - never let a raw traceback print credentials
        print(f"proxycomp: unexpected error: {redact(type(e).__name__ + ': ' + str(e))}", file=sys.stderr)
        if os.environ.get("PROXYCOMP_DEBUG"):
            import traceback

            print(redact(traceback.format_exc()), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
