"""A virtualenv of its own for a package, quickly. What the package needs (its
requirements, recursively, as this test environment has them installed) is hard-linked
from here: the same files a wheel install writes, where a fresh torch alone unpacks
about 1 GB (20 s on CI's disk). Then pip installs the package itself and checks that
every requirement is satisfied at a version the constraints allow."""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def requirements(dist: md.Distribution) -> list[str]:
    """Names of what a distribution needs (extras left out)."""
    reqs = [Requirement(spec) for spec in dist.requires or []]
    return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def closure(names: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions these need, themselves included."""
    out: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name not in out:
            out[name] = md.distribution(name)
            todo += requirements(out[name])
    return out


def link_install(dist: md.Distribution, site: Path) -> None:
    for f in dist.files or []:
        src, dst = Path(dist.locate_file(f)), site / f
        if ".." in f.parts or not src.is_file():
            continue  # scripts outside site-packages: not needed to import
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another filesystem
            shutil.copy2(src, dst)


def make_venv(venv: Path, package: Path, dist_name: str, extra: list[str], constraints: str, env: dict) -> str:
    """A venv with `package` (installed here as `dist_name`) and `extra` distributions."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                               env=env, capture_output=True, text=True).stdout.strip())
    needed = closure(requirements(md.distribution(dist_name)) + extra + ["setuptools", "pip"])
    for name, dist in needed.items():
        if name != canonicalize_name(dist_name):
            link_install(dist, site)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-compile", "--no-build-isolation", "-c", constraints,
                    str(package), *extra], check=True, env=env, cwd=venv.parent)
    return py
