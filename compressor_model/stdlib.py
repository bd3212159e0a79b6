"""Real code as data: the interpreter's own standard library sources.

Every machine with Python has them, so the demo, the tests, the benchmarks and the
model's training run on real code without downloading anything. Files are split
deterministically into a training part and a held-out part (by a hash of their path),
so a model trained on one can be measured on the other.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HELDOUT_EVERY = 20  # one file in 20 is held out


@dataclass
class SourceFile:
    path: str  # relative to the stdlib root
    text: str


def split_of(rel_path: str) -> str:
    h = int.from_bytes(hashlib.sha256(rel_path.encode()).digest()[:4], "little")
    return "heldout" if h % HELDOUT_EVERY == 0 else "train"


def stdlib_files(split: str | None = None, root: str | None = None) -> list[SourceFile]:
    """UTF-8 .py files of the standard library (site-packages excluded), sorted by path."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).as_posix()
        if "site-packages" in rel or (split and split_of(rel) != split):
            continue
        try:
            text = p.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately not UTF-8
        if text:
            out.append(SourceFile(rel, text))
    return out


def take_bytes(files: list[SourceFile], max_bytes: int) -> list[SourceFile]:
    out, total = [], 0
    for f in files:
        n = len(f.text.encode())
        if max_bytes and total + n > max_bytes:
            continue
        out.append(f)
        total += n
    return out
