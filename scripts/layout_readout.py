"""How much of a caption's layout can be read from a world model's text encoder?

    python scripts/layout_readout.py --model <v1 folder> --out docs/layout_readout_v1.json
    python scripts/layout_readout.py --model world --out docs/layout_readout_v2.json
    python scripts/layout_readout.py --model world --train-text   # can the encoder learn it?

Trains only the layout read-out of unitune.embedded.layout (per position slot: colour and
shape there) on the text encoder's token states, with the encoder frozen, and reports the
read-out accuracy on occupied slots (both colour and shape right; chance ~2%) on 512 fixed
held-out captions. ``--train-text`` also trains the text encoder (lr 3e-4), text only: the
positive control, showing whether the encoder can carry layout at all.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from unitune.backbones import load_model
from unitune.embedded.layout import LayoutHead, layout_accuracy, layout_batch, layout_loss
from unitune.fileio import atomic_write_json


def readout(model: str, steps: int, train_text: bool, seed: int = 0) -> dict:
    bb = load_model(model, device="cpu", dtype=torch.float32)
    te, tok = bb.text_encoder, bb.tokenizer
    te.requires_grad_(train_text).train(train_text)
    torch.manual_seed(seed)
    head = LayoutHead(te.config.hidden_size)
    groups = [{"params": list(head.parameters()), "lr": 3e-3}]
    if train_text:
        groups.append({"params": list(te.parameters()), "lr": 3e-4})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    rng, t0, curve = np.random.default_rng(seed), time.time(), []
    held = layout_batch(tok, np.random.default_rng(12345), 512, "eval")
    for step in range(steps + 1):
        if step % 100 == 0:
            with torch.no_grad():
                acc = layout_accuracy(head(te(held[0])[0]), held[1], held[2])
            curve.append({"step": step, "heldout_acc": round(acc, 4)})
            print(json.dumps({**curve[-1], "sec": round(time.time() - t0, 1)}), flush=True)
        if step == steps:
            break
        ids, cols, shps = layout_batch(tok, rng, 64)
        with torch.set_grad_enabled(train_text):
            states = te(ids)[0]  # (64, 77, width)
        loss = layout_loss(head(states), cols, shps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {
        "model": model,
        "train_text": train_text,
        "steps": steps,
        "curve": curve,
        "final_heldout_acc": curve[-1]["heldout_acc"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="world")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--train-text", action="store_true")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    res = readout(a.model, a.steps, a.train_text)
    if a.out:
        atomic_write_json(a.out, res)


if __name__ == "__main__":
    main()
