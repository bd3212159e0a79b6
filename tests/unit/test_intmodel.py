"""The integer model: the torch path equals the NumPy oracle bit for bit, on real code;
its intermediate values stay inside int64 for the paper40m shapes; quantization is
deterministic and the checkpoint's fingerprint covers the integer form."""

from __future__ import annotations

import copy
import functools
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from compressor_model import intmath, intmodel
from compressor_model.config import EngineConfig, Precision, SegmentConfig
from compressor_model.engine import NeuralCompressor, checkpoint_fingerprint
from compressor_model.int_reference import IntReference
from compressor_model.model import BOS, CONFIGS, ByteLM, ModelConfig, load_checkpoint
from compressor_model.reference import int_reference_windows
from tests.engine_fixtures import code_docs, tiny_model

GOLDEN = Path(__file__).parents[1] / "golden" / f"int8_v{intmath.INT_FORMAT}.json"


@functools.cache
def shipped() -> tuple[ByteLM, dict]:
    from compressor_model.engine import _checkpoint_bytes

    ckpt = load_checkpoint(_checkpoint_bytes(None))
    return ByteLM.from_checkpoint(ckpt).eval(), ckpt


def _rows(doc: bytes, n: int) -> torch.Tensor:
    return torch.tensor([[BOS] + list(doc[:n - 1])])


@pytest.mark.parametrize("which", ["shipped", "tiny"])
def test_torch_integer_model_equals_the_numpy_oracle(which):
    model = shipped()[0] if which == "shipped" else tiny_model()
    q = intmodel.quantize(model)
    ref = IntReference(q.state_dict(), model.cfg)
    doc = code_docs(3)[2]
    x = _rows(doc, 96)
    with torch.no_grad():
        logits = q(x)[0]
    want = ref.logits(x[0].numpy())
    assert logits.dtype == torch.int64 and np.array_equal(logits.numpy(), want)
    assert np.array_equal(q.frequencies(logits).numpy(), np.stack([ref.frequencies(r) for r in want]))
    assert np.array_equal((q.entropy_bits(logits) * 65536).long().numpy(), ref.entropy(want))
    # The step path (a KV cache, one position at a time, lanes at different positions)
    # gives the very rows the whole-row forward gives.
    cache = q.new_cache(3, 24)
    rows = []
    for n in range(1, 24):
        tok = torch.tensor([x[0, n].item(), 65, x[0, n].item()])
        rows.append(q.step(tok, torch.full((3,), n), cache))
    got = torch.stack(rows)  # [23, 3, 256]
    assert torch.equal(got[:, 0], logits[1:24]) and torch.equal(got[:, 2], logits[1:24])
    assert not torch.equal(got[:, 1], logits[1:24])  # lane 1 read other bytes: the check can fail


def test_engine_windows_equal_the_oracle_windows():
    """End to end: the int8 engine's windows (batched lanes, group rows) are the windows
    the NumPy oracle codes one byte at a time."""
    model = tiny_model()
    comp = NeuralCompressor(model, model.fingerprint(), EngineConfig(lanes=16, group=8, compile=False), SegmentConfig(call_positions=512))
    ref = IntReference(comp.model.state_dict(), model.cfg)
    doc = code_docs(2)[1][:400]
    segs = [doc[i : i + 40] for i in range(0, 200, 40)]
    data = np.frombuffer(b"".join(segs), np.uint8)
    off = np.cumsum([0] + [len(s) for s in segs])
    w = comp.encode_segments(data, off)
    for s, seg in enumerate(segs):
        codes, counts = int_reference_windows(ref, seg, comp.cfg)
        a, b = w.win_off[s], w.win_off[s + 1]
        assert w.codes[a:b].tolist() == codes and w.counts[a:b].tolist() == counts, s


def _extreme(cfg: ModelConfig) -> intmodel.IntByteLM:
    """An integer model of these shapes whose every weight and multiplier is as large as
    the format allows, with the smallest shifts: intermediates reach their clamps."""
    q = intmodel.quantize(ByteLM(cfg))
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, t in q.state_dict().items():
        if k.endswith("_w"):
            t = (torch.randint(0, 2, t.shape, generator=g, dtype=torch.int8) * 2 - 1) * intmath.WEIGHT_MAX
        elif k.endswith("_m"):
            t = torch.full_like(t, (1 << 15) - 1)
        elif k.endswith("_s"):
            t = torch.full_like(t, 15)
        elif k in ("wte", "wpe"):
            t = torch.randint(-intmath.RES_LIMIT // 4, intmath.RES_LIMIT // 4, t.shape, generator=g)
        sd[k] = t
    return intmodel.IntByteLM(cfg, sd)


def test_no_int64_overflow_at_the_paper40m_shapes():
    """The oracle in Python integers (no overflow possible) equals the torch int64 path
    for a paper40m-shaped layer driven to its clamps: no product left int64."""
    big = CONFIGS["paper40m"]
    cfg = ModelConfig(block_size=big.block_size, n_layer=1, n_head=big.n_head, n_embd=big.n_embd)
    q = _extreme(cfg)
    x = torch.tensor([[BOS, 3, 200, 17, 99, 255]])
    with torch.no_grad():
        got = q(x)[0]
    ref = IntReference(q.state_dict(), cfg, exact=True)
    want = ref.logits(x[0].numpy())
    assert want.dtype == object and np.array_equal(got.numpy(), want.astype(np.int64))
    assert max(abs(int(v)) for v in want.ravel()) < 2**62
    # The largest context of paper40m: attention sums over 1024 keys stay exact.
    assert big.block_size * (1 << intmath.ATTN_BITS) * intmath.ACT_LIMIT < 2**53
    assert 127 * 127 * (big.n_embd // big.n_head) < 2**24 and 127 * intmath.WEIGHT_MAX * 4 * big.n_embd < 2**31


def test_quantization_is_deterministic_and_the_fingerprint_covers_it(tmp_path):
    model = tiny_model()
    a, b = intmodel.quantize(model), intmodel.quantize(model)
    assert a.digest() == b.digest()
    ckpt = intmodel.with_int_form(model.to_checkpoint(), model)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    loaded = load_checkpoint(buf.getvalue())
    q = intmodel.from_checkpoint(loaded, ByteLM.from_checkpoint(loaded))
    assert q.digest() == a.digest()
    fp_int = checkpoint_fingerprint(buf.getvalue(), Precision.INT8)
    assert fp_int == intmodel.fingerprint(model.fingerprint(), a.digest()) != model.fingerprint()
    assert checkpoint_fingerprint(buf.getvalue(), Precision.FP32) == model.fingerprint()
    loaded["int8"]["state"]["head_w"][0, 0] += 1  # an edited integer weight
    with pytest.raises(ValueError, match="int8 form does not match"):
        intmodel.from_checkpoint(loaded, model)


def test_the_shipped_checkpoint_carries_its_integer_form():
    model, ckpt = shipped()
    assert ckpt["int8"]["format"] == intmath.INT_FORMAT
    assert intmodel.from_checkpoint(ckpt, model).digest() == intmodel.quantize(model).digest()


def golden_case() -> dict:
    """The shipped model's int8 output for a fixed piece of real code."""
    comp = NeuralCompressor.load(None, EngineConfig(lanes=32, group=32, compile=False), SegmentConfig(call_positions=1024))
    docs = [d[:600] for d in code_docs(4)]
    th = comp.calibrate(docs)
    recs = comp.compress(docs, th)
    h = comp.entropies(docs[:1])[0]
    return {"fingerprint": comp.fingerprint, "theta_abs": th.theta_abs, "theta_jump": th.theta_jump,
            "entropy_first_32": [float(v) for v in h[:32]],
            "symbols": [r.symbols.tolist() for r in recs], "window_counts": [r.window_counts.tolist() for r in recs],
            "seg_off": [r.seg_off.tolist() for r in recs]}


def test_shipped_model_output_matches_the_golden_file():
    """Pins the integer format: a change to any integer operation, table or constant
    changes this output, and must come with an INT_FORMAT bump and a new golden file
    (`python -m tests.unit.test_intmodel`)."""
    assert golden_case() == json.loads(GOLDEN.read_text())


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(golden_case()))
    print(f"wrote {GOLDEN}")


def test_compiled_kernels_are_cached_per_vector_isa(monkeypatch, tmp_path):
    """A kernel cache shared by processes under different ATEN_CPU_CAPABILITY gave other
    integers: compile() keys the directory by ISA, a user's TORCHINDUCTOR_CACHE_DIR too."""
    q = intmodel.quantize(ByteLM(CONFIGS["tiny"]))
    isa = torch.backends.cpu.get_cpu_capability().lower()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    q.compile()
    q.compile()  # idempotent: one level, not two
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / isa)


def test_compiled_parts_give_the_same_integers():
    """torch.compile fuses the integer work (engine.compile, on CPUs): integer results
    cannot change, and do not."""
    q = intmodel.quantize(tiny_model())
    c = copy.deepcopy(q).compile()
    x = _rows(code_docs(3)[2], 64)
    with torch.no_grad():  # coding steps: the compiled parts around the KV cache writes
        eager, fused = q.new_cache(4, 16), c.new_cache(4, 16)
        for n in range(1, 8):
            tok, pos = x[0, n].repeat(4), torch.full((4,), n)
            assert torch.equal(c.step(tok, pos, fused), q.step(tok, pos, eager))
