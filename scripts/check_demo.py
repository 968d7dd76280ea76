"""Score demo checkpoints on the offline tasks directly with open_clip, independent of the harness.

    .venv/bin/python scripts/check_demo.py evalbench/assets/demo-early.safetensors evalbench/assets/demo-final.safetensors

Zero-shot acc1 on each task's test split (class embedding: mean of the L2-normalised template
embeddings, renormalised; cosine logits), and a linear probe on digits (logistic regression on
L2-normalised image features, lbfgs, max_iter 1000, C from a log grid chosen on val, refit on
train+val, scored on test).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import open_clip
import torch
import yaml
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression

from evalbench.sources.generated import GeneratedConfig, GeneratedSource

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["digits", "shapes", "colors"]
PROBE_TASK = "digits"


def load_model(path: Path):
    open_clip.add_model_config(ROOT / "evalbench" / "assets" / "demo-clip.json")
    model, _, preprocess = open_clip.create_model_and_transforms("demo-clip")
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval(), preprocess, open_clip.get_tokenizer("demo-clip")


@torch.no_grad()
def image_features(model, preprocess, split) -> tuple[np.ndarray, list[str]]:
    data = split.dataset
    feats = []
    for start in range(0, len(data), 256):
        batch = torch.stack([preprocess(data[i][0]) for i in range(start, min(start + 256, len(data)))])
        feats.append(torch.nn.functional.normalize(model.encode_image(batch), dim=-1))
    names = [split.label_names[data[i][1]] for i in range(len(data))]
    return torch.cat(feats).numpy(), names


@torch.no_grad()
def zero_shot_weights(model, tokenizer, classnames: list[str], templates: list[str]) -> np.ndarray:
    weights = []
    for c in classnames:
        emb = torch.nn.functional.normalize(model.encode_text(tokenizer([t.format(c=c) for t in templates])), dim=-1)
        weights.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
    return torch.stack(weights).numpy()


def probe_accuracy(train, val, test) -> tuple[float, float]:
    """(test acc1, chosen C) of logistic regression with C tuned on val, refit on train+val."""
    grid = np.logspace(-1, 3, 5)
    scores = [LogisticRegression(C=c, max_iter=1000).fit(*train).score(*val) for c in grid]
    best = float(grid[int(np.argmax(scores))])
    clf = LogisticRegression(C=best, max_iter=1000).fit(np.concatenate([train[0], val[0]]), train[1] + val[1])
    return float(clf.score(*test)), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--no-probe", action="store_true", help="zero-shot only (faster)")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache")
    args = parser.parse_args()
    torch.set_num_threads(2)

    specs = {t: yaml.safe_load((ROOT / "tasks" / "offline" / f"{t}.yaml").read_text()) for t in TASKS}
    sources = {t: GeneratedSource(GeneratedConfig(**s["dataset"]), ROOT / "tasks" / "offline", args.cache_dir) for t, s in specs.items()}
    for path in args.checkpoints:
        model, preprocess, tokenizer = load_model(path)
        row = {}
        for task, spec in specs.items():
            feats, names = image_features(model, preprocess, sources[task].load_split(spec["splits"]["test"]))
            classnames = spec["classnames"]
            w = zero_shot_weights(model, tokenizer, classnames, spec["templates"])
            pred = (feats @ w.T).argmax(1)
            row[f"{task} zero-shot"] = float(np.mean([classnames[p] == n for p, n in zip(pred, names)]))
            if task == PROBE_TASK and not args.no_probe:
                parts = {s: image_features(model, preprocess, sources[task].load_split(spec["splits"][s])) for s in ("train", "val")}
                acc, c = probe_accuracy(parts["train"], parts["val"], (feats, names))
                row[f"{task} probe (C={c:g})"] = acc
        print(path.name, "  ".join(f"{k}: {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
