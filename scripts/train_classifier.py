"""Train the evaluation classifier (task "classifier") on Fashion-MNIST and write it as an argen model file.

The shipped asset (preset "fmnist", 110,922 parameters, 89.6% test accuracy) was made with
    python scripts/train_classifier.py --epochs 5 --out argen/assets/classifier_fmnist
(2,340 steps of batch 128; about 2 minutes on 2 idle CPU cores, 12 on a heavily shared machine).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch.utils.data import DataLoader

from argen.config import DataConfig, TrainConfig
from argen.eval.classifier import class_accuracy
from argen.models.pretrained import save_pretrained
from argen.training.tasks import get_task


def test_accuracy(model: torch.nn.Module, data_cfg: DataConfig) -> float:
    """Accuracy on the Fashion-MNIST test split, through the uint8 path that evaluation uses."""
    task = get_task("classifier")
    ds = task.build_dataset(TrainConfig(task="classifier", data=data_cfg))
    imgs, labels = zip(*(ds[i] for i in range(len(ds))), strict=True)
    u8 = ((torch.stack(imgs) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return class_accuracy(model, u8, torch.tensor(labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="fmnist")
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="argen/assets/classifier_fmnist")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    task = get_task("classifier")
    cfg = TrainConfig(task="classifier", model={"preset": args.preset}, data=DataConfig(split="train"))
    model = task.build_model(cfg.model)
    loader = DataLoader(
        task.build_dataset(cfg),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    total = int(args.epochs * len(loader))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1)))
    )
    step, t0 = 0, time.time()
    model.train()
    while step < total:
        for batch in loader:
            loss, metrics = task.loss(model, batch, {"label_smoothing": 0.05})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0 or step == total:
                print(
                    f"step {step}/{total} loss {metrics['loss']:.4f} acc {metrics['acc']:.3f} "
                    f"{time.time() - t0:.0f}s",
                    flush=True,
                )
            if step >= total:
                break
    model.eval()
    acc = test_accuracy(model, DataConfig(split="test"))
    path = save_pretrained(model, args.out, dtype=torch.float32)
    print(
        json.dumps(
            {
                "test_accuracy": acc,
                "steps": total,
                "train_seconds": round(time.time() - t0, 1),
                "params": sum(p.numel() for p in model.parameters()),
                "path": str(path),
            }
        )
    )


if __name__ == "__main__":
    main()
