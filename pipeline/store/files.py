"""Atomic writes and small reads on any fsspec URL: a file appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from contextlib import contextmanager

import fsspec


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


@contextmanager
def atomic_local_file(url: str, storage_options: dict | None = None, tmp_dir: str | None = None):
    """Yields a local path to write; on success it becomes `url` in one step (rename on
    a local filesystem, a single upload to an object store), on error nothing appears.
    Local temporary files go to tmp_dir (same filesystem) when given, so that nothing
    half-written ever sits among the finished files."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if _is_local(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        where = fsspec.core.url_to_fs(tmp_dir)[1] if tmp_dir else (os.path.dirname(path) or ".")
        os.makedirs(where, exist_ok=True)
        tmp = os.path.join(where, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    else:
        fd, tmp = tempfile.mkstemp(prefix="proxycomp-", suffix=os.path.basename(path))
        os.close(fd)
    try:
        yield tmp
        if _is_local(fs):
            os.replace(tmp, path)
        else:
            fs.put_file(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(url: str, data: bytes, storage_options: dict | None = None) -> None:
    with atomic_local_file(url, storage_options) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_json_atomic(url: str, obj, storage_options: dict | None = None) -> None:
    write_bytes_atomic(url, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), storage_options)


def read_json(url: str, storage_options: dict | None = None):
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        return json.loads(f.read())


def sha256_file(url: str, storage_options: dict | None = None) -> str:
    h = hashlib.sha256()
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def exists(url: str, storage_options: dict) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    return fs.exists(path)


def remove(url: str, storage_options: dict) -> None:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(path):
        fs.rm(path)


def remove_tree(url: str, storage_options: dict) -> None:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
