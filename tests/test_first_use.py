"""What a new user meets first: the shipped commands, settings taken as written, paths
that mean the same from anywhere, one-line errors before anything starts, reruns that
cannot mix settings, no-op reruns that start nothing, and the record of each run."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from pipeline import job as job_module
from pipeline.cli import _config, build_parser
from pipeline.cli import main as cli
from pipeline.config import check_job, load_config
from pipeline.errors import JobError
from pipeline.job import run_job
from pipeline.output import read_metadata
from tests.pipeline_fixtures import make_input, sha256, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
# The fast settings of tests/pipeline_fixtures.job_config, as a user's YAML file holds them.
FAST = {"run": {"address": "local", "progress": False, "torch_threads": 1, "batch_bytes": 8000, "shard_workers": 2,
                "calibration_bytes": 20000, "metrics": False},
        "engine": {"lanes": 64, "group": 32}, "segment": {"call_positions": 512}, "cache": {"shards": 2}}


def shipped_commands() -> dict[str, list[str]]:
    """`proxycomp ...` as the deploy files ship it, by where it comes from."""
    kube = yaml.safe_load((REPO / "deploy" / "kuberay-rayjob.yaml").read_text())["spec"]["entrypoint"]
    launcher = next(ln for ln in (REPO / "deploy" / "cluster-gpu.yaml").read_text().splitlines() if "proxycomp run" in ln)
    readme = (REPO / "deploy" / "README.md").read_text().replace("\\\n", " ")
    submit = next(ln for ln in readme.splitlines() if "ray job submit" in ln and "proxycomp run" in ln)
    out = {}
    for where, line in (("kuberay-rayjob.yaml", kube), ("cluster-gpu.yaml", launcher.strip("# `")),
                        ("deploy/README.md", submit)):
        words = shlex.split(line.strip().strip("`"))
        out[where] = words[words.index("proxycomp") + 1:]
    return out


def test_shipped_cluster_commands_parse_to_the_shipped_job_config():
    """The RayJob, the cluster launcher and the deploy README run `proxycomp run
    --config ...` with input and output in the YAML: each must resolve to the job config
    they ship (the RayJob mounts deploy/job-gpu.yaml as /etc/proxycomp/job.yaml)."""
    commands = shipped_commands()
    assert len(commands) == 3
    shipped = yaml.safe_load((REPO / "deploy" / "job-gpu.yaml").read_text())
    for where, argv in commands.items():
        argv = [str(REPO / "deploy" / "job-gpu.yaml") if a in ("/etc/proxycomp/job.yaml", "deploy/job-gpu.yaml") else a
                for a in argv]
        a = build_parser().parse_args(argv)
        assert a.cmd == "run", where
        cfg = _config(a)
        check_job(cfg)
        assert (cfg.input, cfg.output) == (shipped["input"].rstrip("/"), shipped["output"].rstrip("/")), where
        assert cfg.run.model_actors == 8 and cfg.engine.lanes == 8192 and cfg.run.model_resources == {"gpu_node": 1}, where


def test_every_option_has_help_and_shows_its_default():
    ap = build_parser()
    commands = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"run", "calibrate", "status", "verify", "export", "train-tokenizer", "analyze", "report", "demo"}
    for name, sub in commands.items():
        text = sub.format_help()
        assert sub.description, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            d = action.default
            if not (d is None or d is False or d in ([], "")):
                assert f"(default: {d})" in " ".join(text.split()) or "default" in action.help, f"{name} {action.dest}"


@pytest.mark.parametrize("how, value", [("set", "engine.lanes=512.7"), ("set", "run.model_actors=1.9"),
                                        ("yaml", "lanes: 4.5"), ("set", "engine.lanes=true"), ("set", "run.max_retries=2x")])
def test_integer_fields_refuse_what_is_not_an_integer(tmp_path, capsys, how, value):
    argv = ["run", "--input", str(tmp_path), "--output", str(tmp_path / "out")]
    if how == "yaml":
        (tmp_path / "job.yaml").write_text(f"engine:\n  {value}\n")
        argv += ["--config", str(tmp_path / "job.yaml")]
    else:
        argv += ["--set", value]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    field = "engine.lanes" if "lanes" in value else value.split("=")[0]
    shown = value.split("=")[-1].split(": ")[-1]
    assert len(err.splitlines()) == 1 and field in err and shown.lower() in err.lower() and "not an integer" in err, err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


def test_integer_fields_take_integers_however_written():
    cfg = load_config(None, ["engine.lanes=512", "engine.group='256'", "run.batch_bytes=1.0e6", "run.model_actors=2.0"])
    assert (cfg.engine.lanes, cfg.engine.group, cfg.run.batch_bytes, cfg.run.model_actors) == (512, 256, 1_000_000, 2)
    assert load_config(None, ["segment.percentile=98"]).segment.percentile == 98.0


def test_local_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["input=in", "output=./out/", "model.checkpoint=m/tiny.pt", "cache.warm_from=file://" + str(tmp_path / "w"),
                             "model.tokenizer=s3://b/tok.json"])
    assert (cfg.input, cfg.output, cfg.model.checkpoint, cfg.cache.warm_from) == (
        str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "m" / "tiny.pt"), str(tmp_path / "w"))
    assert cfg.model.tokenizer == "s3://b/tok.json"


def one_line_error(capsys, argv) -> str:
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("proxycomp: error: ") and "Traceback" not in err, err
    return err


def test_bad_locations_and_files_are_one_line_errors_before_ray_starts(tmp_path, capsys):
    make_input(tmp_path / "in", n_shards=1, max_bytes=2000)
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "bad.yaml").write_text("input: [in\nrun: {\n")
    err = one_line_error(capsys, ["run", "--config", str(tmp_path / "bad.yaml")])
    assert "bad.yaml: not valid YAML" in err and "line 2" in err
    err = one_line_error(capsys, ["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "file")])
    assert "is a file" in err
    for cmd in ("status", "verify", "export --dest x"):
        err = one_line_error(capsys, [*cmd.split(), "--output", str(tmp_path / "file")])
        assert "is a file" in err, cmd
    err = one_line_error(capsys, ["status", "--output", str(tmp_path / "in")])
    assert "config.yaml not found" in err
    err = one_line_error(capsys, ["run", "--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml: no such file" in err
    err = one_line_error(capsys, ["run", "--output", str(tmp_path / "out")])
    assert "no input" in err
    # Two input shards that would write one output shard: both named.
    (tmp_path / "in" / "part-00000.jsonl").write_text('{"content": "x = 1\\n"}\n')
    err = one_line_error(capsys, ["run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert "part-00000.jsonl and" in err and "part-00000.jsonl.zst both map to the output name 'part-00000'" in err
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


# -- runs on a real (in-process) Ray cluster ---------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def made(cluster, tmp_path_factory):
    """`proxycomp run --config job.yaml` with relative paths in the YAML, run from the
    directory they are relative to."""
    root = tmp_path_factory.mktemp("first-use")
    home = root / "home"
    make_input(home / "in", n_shards=3, max_bytes=12_000)
    tiny_checkpoint(home / "tiny.pt")
    (home / "job.yaml").write_text(yaml.safe_dump({"input": "in", "output": "out", "model": {"checkpoint": "tiny.pt"}, **FAST}))
    cwd = os.getcwd()
    os.chdir(home)
    try:
        assert cli(["run", "--config", "job.yaml", "--json"]) == 0
    finally:
        os.chdir(cwd)
    return home


def shard_files(out: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted((out / "shards").glob("*.parquet"))}


def test_an_output_made_with_relative_paths_is_usable_from_anywhere(made, tmp_path, monkeypatch, capsys):
    out = made / "out"
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["input"] == str(made / "in") and stored["model"]["checkpoint"] == str(made / "tiny.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert cli(["status", "--output", os.path.relpath(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"total": 3, "done": 3, "failed": 0, "pending": 0}
    assert cli(["verify", "--output", str(out), "--sample", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok_docs"] == 3
    assert cli(["export", "--output", str(out), "--dest", "lingua"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["trainer"]["data.root_dir"] == str(elsewhere / "lingua") and exported["documents"] > 0


def test_a_rerun_with_nothing_to_do_starts_nothing(made, monkeypatch, capsys):
    runs = sorted((made / "out" / "_runs").iterdir())
    config = (made / "out" / "config.yaml").read_bytes()

    def no_cluster(cfg):
        raise AssertionError("a run with nothing to do started the model actors")

    monkeypatch.setattr(job_module, "start_actors", no_cluster)
    monkeypatch.chdir(made)
    ledger = made / "out" / "_index" / "markers.json.zst"
    ledger.unlink()  # as an output of an older version has none: the no-op pass writes it for the next
    capsys.readouterr()
    assert cli(["run", "--config", "job.yaml"]) == 0
    assert ledger.exists()
    out = capsys.readouterr().out
    assert out.startswith("nothing to do: all 3 shard(s) are done") and "0.000" not in out, out
    # No new run record, and config.yaml still describes the run that wrote the shards.
    assert sorted((made / "out" / "_runs").iterdir()) == runs and (made / "out" / "config.yaml").read_bytes() == config
    # Settings the shards were not made with are refused without a cluster too.
    with pytest.raises(JobError, match="different compressor or settings"):
        run_job(load_config(str(made / "job.yaml"), ["engine.window_bits=8"]), log=lambda m: None)


def test_shards_cannot_mix_settings_into_one_output(made, monkeypatch):
    monkeypatch.chdir(made)  # the YAML's relative paths are relative to where the command runs
    before = {p.name: p.stat().st_mtime_ns for p in (made / "out" / "_done").iterdir()}
    for force in (False, True):
        with pytest.raises(JobError, match="--shards reruns only the shards it names"):
            run_job(load_config(str(made / "job.yaml"), ["engine.window_bits=8"]), shards=["part-00001"], force=force,
                    log=lambda m: None)
    assert {p.name: p.stat().st_mtime_ns for p in (made / "out" / "_done").iterdir()} == before
    # Scheduling is not content: a rerun of one shard with fewer workers is allowed, redoes
    # only that shard (with --force too) and writes the same bytes; the log counts the
    # shards it leaves alone.
    shards = shard_files(made / "out")
    logged = []
    s = run_job(load_config(str(made / "job.yaml"), ["run.shard_workers=1"]), shards=["part-00001"], force=True,
                log=logged.append)
    assert s.shards_done == 1 and shard_files(made / "out") == shards
    assert "1 shard(s) to run (named by --shards); 2 other shard(s) of the input are done" in logged
    after = {p.name: p.stat().st_mtime_ns for p in (made / "out" / "_done").iterdir()}
    assert [n for n in after if after[n] != before[n]] == ["part-00001.json"]
    # Each run that wrote shards left its resolved config beside its summary;
    # config.yaml is the latest of them.
    runs = sorted((made / "out" / "_runs").glob("*.config.yaml"))
    assert len(runs) == 2 and all(p.with_name(p.name.replace(".config.yaml", ".json")).exists() for p in runs)
    assert (made / "out" / "config.yaml").read_bytes() == runs[-1].read_bytes()
    assert yaml.safe_load(runs[-1].read_text())["run"]["shard_workers"] == 1
    assert yaml.safe_load(runs[0].read_text())["run"]["shard_workers"] == 2
    meta = read_metadata(pq.ParquetFile(made / "out" / "shards" / "part-00001.parquet"))
    marker = json.loads((made / "out" / "_done" / "part-00001.json").read_text())
    assert marker["settings"] == meta["settings"] and re.fullmatch(r"[0-9a-f]{24}", marker["settings"])
