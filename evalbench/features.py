"""Image feature extraction: one pass over each split, shared by every mode."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from evalbench.models.base import ModelAdapter


class Preprocessed(Dataset):
    """Applies the model's preprocessing in DataLoader workers; yields tensors."""

    def __init__(self, dataset: Dataset, preprocess):
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.preprocess(self.dataset[i])


@torch.inference_mode()
def extract_features(
    model: ModelAdapter,
    dataset: Dataset,
    batch_size: int = 64,
    workers: int = 0,
    desc: str = "features",
    progress: bool = True,
) -> np.ndarray:
    """Encode every image of ``dataset`` (which yields PIL images); return float32 (n, dim)."""
    loader = DataLoader(
        Preprocessed(dataset, model.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=model.device.type == "cuda",
        persistent_workers=False,
    )
    feats = []
    with tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for pixels in loader:
            feats.append(model.encode_images(pixels).cpu().numpy().astype(np.float32))
            bar.update(len(pixels))
    return np.concatenate(feats)
