"""Byte-level decoder-only Transformer: the compressor model.

One file in the manner of nanoGPT's model.py. Tokens are the 256 byte values plus a
begin-of-context symbol BOS = 256; the head predicts only the 256 bytes. Two ways in:

* `forward(idx)`: a whole [B, T] block, for training and segmentation;
* `step(tokens, pos, cache)`: one new token per lane with a KV cache, for coding and
  decoding equal-information windows, where every lane (segment) is at its own
  position and resets to BOS at each window.

Both run the same layers with the same shapes for a given batch, and nothing in one
row's computation reads another row, so a row's outputs do not depend on what shares
its batch when the batch shape is fixed (the engine pads to fixed shapes).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

BOS = 256
VOCAB_IN = 257  # bytes + BOS
VOCAB_OUT = 256  # the model never predicts BOS


@dataclass(frozen=True)
class ModelConfig:
    block_size: int = 512  # longest context, BOS included
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")


# Named configurations: the paper's 40M model and one that is practical on a CPU.
CONFIGS = {
    "small": ModelConfig(block_size=256, n_layer=4, n_head=4, n_embd=256),
    "paper40m": ModelConfig(block_size=1024, n_layer=12, n_head=8, n_embd=512),
    "tiny": ModelConfig(block_size=128, n_layer=2, n_head=2, n_embd=64),  # tests only
}


class KVCache:
    """Per-lane keys and values: [n_layer, B, n_head, T, head_dim] each."""

    def __init__(self, cfg: ModelConfig, lanes: int, length: int, device, dtype):
        shape = (cfg.n_layer, lanes, cfg.n_head, length, cfg.n_embd // cfg.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slots = torch.arange(length, device=device)

    @property
    def length(self) -> int:
        return self.k.shape[3]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def _heads(self, x):  # [B, T, C] -> 3 x [B, nh, T, hd]
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        return [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]

    def forward(self, x):  # [B, T, C]
        B, T, C = x.shape
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def step(self, x, layer: int, lanes, pos, visible, cache: KVCache):
        # x [B, 1, C]; lanes, pos [B]; visible [B, 1, 1, T]: slots each lane may read
        B, _, C = x.shape
        q, k, v = self._heads(x)  # [B, nh, 1, hd]
        ck, cv = cache.k[layer], cache.v[layer]
        ck[lanes, :, pos] = k[:, :, 0].to(ck.dtype)
        cv[lanes, :, pos] = v[:, :, 0].to(cv.dtype)
        y = F.scaled_dot_product_attention(q, ck.to(q.dtype), cv.to(q.dtype), attn_mask=visible)
        return self.c_proj(y.transpose(1, 2).reshape(B, 1, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(self, x, layer, lanes, pos, visible, cache):
        x = x + self.attn.step(self.ln_1(x), layer, lanes, pos, visible, cache)
        return x + self.mlp(self.ln_2(x))


class ByteLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(VOCAB_IN, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, VOCAB_OUT, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):  # idx [B, T] in 0..256
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # [B, T, C]
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # [B, T, 256]
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, VOCAB_OUT), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def new_cache(self, lanes: int, length: int, dtype=None) -> KVCache:
        """A cache whose slot 0 holds BOS for every lane (the start of every window)."""
        if length > self.cfg.block_size:
            raise ValueError(f"cache of {length} exceeds block_size {self.cfg.block_size}")
        p = next(self.parameters())
        cache = KVCache(self.cfg, lanes, length, p.device, dtype or p.dtype)
        bos = torch.full((lanes,), BOS, device=p.device)
        self.step(bos, torch.zeros(lanes, dtype=torch.long, device=p.device), cache)
        return cache

    def step(self, tokens, pos, cache: KVCache):  # tokens [B], pos [B] -> logits [B, 256]
        x = (self.wte(tokens) + self.wpe(pos))[:, None, :]  # [B, 1, C]
        lanes = torch.arange(x.shape[0], device=x.device)
        visible = (cache.slots[None, :] <= pos[:, None])[:, None, None, :]  # [B, 1, 1, T]
        for layer, block in enumerate(self.blocks):
            x = block.step(x, layer, lanes, pos, visible, cache)
        return self.head(self.ln_f(x))[:, 0]

    # -- checkpoints ------------------------------------------------------------------

    def fingerprint(self) -> str:
        """Hash of the config and the exact weights: keys caches, stamps outputs."""
        h = hashlib.sha256(json.dumps(asdict(self.cfg), sort_keys=True).encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def to_checkpoint(self, **extra) -> dict:
        return {"config": asdict(self.cfg), "model": self.state_dict(), "fingerprint": self.fingerprint(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "ByteLM":
        model = cls(ModelConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        if ckpt.get("fingerprint") and ckpt["fingerprint"] != model.fingerprint():
            raise ValueError("checkpoint fingerprint does not match its weights (corrupt or edited)")
        return model


def load_checkpoint(path_or_bytes, map_location="cpu") -> dict:
    """torch.load with weights_only=True: an untrusted file cannot run code."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    return torch.load(src, map_location=map_location, weights_only=True)
