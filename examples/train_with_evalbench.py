"""Fine-tune a CLIP with open_clip and score it with evalbench every few steps.

Runs offline in seconds on a CPU: the model is evalbench's tiny demo architecture starting from
its `demo-early` checkpoint, trained contrastively on freshly drawn pictures of coloured shapes
(captions "a photo of a red star."), and evaluated on the `shapes` and `colors` tasks.

    python examples/train_with_evalbench.py --steps 40 --eval-every 10 --results-dir results
    evalbench report --results-dir results            # one row per step: exp1@0, exp1@10, ...
    torchrun --nproc-per-node 2 examples/train_with_evalbench.py --steps 40   # two ranks (gloo on CPU)

For your own model, replace the three open_clip lines and the training data; the evaluator
part stays the same.
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import open_clip
import torch
import torch.distributed as dist
import torch.nn.functional as F

import evalbench
from evalbench.models import ASSETS
from evalbench.models.checkpoint import read_state_dict
from evalbench.sources.generated import COLORS, SHAPES, render_shape


def training_batch(rng: np.random.Generator, preprocess, tokenizer, size: int):
    """``size`` new pictures of random shapes and colours (not the evaluation images: another
    seed) with their captions, as model inputs."""
    shapes, colors = rng.choice(list(SHAPES), size), rng.choice(list(COLORS), size)
    images = torch.stack([preprocess(render_shape(rng, s, c)) for s, c in zip(shapes, colors)])
    texts = tokenizer([f"a photo of a {c} {s}." for s, c in zip(shapes, colors)])
    return images, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--run", default="exp1")
    parser.add_argument("--tasks", default="shapes,colors")
    parser.add_argument("--limit", type=int, default=None, help="evaluate a seeded subset of each test split")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")  # "nccl" on GPUs, with each rank on its own device
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)

    # The model, tokenizer and preprocess, as open_clip gives them.
    open_clip.add_model_config(ASSETS / "demo-clip.json")
    model, train_preprocess, preprocess = open_clip.create_model_and_transforms("demo-clip")
    model.load_state_dict(read_state_dict(ASSETS / "demo-early.safetensors"))
    tokenizer = open_clip.get_tokenizer("demo-clip")
    trained = torch.nn.parallel.DistributedDataParallel(model) if distributed else model

    # Built once: the tasks' images are decoded and preprocessed here, not at each evaluation.
    evaluator = evalbench.Evaluator(args.tasks.split(","), preprocess=preprocess, tokenizer=tokenizer,
                                    run=args.run, results_dir=args.results_dir, batch_size=256,
                                    storage="uint8", limit=args.limit, overwrite=True,
                                    progress=False)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    rng = np.random.default_rng(1000 + rank)
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            scores = evaluator(trained, step=step)  # every rank calls; every rank gets the scores
            if rank == 0:
                print(f"step {step:4d}  " + "  ".join(f"{t} {m['main_score']:.3f}" for t, m in scores.items()),
                      flush=True)
        if step == args.steps:
            break
        trained.train()
        images, texts = training_batch(rng, train_preprocess, tokenizer, args.batch_size)
        image_features, text_features, logit_scale = trained(images, texts)[:3]
        logits = logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        labels = torch.arange(len(logits))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
