"""What a new user meets first, before any cluster starts: the shipped commands, settings
taken as written, paths that mean the same from anywhere, every option's help, and
one-line errors. (On a cluster: tests/e2e/test_pipeline.py runs its job from a YAML file
with relative paths, reruns it with nothing to do, with --shards and with settings
that would mix; tests/e2e/test_faults.py interrupts a driver.)"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from pipeline.cli import _config, build_parser
from pipeline.cli import main as cli
from pipeline.config import check_job, load_config
from tests.pipeline_fixtures import make_input

REPO = Path(__file__).resolve().parents[2]
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


def test_our_bugs_do_not_read_as_user_mistakes(monkeypatch, capsys):
    """A failed invariant of ours (the coder's argument checks see only arrays the
    pipeline made; InternalError) says it is a bug and exits 70; a bad setting exits 2."""
    import numpy as np

    import pipeline.cli as cli_module
    from coder import CoderConfig, Packed, unpack
    from pipeline.errors import InternalError, SettingsError

    def coder_misused(a):
        unpack(Packed(np.zeros(3, np.uint16), np.array([0, 5])), np.array([1]), CoderConfig())
        return 0

    def bad_setting(a):
        raise SettingsError("engine.lanes must be at least 1, got 0")

    def broken_invariant(a):
        raise InternalError("part-00000: 10 documents read, 9 written and 0 rejected")

    for fn, status, said in ((coder_misused, 70, "ValueError from the coder"), (bad_setting, 2, "engine.lanes"),
                             (broken_invariant, 70, "10 documents read")):
        monkeypatch.setattr(cli_module, "cmd_status", fn)
        assert cli(["status", "--output", "unused"]) == status
        err = capsys.readouterr().err
        assert said in err and (("a bug in proxycomp" in err) == (status == 70)), err
