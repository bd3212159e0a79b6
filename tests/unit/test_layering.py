"""The service's layering: coder <- compressor_model <- pipeline, cache alone, the
trainer package apart, and no import cycle among modules (imports inside functions
count too: hiding one there does not remove the dependency)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("coder", "compressor_model", "pipeline", "cache")
MAY_IMPORT = {
    "coder": set(),
    "cache": set(),
    "compressor_model": {"coder"},
    "pipeline": {"coder", "compressor_model", "cache"},
}


def module_files():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """Project modules that `name` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES + ("proxytrain", "benchmarks")}


@pytest.fixture(scope="module")
def graph():
    mods = dict(module_files())
    edges = {}
    for name, path in mods.items():
        targets = set()
        for imp in imports_of(name, path):
            while imp and imp not in mods:  # `from pkg.mod import func` -> pkg.mod
                imp = imp.rpartition(".")[0]
            if imp and imp != name and imp.split(".")[0] in PACKAGES:
                targets.add(imp)
        edges[name] = targets
    return edges


def test_packages_depend_one_way(graph):
    wrong = []
    for mod, targets in graph.items():
        pkg = mod.split(".")[0]
        for t in targets:
            if t.split(".")[0] != pkg and t.split(".")[0] not in MAY_IMPORT[pkg]:
                wrong.append(f"{mod} -> {t}")
    assert not wrong, wrong


# Inside pipeline/: each part imports only the parts before it (and itself).
PIPELINE_ORDER = {
    "base": {"base"},  # pipeline.config, pipeline.errors, pipeline.redact
    "store": {"base", "store"},
    "backends": {"base", "store", "backends"},
    "job": {"base", "store", "backends", "job"},
    "commands": {"base", "store", "backends", "job", "commands"},
    "analysis": {"base", "store", "backends", "job", "analysis"},
    "cli": {"base", "store", "backends", "job", "commands", "analysis", "cli"},
}


def pipeline_part(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) > 2 and parts[1] in PIPELINE_ORDER:
        return parts[1]
    return "cli" if mod == "pipeline.cli" else "base"


def wrong_way_in_pipeline(graph) -> list[str]:
    wrong = []
    for mod, targets in graph.items():
        if mod.split(".")[0] != "pipeline" or mod == "pipeline":
            continue
        for t in targets:
            if t.split(".")[0] == "pipeline" and t != "pipeline" and pipeline_part(t) not in PIPELINE_ORDER[pipeline_part(mod)]:
                wrong.append(f"{mod} -> {t}")
    return wrong


def test_pipeline_parts_depend_one_way(graph):
    assert {pipeline_part(m) for m in graph if m.startswith("pipeline.")} == set(PIPELINE_ORDER)
    assert not wrong_way_in_pipeline(graph)


def test_a_wrong_way_import_is_caught(graph):
    """The check is not vacuous: the store importing the job, or a backend the
    commands, is reported."""
    bad = {m: set(t) for m, t in graph.items()}
    bad["pipeline.store.files"].add("pipeline.job.driver")
    bad["pipeline.backends.neural"].add("pipeline.commands.verify")
    assert sorted(wrong_way_in_pipeline(bad)) == ["pipeline.backends.neural -> pipeline.commands.verify",
                                                 "pipeline.store.files -> pipeline.job.driver"]


def test_no_import_cycle_among_modules(graph):
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(graph[m]):
            if t.endswith("__init__") or t in PACKAGES:
                continue  # package __init__ files re-export; they are leaves here
            if state.get(t) == "open":
                cycle.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, cycle


def test_service_packages_do_not_import_the_trainer_nor_the_trainer_them():
    for name, path in module_files():
        assert not any(m.startswith("proxytrain") for m in imports_of(name, path)), name
    for path in sorted((ROOT / "trainer" / "proxytrain").rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not {m.split(".")[0] for m in names if m} & {*PACKAGES, "ray", "numba"}, path


def test_the_product_does_not_import_the_benchmarks_nor_install_them():
    """benchmarks/ is run from a checkout; an installed worker image does not have it."""
    for name, path in module_files():
        assert not any(m.split(".")[0] == "benchmarks" for m in imports_of(name, path)), name
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = pyproject.split("[tool.setuptools.packages.find]")[1].split("\n[")[0]
    assert "benchmarks" not in include and all(f'"{p}*"' in include for p in PACKAGES)


@pytest.mark.parametrize("modules, absent", [
    ("coder, coder.lanes, coder.reference", ["compressor_model", "pipeline", "cache", "ray"]),
    ("cache.entry, cache.local, cache.sharded, cache.config", ["coder", "compressor_model", "pipeline", "ray", "torch"]),
    ("compressor_model.engine, compressor_model.train, compressor_model.segment, compressor_model.corpus",
     ["pipeline", "cache", "ray"]),
    ("compressor_model.records, compressor_model.corpus", ["torch", "pipeline", "cache"]),
    # Shard workers stay light; Ray imports the model actor's class module in each (it holds a handle).
    ("pipeline.job.shard, pipeline.job.stages, pipeline.backends.neural, pipeline.backends.model_actor", ["torch"]),
    # `status` and the store: a fast start, nothing of the model or the cluster
    ("pipeline.cli, pipeline.job.plan, pipeline.store.markers, pipeline.store.parquet", ["torch", "ray"]),
    # the job and the read-side commands run without the `analysis` extra
    ("pipeline.job.driver, pipeline.backends.model_actor, pipeline.commands.verify, pipeline.commands.export",
     ["matplotlib", "rapidfuzz"]),
])
def test_what_an_import_pulls_in(modules, absent):
    code = (f"import sys, {modules}\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({absent!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", (modules, out.stdout, out.stderr[-2000:])


@pytest.mark.parametrize("cmd", ["status", "plan", "verify", "export"])
def test_read_side_help_starts_without_torch_or_ray(cmd):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.cli", cmd, "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {ln.split("|")[-1].strip().split(".")[0] for ln in out.stderr.splitlines() if ln.startswith("import time:")}
    assert not loaded & {"torch", "ray"}, sorted(loaded & {"torch", "ray"})


@pytest.mark.parametrize("cmd", [["report", "--output", "unused", "--dest", "unused"],
                                 ["analyze", "segments", "--input", "unused"]])
def test_analysis_commands_name_the_extra_they_need(cmd):
    """Without matplotlib (an image built without `proxycomp[analysis]`), the command says
    which extra to install, as a user error, before touching anything."""
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            f"from pipeline.cli import main; sys.exit(main({cmd!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "pip install 'proxycomp[analysis]'" in out.stderr and "matplotlib" in out.stderr
