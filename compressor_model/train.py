"""Train the byte-level compressor model: `python -m compressor_model.train --data URL ...`.

Reads JSONL / JSONL.zst / Parquet shards (local or any fsspec URL), trains with AdamW
and a warm-up + cosine schedule (bf16 autocast where bf16 is native and faster: on CUDA
and on CPUs with bf16 units, see numerics.py; fp32 elsewhere), checkpoints every
`--ckpt-every` steps and resumes from the last checkpoint after a kill: batches are
drawn from a generator seeded by (seed, step), so a resumed run sees exactly the data
the uninterrupted run would have seen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .corpus import Document, ReaderConfig, list_shards, read_shard
from .intmodel import with_int_form
from .model import BOS, CONFIGS, ByteLM, ModelConfig, load_checkpoint
from .numerics import Precision, pick_device, resolve_float
from .numerics import autocast as numerics_autocast


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # shard files or directories/prefixes
    heldout: list[str] = field(default_factory=list)  # held-out shards for bits/byte
    text_field: str = "content"
    model: str = "small"  # a name from compressor_model.model.CONFIGS
    out: str = "runs/compressor"
    steps: int = 3000
    batch_size: int = 32
    seq_len: int = 0  # 0: the model's block_size
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 200
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: Precision = Precision.AUTO  # auto: bf16 on CUDA and CPUs with native bf16, else fp32
    eval_every: int = 500
    eval_batches: int = 16
    ckpt_every: int = 100
    seed: int = 1337
    device: str = "auto"  # auto: cuda when present
    threads: int = 0  # torch CPU threads, 0: torch's default
    stop_after: int = 0  # leave after this many steps in this invocation (time-limited jobs); rerun to go on
    max_seconds: float = 0.0  # training time budget: the model is written when it runs out (0: none)


class Corpus:
    """All documents of some shards as one byte array; crops never cross documents."""

    def __init__(self, urls: list[str], text_field: str):
        docs, rejects = [], 0
        for url in urls:
            for shard in list_shards(url):
                for item in read_shard(shard, ReaderConfig(text_field=text_field)):
                    if isinstance(item, Document) and item.data:
                        docs.append(item.data)
                    else:
                        rejects += 1
        if not docs:
            raise ValueError(f"no documents in {urls}")
        self.data = np.frombuffer(b"".join(docs), dtype=np.uint8)
        self.ends = np.cumsum([len(d) for d in docs])
        self.n_docs, self.rejects = len(docs), rejects

    def batch(self, gen: np.random.Generator, batch: int, seq_len: int):
        """x: [B, T] = BOS + bytes, y: [B, T] the next bytes (-1 past a document's end)."""
        x = np.full((batch, seq_len), BOS, dtype=np.int64)
        y = np.full((batch, seq_len), -1, dtype=np.int64)
        starts = gen.integers(0, len(self.data), batch)
        for i, s in enumerate(starts):
            end = min(self.ends[np.searchsorted(self.ends, s, side="right")], s + seq_len)
            chunk = self.data[s:end]
            y[i, : len(chunk)] = chunk
            x[i, 1 : len(chunk)] = chunk[:-1]
        return torch.from_numpy(x), torch.from_numpy(y)


def config_dict(cfg: TrainConfig) -> dict:
    """The config as plain values (it goes into JSON and into weights_only checkpoints)."""
    return {**asdict(cfg), "precision": cfg.precision.value}


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def bits_per_byte(model: ByteLM, corpus: Corpus, cfg: TrainConfig, seq_len: int, device, autocast) -> float:
    """Mean cross-entropy in bits over fixed held-out crops (same crops every call)."""
    model.eval()
    gen = np.random.default_rng(12345)
    total, count = 0.0, 0
    for _ in range(cfg.eval_batches):
        x, y = corpus.batch(gen, cfg.batch_size, seq_len)
        with autocast():
            logits, _ = model(x.to(device))
        nll = torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.shape[-1]), y.to(device).view(-1), ignore_index=-1, reduction="sum"
        )
        total += nll.item()
        count += int((y >= 0).sum())
    model.train()
    return total / count / math.log(2)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig) -> dict:
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_float(cfg.precision, device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mcfg: ModelConfig = CONFIGS[cfg.model]
    seq_len = cfg.seq_len or mcfg.block_size
    torch.manual_seed(cfg.seed)
    model = ByteLM(mcfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    state_path = out / "state.pt"
    step, elapsed = 0, 0.0
    if state_path.exists():  # resume after a kill
        st = load_checkpoint(state_path, map_location=device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        step, elapsed = st["step"], st["elapsed"]
        print(f"resumed from {state_path} at step {step}")

    train_data = Corpus(cfg.data, cfg.text_field)
    heldout = Corpus(cfg.heldout, cfg.text_field) if cfg.heldout else None
    autocast = lambda: numerics_autocast(device, precision)  # noqa: E731
    (out / "config.json").write_text(json.dumps(config_dict(cfg), indent=1))
    log = (out / "train_log.jsonl").open("a")

    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step")
    t0 = time.time() - elapsed
    stop_at = min(cfg.steps, step + cfg.stop_after) if cfg.stop_after else cfg.steps
    out_of_time = False
    while step < stop_at and not out_of_time:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = train_data.batch(np.random.default_rng([cfg.seed, step]), cfg.batch_size, seq_len)
        with autocast():
            _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        bpb = loss.item() / math.log(2)
        bar.set_postfix(loss=f"{loss.item():.3f}", bpb=f"{bpb:.3f}", lr=f"{lr_at(step, cfg):.1e}")
        bar.update(1)
        rec = {"step": step, "loss": loss.item(), "bits_per_byte": bpb, "time": time.time() - t0}
        if heldout and (step % cfg.eval_every == 0 or step == cfg.steps):
            rec["heldout_bits_per_byte"] = bits_per_byte(model, heldout, cfg, seq_len, device, autocast)
            bar.write(f"step {step}: held-out {rec['heldout_bits_per_byte']:.4f} bits/byte")
        log.write(json.dumps(rec) + "\n")
        out_of_time = bool(cfg.max_seconds) and time.time() - t0 >= cfg.max_seconds
        if step % cfg.ckpt_every == 0 or step == stop_at or out_of_time:
            log.flush()
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                         "elapsed": time.time() - t0, "config": config_dict(cfg)}, state_path)
    bar.close()
    if step < cfg.steps and not out_of_time:
        print(f"stopped at step {step} of {cfg.steps}; run the same command again to continue")
        return {"steps": step, "stopped": True}
    wall = time.time() - t0
    result = {
        "steps": step,
        "wall_time_s": round(wall, 1),
        "train_docs": train_data.n_docs,
        "train_bytes": int(len(train_data.data)),
        "positions_seen": step * cfg.batch_size * seq_len,
        "positions_per_s": round(step * cfg.batch_size * seq_len / max(wall, 1e-9), 1),
        "stopped_by_time": out_of_time,
        "params": model.num_params(),
        "precision": precision.value,
        "device": str(device),
    }
    if heldout:
        result["heldout_docs"] = heldout.n_docs
        result["heldout_bytes"] = int(len(heldout.data))
        result["heldout_bits_per_byte"] = round(bits_per_byte(model, heldout, cfg, seq_len, device, autocast), 4)
    model = model.cpu().float()
    save_atomic(with_int_form(model.to_checkpoint(training=result, train_config=config_dict(cfg)), model), out / "model.pt")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


def parse_args(argv=None) -> TrainConfig:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("data", "heldout"):
            ap.add_argument(flag, nargs="+", default=[], required=f.name == "data")
        elif f.name == "precision":
            ap.add_argument(flag, default=f.default.value, choices=[p.value for p in Precision],
                            help="auto: bf16 where native and faster, else fp32")
        elif f.type in (bool, "bool"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            ap.add_argument(flag, type=kind, default=f.default,
                            choices=sorted(CONFIGS) if f.name == "model" else None)
    args = vars(ap.parse_args(argv))
    return TrainConfig(**{**args, "precision": Precision(args["precision"])})


def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
