"""Corpus shards -> documents, through fsspec (local paths, s3://, any fsspec URL).

Formats: JSON lines (`.jsonl`, `.json`, `.ndjson`), zstd-compressed JSON lines
(`.jsonl.zst`, `.zst`) and Parquet (`.parquet`). A row that cannot become a document is
yielded as a `Reject` naming the shard, the row and the reason; a shard that cannot be
read at all raises `ShardError` with the same details. Nothing is skipped silently.

The model's training CLI and the pipeline both read the corpus through this module,
which is why it sits below both. Messages are not scrubbed of secrets here: whoever
reports them (the pipeline's failure records, rejects files, CLI) does that.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard


class ShardFormat(enum.Enum):
    JSONL = "jsonl"
    JSONL_ZST = "jsonl.zst"
    PARQUET = "parquet"

    @classmethod
    def of(cls, url: str) -> "ShardFormat":
        name = url.rsplit("/", 1)[-1].lower()
        if name.endswith((".jsonl.zst", ".json.zst", ".ndjson.zst", ".zst")):
            return cls.JSONL_ZST
        if name.endswith((".jsonl", ".json", ".ndjson")):
            return cls.JSONL
        if name.endswith(".parquet"):
            return cls.PARQUET
        raise ValueError(f"{url}: unknown shard format (expected .jsonl, .jsonl.zst or .parquet)")


SHARD_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.zst", ".json.zst", ".ndjson.zst", ".zst", ".parquet")


@dataclass(frozen=True)
class ReaderConfig:
    text_field: str = "content"  # falls back to fallback_field when a row lacks it
    fallback_field: str = "text"
    id_field: str = "id"
    require_utf8: bool = True  # bytes columns must hold valid UTF-8
    max_document_bytes: int = 64 << 20  # larger documents are rejected, not read into memory twice


@dataclass
class Document:
    shard: str
    row: int
    id: str
    data: bytes


@dataclass
class Reject:
    shard: str
    row: int
    id: str
    reason: str


class ShardError(Exception):
    """A shard (or the rest of it from `row` on) could not be read."""

    def __init__(self, shard: str, row: int | None, reason: str):
        self.shard, self.row, self.reason = shard, row, reason
        where = f"{shard}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {reason}")


@dataclass
class _RowParser:
    shard: str
    cfg: ReaderConfig
    fields_seen: set = field(default_factory=set)

    def __call__(self, row: int, rec) -> Document | Reject:
        ident = f"{self.shard.rsplit('/', 1)[-1]}#{row}"
        if not isinstance(rec, dict):
            return Reject(self.shard, row, ident, f"row is a JSON {type(rec).__name__}, not an object")
        if rec.get(self.cfg.id_field) is not None:
            ident = str(rec[self.cfg.id_field])
        present = [k for k in (self.cfg.text_field, self.cfg.fallback_field) if k in rec]
        if not present:
            return Reject(self.shard, row, ident, f"no '{self.cfg.text_field}' or '{self.cfg.fallback_field}' field")
        key = next((k for k in present if rec[k] is not None), present[0])  # a null field falls back
        value = rec[key]
        if value is None:
            return Reject(self.shard, row, ident, f"field '{key}' is null")
        if isinstance(value, str):
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError as e:
                return Reject(self.shard, row, ident, f"field '{key}' is not valid Unicode ({e.reason} at char {e.start})")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
            if self.cfg.require_utf8:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError as e:
                    return Reject(self.shard, row, ident, f"field '{key}' is not valid UTF-8 (byte {e.start})")
        else:
            return Reject(self.shard, row, ident, f"field '{key}' is {type(value).__name__}, expected text")
        if len(data) > self.cfg.max_document_bytes:
            return Reject(self.shard, row, ident, f"document of {len(data)} bytes exceeds max_document_bytes {self.cfg.max_document_bytes}")
        return Document(self.shard, row, ident, data)


def read_shard(url: str, cfg: ReaderConfig = ReaderConfig(), storage_options: dict | None = None) -> Iterator[Document | Reject]:
    """Documents and rejects of one shard, in row order."""
    fmt = ShardFormat.of(url)
    parse = _RowParser(url, cfg)
    try:
        f = fsspec.open(url, "rb", **(storage_options or {})).open()
    except Exception as e:  # noqa: BLE001 - any backend error means the shard is unreadable
        raise ShardError(url, None, f"cannot open: {_describe(e)}") from None
    with f:
        if fmt is ShardFormat.PARQUET:
            yield from _parquet(url, f, parse)
        else:
            yield from _jsonl(url, f, parse, fmt is ShardFormat.JSONL_ZST)


class _Truncated(Exception):
    pass


@dataclass
class _LongLine:
    """Stands in for a line longer than the reader will hold in memory."""

    length: int


def _chunks(f, zst: bool, chunk: int = 1 << 20):
    if not zst:
        while data := f.read(chunk):
            yield data
        return
    # zstandard's streaming readers end a truncated frame silently; decompressobj
    # tells whether the input stopped inside a frame.
    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    inside = False
    while data := f.read(chunk):
        while data:
            yield d.decompress(data)
            inside = True
            if d.eof:
                data, d, inside = d.unused_data, dctx.decompressobj(), False
            else:
                data = b""
    if inside:
        raise _Truncated("the zstd stream ends in the middle of a frame (truncated file)")


def _lines(f, zst: bool, max_line: int):
    """Lines of a (compressed) text stream. A line over max_line bytes is not kept in
    memory: it is counted through and comes out as a _LongLine."""
    parts: list[bytes] = []  # pieces of the current line (a line may span many chunks)
    size = 0
    for piece in _chunks(f, zst):
        start = 0
        while (end := piece.find(b"\n", start)) >= 0:
            size += end + 1 - start
            if size <= max_line:
                parts.append(piece[start : end + 1])
                yield b"".join(parts)
            else:
                yield _LongLine(size)
            parts, size, start = [], 0, end + 1
        if start < len(piece):
            size += len(piece) - start
            if size <= max_line:
                parts.append(piece[start:])
            else:
                parts = []
    if size:
        yield b"".join(parts) if size <= max_line else _LongLine(size)


def _jsonl(url, f, parse, zst: bool):
    # JSON escapes can make a line up to 6x its text; longer lines cannot hold a
    # document under the limit, so they are rejected without being read into memory.
    max_line = 6 * parse.cfg.max_document_bytes + 4096
    lines = _lines(f, zst, max_line)
    row = 0
    name = url.rsplit("/", 1)[-1]
    while True:
        try:
            line = next(lines)
        except StopIteration:
            break
        except (zstandard.ZstdError, _Truncated, OSError, EOFError) as e:
            raise ShardError(url, row, f"cannot read further: {_describe(e)}") from None
        if isinstance(line, _LongLine):
            yield Reject(url, row, f"{name}#{row}",
                         f"line of {line.length} bytes cannot hold a document under max_document_bytes "
                         f"{parse.cfg.max_document_bytes}")
        elif not line.strip():  # a row like any other: every line is a document or a reject
            yield Reject(url, row, f"{name}#{row}", "blank line")
        else:
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield Reject(url, row, f"{name}#{row}", f"not JSON: {e}")
            else:
                yield parse(row, rec)
        row += 1


def _parquet(url, f, parse):
    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise ShardError(url, None, f"not a readable Parquet file: {_describe(e)}") from None
    names = pf.schema_arrow.names
    cfg = parse.cfg
    key = cfg.text_field if cfg.text_field in names else cfg.fallback_field
    if key not in names:
        raise ShardError(url, None, f"no '{cfg.text_field}' or '{cfg.fallback_field}' column (columns: {names})")
    ftype = pf.schema_arrow.field(key).type
    if not (pa.types.is_string(ftype) or pa.types.is_large_string(ftype) or pa.types.is_binary(ftype) or pa.types.is_large_binary(ftype)):
        raise ShardError(url, None, f"column '{key}' has type {ftype}, expected string or binary")
    cols = [key] + ([cfg.id_field] if cfg.id_field in names else [])
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=cols):
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if len(cols) > 1 else [None] * len(texts)
            for text, ident in zip(texts, ids):
                rec = {key: text}
                if ident is not None:
                    rec[cfg.id_field] = ident
                yield parse(row, rec)
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise ShardError(url, row, f"cannot read further: {_describe(e)}") from None


def _describe(e: BaseException) -> str:
    """An error's type and message. Not scrubbed here: whoever reports it (the pipeline's
    failure records, rejects files and CLI) removes secrets on the way out."""
    return f"{type(e).__name__}: {e}"


def listing_tag(info: dict) -> str:
    """What changes when a file is rewritten, from its listing entry alone: its ETag (or
    MD5) where the store keeps one, its size and its modification time."""
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""
    when = info.get("mtime") or info.get("LastModified") or info.get("updated") or info.get("created") or ""
    return f"{etag}|{info.get('size')}|{when}"


def first_bytes(docs: list[bytes], max_bytes: int) -> list[bytes]:
    """The first max_bytes of a document list, the last document cut to fit (0: all)."""
    if not max_bytes:
        return list(docs)
    out, total = [], 0
    for d in docs:
        if total >= max_bytes:
            break
        out.append(d[: max_bytes - total])
        total += len(out[-1])
    return out


def list_shards(url: str, storage_options: dict | None = None, sizes: bool = False, tags: bool = False):
    """Input shard URLs in a deterministic (sorted) order: a single shard file, or every
    shard file under a directory/prefix (recursively). With sizes=True, (url, bytes);
    with tags=True, (url, bytes, listing_tag): from the one listing, no request per file."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    if fs.isfile(path):
        found = {path: fs.info(path)}
        protocol, path_url = "", {path: url}
    elif not fs.exists(path):
        raise FileNotFoundError(f"{url}: no such file or directory")
    else:
        found = {p: info for p, info in fs.find(path, detail=True).items() if p.lower().endswith(SHARD_SUFFIXES)}
        path_url = {p: protocol + p if protocol else p for p in found}
    out = sorted((path_url[p], info.get("size", 0) or 0, listing_tag(info)) for p, info in found.items())
    if tags:
        return out
    return [(u, n) for u, n, _ in out] if sizes else [u for u, _, _ in out]
