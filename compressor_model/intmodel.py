"""The compressor model in exact integer arithmetic (`Precision.INT8`).

The same Transformer as `model.ByteLM`, with int8 weights and activations:

* a linear layer is int8 [M, K] @ int8 [K, N] -> int32 (`intmath.mm_int8`, torch._int_mm),
  then one per-channel multiplier and a per-row shift back to fixed point; weights use
  +-64 of the int8 range (`intmath.WEIGHT_MAX`: exact on CPUs without VNNI too);
* activations are quantized per row (per position, and per head for q and k) with a
  power-of-two scale computed in integers (`intmath.row_quant`);
* LayerNorm gains and biases are folded into the linear layer after them;
* GELU, both softmaxes and the entropy are table-driven (`intmath`).

`quantize(ByteLM)` turns a float model into this form, deterministically (exact
sums, one rounding per stored integer); the checkpoint stores the result, and its
fingerprint covers it. `int_reference` is the same model in NumPy int64, the oracle.

Like ByteLM it has `forward(idx)` for whole rows and `step(tokens, pos, cache)` for
coding lanes; here the two give identical results for the same context, and a row's
results are a pure function of the weights and that row's tokens before the position.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import intmath as im
from .model import ByteLM, ModelConfig, load_checkpoint


class IntKVCache:
    """Per-lane keys and values, compact (a step reads the whole cache: this is a third
    of the bytes of the types attention multiplies in): k8 [n_layer, B, h, T, d] int8
    with ks [n_layer, B, h, T, 1] its row's power of two (float32), v int32 like k8."""

    def __init__(self, cfg: ModelConfig, lanes: int, length: int, device):
        shape = (cfg.n_layer, lanes, cfg.n_head, length, cfg.n_embd // cfg.n_head)
        self.k8 = torch.zeros(shape, dtype=torch.int8, device=device)
        self.ks = torch.ones(shape[:-1] + (1,), dtype=torch.float32, device=device)
        self.v = torch.zeros(shape, dtype=torch.int32, device=device)
        self.slots = torch.arange(length, device=device)


LINEARS = ("attn", "proj", "fc", "mproj")  # per block: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj


Linear = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # int8 W^T, multipliers, shift, bias


def _linear(x8, e, lin: Linear) -> torch.Tensor:  # [M, K] int8, [M, 1] -> [M, N] int64
    """(acc * m) >> (s - e), rounded, plus the bias. In float64, where it is exact and
    cheap: |acc| <= 127 * 64 * K < 2**24 and m < 2**15, so acc * m * 2**-(s - e) needs
    39 bits, + 1/2 and the floor stay exact for shifts up to 52 (checked at load)."""
    w, m, s, b = lin
    acc = im.mm_int8(x8, w)
    scale = m.double() * im.pow2(-(s - e).clamp(min=1), torch.float64)  # [M, N], exact
    return torch.floor(acc.double() * scale + 0.5).long() + b


def _ln_linear(x, lin: Linear) -> torch.Tensor:  # x [M, C] residual -> [M, N]
    return _linear(*im.row_quant(im.layer_norm(x)), lin)


def qkv_part(x, lin: Linear, n_head: int, B: int, compact: bool):
    """[B*T, C] residual -> q, k, v [B, h, T, d] (contiguous: the batched products take
    them without a copy). q and k are int8 per position and head times their power of
    two (`intmath.attention`), float32; v float64. `compact` (for a KV cache): k as
    (int8, its power of two [B, h, T, 1]), v int32."""
    M, C = x.shape
    qkv = _ln_linear(x, lin).clamp(-im.ACT_LIMIT, im.ACT_LIMIT).view(B, M // B, 3, n_head, C // n_head)
    q8, eq = im.row_quant(qkv[:, :, 0])
    k8, ek = im.row_quant(qkv[:, :, 1])
    q, ks = q8.float() * im.pow2(eq - im.SCORE_SHIFT), im.pow2(ek)
    out = (q, k8, ks, qkv[:, :, 2].int()) if compact else (q, k8.float() * ks, qkv[:, :, 2].double())
    return tuple(t.transpose(1, 2).contiguous() for t in out)


def cached_attention(q, k8, ks, v, visible, mult: int, weights) -> torch.Tensor:
    """`intmath.attention` on a compact KV cache (`IntKVCache`)."""
    return im.attention(q, k8.float() * ks, v.double(), visible, mult, weights)


def tail_part(x, y, proj: Linear, fc: Linear, mproj: Linear, phi) -> torch.Tensor:
    """A block after attention: x [M, C] residual, y [B, h, T, d] attention output -> x."""
    y = y.transpose(1, 2).reshape(x.shape)
    x = (x + _linear(*im.row_quant(y), proj)).clamp(-im.RES_LIMIT, im.RES_LIMIT)
    hid = _ln_linear(x, fc).clamp(-im.ACT_LIMIT, im.ACT_LIMIT)
    return (x + _linear(*im.row_quant(im.gelu(hid, phi)), mproj)).clamp(-im.RES_LIMIT, im.RES_LIMIT)


def query_block(T: int) -> int:
    """Queries per attention call of a whole-row forward: at most 8 blocks a row (each
    block is one more compiled shape), at least 64 queries a block."""
    return min(T, max(64, -(-T // 8)))


PARTS = {"qkv": qkv_part, "attention": im.attention, "cached_attention": cached_attention, "tail": tail_part, "head": _ln_linear,
         "frequencies": im.frequencies, "entropy": im.entropy}


class IntByteLM(nn.Module):
    """Buffers only (int8 weights, int64 multipliers, biases, tables): `.to(device)`
    moves it, `state_dict()` is the stored integer form. The work runs in seven pure
    functions (`PARTS`) called per layer; `compile()` fuses each with torch.compile,
    which cannot change an integer result."""

    def __init__(self, cfg: ModelConfig, tensors: dict[str, torch.Tensor]):
        super().__init__()
        if cfg.n_embd // cfg.n_head > 1024:
            raise ValueError("int8 attention needs head_dim <= 1024 (exact float32 scores)")
        if cfg.block_size > 1024:
            raise ValueError("int8 attention needs block_size <= 1024 (exact float64 sums)")
        self.cfg = cfg
        for name, t in tensors.items():
            if name.endswith("_w"):
                im.check_mm_weight(t, name)
            if name.endswith("_s") and not 0 < int(t) <= 52:
                raise ValueError(f"{name}: requantization shift {int(t)} outside 1..52 (exact float64 rounding)")
            self.register_buffer(name, t)
        self.score_mult = im.score_mult(cfg.n_embd // cfg.n_head)
        self.register_buffer("attn_weights", im.attention_table(self.exp2).double(), persistent=False)
        self.parts = dict(PARTS)

    def compile(self) -> "IntByteLM":
        """Each part compiled once per input shape (the layers share it). Compiled
        kernels are cached on disk per vector ISA, under TORCHINDUCTOR_CACHE_DIR where
        set too: inductor's cache key misses an ISA chosen by ATEN_CPU_CAPABILITY, and
        a process reusing kernels built under another one crashed, or (seen with a
        shared cache directory) computed other integers."""
        isa = torch.backends.cpu.get_cpu_capability().lower()
        user = os.environ.get("USER") or str(os.getuid())
        base = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
        if os.path.basename(base) != isa:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, isa)
        # One compiled graph per call shape: row lengths x query blocks, plus the steps
        # (paper40m: ~40 attention shapes, past dynamo's default limit of 8).
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 128)
        self.parts = {k: torch.compile(fn, dynamic=False) for k, fn in PARTS.items()}
        return self

    def _lin(self, name: str) -> Linear:
        return tuple(getattr(self, f"{name}_{k}") for k in "wmsb")

    def _layer(self, x, i, B, attend, compact=False):  # x [B*T, C]; attend(*qkv) -> y [B, h, T, d]
        y = attend(*self.parts["qkv"](x, self._lin(f"b{i}_attn"), self.cfg.n_head, B, compact))
        return self.parts["tail"](x, y, self._lin(f"b{i}_proj"), self._lin(f"b{i}_fc"), self._lin(f"b{i}_mproj"), self.phi)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # idx [B, T] -> logits int64 [B, T, 256]
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} exceeds block_size {self.cfg.block_size}")
        x = (self.wte[idx] + self.wpe[:T]).view(B * T, -1)  # [B*T, C]
        visible = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()[None, None]

        Q = query_block(T)

        def attend(q, k, v):  # [B, h, T, d] each -> y [B, h, T, d]
            # Causal: queries [a, a + Q) read keys [0, a + Q) only, so the masked upper
            # triangle is mostly never computed (a masked key weighs exactly 0: the
            # same integers either way).
            return torch.cat([self.parts["attention"](q[:, :, a:a + Q], k[:, :, :a + Q], v[:, :, :a + Q],
                                                      visible[:, :, a:a + Q, :a + Q], self.score_mult, self.attn_weights)
                              for a in range(0, T, Q)], 2)

        for i in range(self.cfg.n_layer):
            x = self._layer(x, i, B, attend)
        return self.parts["head"](x, self._lin("head")).view(B, T, -1)

    def new_cache(self, lanes: int, length: int) -> IntKVCache:
        if length > self.cfg.block_size:
            raise ValueError(f"cache of {length} exceeds block_size {self.cfg.block_size}")
        cache = IntKVCache(self.cfg, lanes, length, self.wte.device)
        self.step(torch.full((lanes,), 256, device=self.wte.device), torch.zeros(lanes, dtype=torch.long, device=self.wte.device), cache)
        return cache

    def step(self, tokens, pos, cache: IntKVCache) -> torch.Tensor:  # tokens, pos [B] -> logits int64 [B, 256]
        x = self.wte[tokens] + self.wpe[pos]  # [B, C]
        B, h, S = x.shape[0], self.cfg.n_head, len(cache.slots)
        # (lane, head) -> its row at pos in a layer's cache seen as [B * h * S, .]
        rows = (torch.arange(B * h, device=x.device).view(B, h) * S + pos[:, None]).view(-1)
        visible = (cache.slots[None, :] <= pos[:, None])[:, None, None, :]  # [B, 1, 1, T]
        for i in range(self.cfg.n_layer):
            def attend(q, k8, ks, v, i=i):  # [B, h, 1, .]: this position's, into the cache at pos
                for store, new in ((cache.k8[i], k8), (cache.ks[i], ks), (cache.v[i], v)):
                    store.view(B * h * S, -1).index_copy_(0, rows, new.view(B * h, -1))
                return self.parts["cached_attention"](q, cache.k8[i], cache.ks[i], cache.v[i], visible,
                                                      self.score_mult, self.attn_weights)

            x = self._layer(x, i, B, attend, compact=True)
        return self.parts["head"](x, self._lin("head"))

    def frequencies(self, logits: torch.Tensor) -> torch.Tensor:
        return self.parts["frequencies"](logits, self.exp2)

    def entropy_bits(self, logits: torch.Tensor) -> torch.Tensor:
        """float32 entropies in bits: exact (integers below 2**24 over a power of two)."""
        return self.parts["entropy"](logits, self.exp2, self.log2).float() / (1 << im.ENTROPY_FRAC)

    def digest(self) -> str:
        h = hashlib.sha256(f"int{im.INT_FORMAT}".encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# -- quantization of a float model ----------------------------------------------------

def _fold(w: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W diag(gain) and W @ bias: the linear layer applied to LayerNorm's output
    (x - mean) / std * gain + bias. The products are single roundings; the bias sums
    are exact (math.fsum), so the result does not depend on a BLAS."""
    folded = w * gain[None, :]
    return folded, np.array([math.fsum(row) for row in (w * bias[None, :])])


def _linear_int(w: np.ndarray, bias: np.ndarray | None, in_frac: int, out_scale: float) -> dict[str, torch.Tensor]:
    """float64 W [N, K] (and bias [N]) -> int8 W^T [K, N], multipliers, shift, int bias.
    out = (acc * m) >> (s - e) gives W x * out_scale for x = q * 2**(e - in_frac)."""
    amax = np.abs(w).max(axis=1)
    step = np.where(amax > 0, amax / im.WEIGHT_MAX, 1.0)
    q = np.clip(np.rint(w / step[:, None]), -im.WEIGHT_MAX, im.WEIGHT_MAX).astype(np.int8)
    real = step * out_scale * 2.0 ** -in_frac  # per channel: the value of one acc unit
    shift = int(math.floor(math.log2((1 << 15) - 1) - math.log2(real.max())))
    mult = np.rint(real * 2.0 ** shift).astype(np.int64)
    b = np.zeros(len(w), np.int64) if bias is None else np.rint(bias * out_scale).astype(np.int64)
    return {"w": torch.from_numpy(np.ascontiguousarray(q.T)), "m": torch.from_numpy(mult),
            "s": torch.tensor(shift, dtype=torch.int64), "b": torch.from_numpy(b)}


def quantize(model: ByteLM) -> IntByteLM:
    """The integer form of a float model (deterministic: the same bits on any machine)."""
    sd = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
    one = float(1 << im.FRAC)
    out: dict[str, torch.Tensor] = {
        "wte": torch.from_numpy(np.rint(sd["wte.weight"] * one).astype(np.int64)),
        "wpe": torch.from_numpy(np.rint(sd["wpe.weight"] * one).astype(np.int64)),
        "exp2": torch.tensor(im.exp2_table(), dtype=torch.int64),
        "phi": torch.tensor(im.phi_table(), dtype=torch.int64),
        "log2": torch.tensor(im.log2_table(), dtype=torch.int64),
    }

    def put(name, parts):
        out.update({f"{name}_{k}": v for k, v in parts.items()})

    for i in range(model.cfg.n_layer):
        p = f"blocks.{i}."
        w, b = _fold(sd[p + "attn.c_attn.weight"], sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        put(f"b{i}_attn", _linear_int(w, b, im.FRAC, one))
        put(f"b{i}_proj", _linear_int(sd[p + "attn.c_proj.weight"], None, im.FRAC, one))
        w, b = _fold(sd[p + "mlp.c_fc.weight"], sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        put(f"b{i}_fc", _linear_int(w, b, im.FRAC, one))
        put(f"b{i}_mproj", _linear_int(sd[p + "mlp.c_proj.weight"], None, im.FRAC, one))
    w, b = _fold(sd["head.weight"], sd["ln_f.weight"], sd["ln_f.bias"])
    put("head", _linear_int(w, b, im.FRAC, float(Fraction(1 << im.LOG_FRAC)) * im.LOG2_E))
    return IntByteLM(model.cfg, out)


# -- checkpoints ----------------------------------------------------------------------

def stored_digest(ckpt: dict) -> str | None:
    """The digest of the checkpoint's stored integer form, if it holds one of this format."""
    stored = ckpt.get("int8")
    return stored.get("digest") if stored and stored.get("format") == im.INT_FORMAT else None


def from_checkpoint(ckpt: dict, model: ByteLM) -> IntByteLM:
    """The checkpoint's stored integer form where it holds one of this format, else the
    float model quantized now (`quantize` is deterministic: the same bits either way)."""
    if stored_digest(ckpt) is None:
        return quantize(model)
    q = IntByteLM(model.cfg, ckpt["int8"]["state"])
    if stored_digest(ckpt) != q.digest():
        raise ValueError("checkpoint's int8 form does not match its digest (corrupt or edited)")
    return q


def with_int_form(ckpt: dict, model: ByteLM) -> dict:
    """The checkpoint with the integer form of its model stored beside the float weights."""
    q = quantize(model)
    return {**ckpt, "int8": {"format": im.INT_FORMAT, "state": q.state_dict(), "digest": q.digest()}}


def fingerprint(float_fingerprint: str, digest: str) -> str:
    """What int8 results depend on: the float model they came from and the digest of its
    integer form."""
    return hashlib.sha256(f"{float_fingerprint}|int8-v{im.INT_FORMAT}|{digest}".encode()).hexdigest()[:16]


def main(argv=None) -> None:
    """python -m compressor_model.intmodel CKPT [--out PATH]: store the integer form."""
    ap = argparse.ArgumentParser(prog="python -m compressor_model.intmodel", description=main.__doc__)
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="where to write (default: over the checkpoint)")
    a = ap.parse_args(argv)
    ckpt = load_checkpoint(a.checkpoint)
    model = ByteLM.from_checkpoint(ckpt)
    out, path = with_int_form(ckpt, model), Path(a.out or a.checkpoint)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)
    print(json.dumps({"checkpoint": a.out or a.checkpoint, "int_format": im.INT_FORMAT, "digest": out["int8"]["digest"],
                      "fingerprint_int8": fingerprint(ckpt.get("fingerprint") or model.fingerprint(), out["int8"]["digest"])}))


if __name__ == "__main__":
    main()
