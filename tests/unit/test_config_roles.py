"""Every setting declares what it changes (compressor_model.config.Role), and an output's
content config follows: changing any one field changes the content config exactly when
its role says the bytes depend on it, in int8 and in a float precision."""

from __future__ import annotations

import dataclasses
import enum

import pytest

from compressor_model.config import Precision, Role
from pipeline.config import JobConfig, content_config


def leaves(obj, path=(), default=Role.CONTENT):
    for f in dataclasses.fields(obj):
        role, value = f.metadata.get("role", default), getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, path + (f.name,), role)
        else:
            yield path + (f.name,), role, value


def other(value):
    if isinstance(value, enum.Enum):
        return next(m for m in type(value) if m is not value and m.value != "auto")
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, dict):
        return {**value, "x": 1}
    raise TypeError(value)


def changed(cfg, path, value):
    if len(path) == 1:
        return dataclasses.replace(cfg, **{path[0]: value})
    return dataclasses.replace(cfg, **{path[0]: changed(getattr(cfg, path[0]), path[1:], value)})


@pytest.mark.parametrize("precision", [Precision.INT8, Precision.FP32])
def test_content_config_follows_each_fields_role(precision):
    base = changed(JobConfig(input="/in", output="/out"), ("engine", "precision"), precision)
    seen = set()
    for path, role, value in leaves(base):
        if path == ("engine", "precision"):
            continue  # the precision itself: its resolved value is recorded
        counts = role is Role.CONTENT or (role is Role.FLOAT_ONLY and precision.is_float)
        differs = content_config(changed(base, path, other(value))) != content_config(base)
        assert differs == counts, (".".join(path), role)
        seen.add(role)
    assert seen == set(Role)


# What the bytes of an output depend on, as decided field by field: a new setting counts
# as content until its role says otherwise, and this list makes that a decision.
FLOAT_ONLY = {"engine.group", "engine.device"}
CONTENT = {"input", "model.checkpoint", "model.compressor", "model.tokenizer", "reader.text_field",
           "reader.fallback_field", "reader.id_field", "reader.require_utf8", "reader.max_document_bytes",
           "segment.kind", "segment.percentile", "segment.fixed_bytes", "segment.max_segment_bytes",
           "segment.context_overlap", "segment.call_positions", "engine.max_window_bytes", "engine.window_bits",
           "engine.symbol_bits", "engine.precision", "output_format.store_raw", "output_format.row_group_docs",
           "output_format.compression", "run.doc_slice_bytes"}


def test_each_settings_role_is_a_decision():
    roles = {".".join(p): r for p, r, _ in leaves(JobConfig())}
    assert {k for k, r in roles.items() if r is Role.CONTENT} == CONTENT
    assert {k for k, r in roles.items() if r is Role.FLOAT_ONLY} == FLOAT_ONLY
