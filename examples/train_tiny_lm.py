"""Train a tiny LM for a few steps on proxycomp output, through the trainer package.

    python examples/train_tiny_lm.py --data out/demo/output/shards --steps 20

It is the whole loop a trainer needs, with nothing of the service installed
(`pip install ./trainer`): ProxyLoader (the paper's EvaByte-compatible vocabulary,
mixing raw and compressed views, packing, segment ids, positions), a model whose
attention stays inside segments, targets that never cross a segment, and a resumable
data state saved with the model.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from proxytrain import DatasetConfig, MixConfig, ProxyLoader, attention_mask, labels


class TinyLM(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, d: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(seq_len, d)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True) for _ in range(layers)
        )
        self.head = nn.Linear(d, vocab_size)

    def forward(self, tokens, doc_ids, position_ids):
        x = self.tok(tokens) + self.pos(position_ids)
        allowed = attention_mask(doc_ids)  # causal within a segment; padding sees itself only
        mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.blocks[0].self_attn.num_heads, dim=0)
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.head(x)


def main(argv=None) -> list[float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="proxycomp output shards (a directory or URL)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args(argv)

    torch.manual_seed(0)
    cfg = DatasetConfig(urls=[a.data], seq_len=a.seq_len, mix=MixConfig(warmup_steps=max(1, a.steps // 2)))
    loader = ProxyLoader(cfg, batch_size=a.batch_size, num_workers=a.workers)
    model = TinyLM(loader.vocab.size, a.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step, batch in zip(range(a.steps), loader):
        tokens, doc_ids = batch["tokens"], batch["doc_ids"]
        logits = model(tokens, doc_ids, batch["position_ids"])
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels(tokens, doc_ids).view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        cmp_share = (tokens == loader.vocab.cmp_open).sum().item() / max(1, (doc_ids >= 0).sum().item())
        print(f"step {step:3d}  loss {loss.item():.3f}  <cmp> per token {cmp_share:.4f}  data step {int(batch['step'][0])}")
    state = {"model": model.state_dict(), "data": loader.state_dict()}  # resume: loader.load_state_dict(state["data"])
    print(f"done: {len(losses)} steps, data state {state['data']}")
    return losses


if __name__ == "__main__":
    main()
