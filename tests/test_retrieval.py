"""Retrieval: recall@k against a brute-force computation, ties included, and the three layouts."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import yaml

from evalbench.cli import main
from evalbench.records import read_record
from evalbench.retrieval import retrieval_metrics
from evalbench.tasks.loader import load_task_file


def brute_force(img: np.ndarray, txt: np.ndarray, text_image: list[int], k: int) -> tuple[float, float]:
    """Recall@k by sorting every query's candidates with a stable sort (ties: lower index first)."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sims = txt @ img.T
    t2i = [text_image[t] in list(np.argsort(-sims[t], kind="stable")[:k]) for t in range(len(txt))]
    i2t = []
    for i in range(len(img)):
        top = np.argsort(-sims[:, i], kind="stable")[:k]
        i2t.append(any(text_image[t] == i for t in top))
    return float(np.mean(t2i)), float(np.mean(i2t))


def test_recall_matches_brute_force_with_multi_captions_and_ties():
    rng = np.random.default_rng(0)
    # Integer-valued features on a coarse grid make exact ties frequent.
    img = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    img[img.sum(axis=1) == 0] += 1
    text_image = [i for i in range(30) for _ in range(1 + i % 3)]  # 1 to 3 captions per image
    txt = img[text_image] + rng.integers(-1, 2, size=(len(text_image), 4)).astype(np.float32)
    txt[np.linalg.norm(txt, axis=1) == 0] += 1
    got = retrieval_metrics(img, txt, np.asarray(text_image), chunk=7)  # chunking must not matter
    ties = 0
    for k in (1, 5, 10):
        t2i, i2t = brute_force(img, txt, text_image, k)
        assert got[f"image_retrieval_recall@{k}"] == pytest.approx(t2i)
        assert got[f"text_retrieval_recall@{k}"] == pytest.approx(i2t)
    sims = (txt / np.linalg.norm(txt, axis=1, keepdims=True)) @ (img / np.linalg.norm(img, axis=1, keepdims=True)).T
    ties = sum(len(np.unique(row)) < len(row) for row in sims)
    assert ties > 0, "the constructed case must contain ties"
    assert got["mean_recall@1"] == pytest.approx((got["image_retrieval_recall@1"] + got["text_retrieval_recall@1"]) / 2)


def test_perfect_and_reversed_retrieval():
    eye = np.eye(5, dtype=np.float32)
    perfect = retrieval_metrics(eye, eye, np.arange(5))
    assert perfect["mean_recall@1"] == 1.0
    shifted = retrieval_metrics(eye, np.roll(eye, 1, axis=0), np.arange(5))
    assert shifted["image_retrieval_recall@1"] == 0.0 and shifted["image_retrieval_recall@5"] == 1.0


CAPTIONS = {"red": ["a red square", "something red"], "green": ["a green square"], "blue": ["a blue square", "blue", "deep blue"]}


@pytest.fixture(scope="module")
def retrieval_layouts(tmp_path_factory):
    """The same six images with captions in the three layouts: folder+jsonl, webdataset, HF."""
    import datasets
    from conftest import make_image

    root = tmp_path_factory.mktemp("retrieval")
    rng = np.random.default_rng(5)
    samples = [(f"img{i}", colour, make_image(colour, rng)) for i, colour in enumerate(["red", "green", "blue"] * 2)]

    folder = root / "folder"
    (folder / "images").mkdir(parents=True)
    with open(folder / "captions.jsonl", "w") as f:
        for key, colour, image in samples:
            image.save(folder / "images" / f"{key}.png")
            f.write(json.dumps({"image": f"images/{key}.png", "captions": CAPTIONS[colour]}) + "\n")

    wds = root / "wds"
    (wds / "test").mkdir(parents=True)
    (wds / "dataset_type.txt").write_text("retrieval\n")
    (wds / "test" / "nshards.txt").write_text("1\n")
    with tarfile.open(wds / "test" / "0.tar", "w") as tar:
        for key, colour, image in samples:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            for ext, data in (("png", buf.getvalue()), ("txt", "\n".join(CAPTIONS[colour]).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    hf = root / "hf"
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})
    rows = {"image": [s[2] for s in samples], "caption": [CAPTIONS[s[1]] for s in samples]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(hf))

    tasks = root / "tasks"
    tasks.mkdir()
    sources = {
        "ret-folder": {"source": "captionfolder", "path": str(folder)},
        "ret-wds": {"source": "webdataset", "path": str(wds)},
        "ret-hf": {"source": "hf", "path": str(hf), "caption_column": "caption"},
    }
    for name, dataset in sources.items():
        task = {"name": name, "version": 1, "description": "colour captions", "type": "retrieval",
                "dataset": dataset, "splits": {"test": "test"}}
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump(task))
    return tasks


def test_three_layouts_give_the_same_recall(retrieval_layouts, tiny_arch, tmp_path):
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", "ret-folder,ret-wds,ret-hf", "--tasks-dir",
               str(retrieval_layouts), "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
               "--no-progress"])
    assert rc == 0
    results = [read_record(tmp_path / "r" / "tiny" / f"{n}.json")["results"] for n in ("ret-folder", "ret-wds", "ret-hf")]
    assert all(set(r) == {"retrieval"} for r in results)
    first = results[0]["retrieval"]
    assert first["n"] == 6 and first["n_texts"] == 12
    assert first["main_score"] == first["mean_recall@1"]
    for other in results[1:]:
        for key in ("mean_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@1"):
            assert other["retrieval"][key] == pytest.approx(first[key])


def test_retrieval_task_rejects_classnames(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "version": 1, "description": "x", "type": "retrieval",
                                    "dataset": {"source": "captionfolder", "path": "."}, "splits": {"test": "test"},
                                    "classnames": ["a", "b"]}))
    with pytest.raises(Exception, match="retrieval"):
        load_task_file(path)
