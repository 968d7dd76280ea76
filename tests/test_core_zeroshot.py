"""Zero-shot numbers checked against a direct open_clip computation, and layout independence.

The harness runs on a tiny random open_clip model whose weights come from a checkpoint file (so
the loader has to read them; seed-0 random weights would not match). The expectation is computed
here without evalbench: open_clip's own preprocess, tokenizer and encoders, the CLIP recipe for
the classifier, argmax.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES
from threadpoolctl import threadpool_limits

from evalbench.api import RunConfig, run
from evalbench.tasks.loader import TaskRegistry

TEMPLATES = ["a photo of {c}.", "a {c} square."]  # what conftest.write_task puts in every task
LAYOUTS = ["colours-folder", "colours-wds", "colours-hf"]


def _fresh_model(arch):
    import open_clip

    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(arch.stem, pretrained=None)
    return model.eval(), preprocess, open_clip.get_tokenizer(arch.stem)


@pytest.fixture(scope="module")
def weights(tiny_arch, tmp_path_factory):
    """Two checkpoints of the same non-seed-0 random weights: a bare state_dict, and the same
    tensors as a DDP-style ``{"state_dict": {"module." + k: v}}``."""
    import open_clip

    open_clip.add_model_config(tiny_arch)
    torch.manual_seed(1234)
    model, _, _ = open_clip.create_model_and_transforms(tiny_arch.stem, pretrained=None)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    plain, ddp = folder / "w.pt", folder / "w-ddp.pt"
    torch.save(state, plain)
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}, ddp)
    return state, plain, ddp


def direct_scores(tiny_arch, state, imagefolder_root):
    """(labels, cosine scores) of the imagefolder test split, computed with open_clip alone."""
    from PIL import Image

    model, preprocess, tokenizer = _fresh_model(tiny_arch)
    model.load_state_dict(state, strict=True)
    files = sorted((imagefolder_root / "test").glob("*/*.png"))
    labels = np.array([CLASSES.index(f.parent.name) for f in files])
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files])
        img = F.normalize(model.encode_image(pixels).float(), dim=-1)
        columns = []
        for name in CLASSES:
            prompts = [t.format(c=name) for t in TEMPLATES]
            emb = F.normalize(model.encode_text(tokenizer(prompts)).float(), dim=-1)
            columns.append(F.normalize(emb.mean(dim=0), dim=-1))
        classifier = torch.stack(columns, dim=1)
    return labels, (img @ classifier).numpy()


def _patch_everywhere(mp, module, name, replacement):
    """Replace ``module.name`` and every evalbench module's imported copy of it."""
    import sys

    original = getattr(module, name)
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("evalbench") and getattr(mod, name, None) is original:
            mp.setattr(mod, name, replacement)
    return original


def run_capturing(mp, models, tasks, registry, results_dir, cache_dir):
    """Run ``evaluate`` and capture, per zero-shot evaluation, the (labels, scores) it was scored
    on: the score matrix is the one ``zeroshot_scores`` returned, paired with the labels passed to
    ``classification_metrics`` along with it."""
    import evalbench.metrics
    import evalbench.zeroshot

    produced, captured = [], []

    def scores_spy(*args, **kwargs):
        out = real_scores(*args, **kwargs)
        produced.append(out)
        return out

    def metrics_spy(y, scores, *args, **kwargs):
        if any(scores is p for p in produced):
            captured.append((np.asarray(y).copy(), np.asarray(scores).copy()))
        return real_metrics(y, scores, *args, **kwargs)

    real_scores = _patch_everywhere(mp, evalbench.zeroshot, "zeroshot_scores", scores_spy)
    real_metrics = _patch_everywhere(mp, evalbench.metrics, "classification_metrics", metrics_spy)
    config = RunConfig(results_dir=results_dir, cache_dir=cache_dir, progress=False, device="cpu")
    try:
        with threadpool_limits(1):  # tiny lbfgs fits: BLAS threads only contend on small machines
            paths = run(models, tasks, config, registry)
    finally:
        mp.undo()
    assert len(captured) == len(tasks), "zero-shot scores were not captured once per task"
    records = [json.loads(p.read_text()) for p in paths]
    return records, captured


def paired_rows(labels_a, scores_a, labels_b, scores_b, atol=1e-5):
    """Match each row of A to its nearest row of B (images are distinct, so rows are); assert it
    is a one-to-one match within ``atol`` with the same label."""
    assert scores_a.shape == scores_b.shape
    dist = np.abs(scores_a[:, None, :] - scores_b[None, :, :]).max(axis=2)
    match = dist.argmin(axis=1)
    assert sorted(match) == list(range(len(scores_b))), "rows do not match one to one"
    assert dist[np.arange(len(match)), match].max() < atol
    np.testing.assert_array_equal(labels_a, labels_b[match])


@pytest.fixture(scope="module")
def layout_runs(tiny_arch, weights, task_dir, tmp_path_factory):
    """Both checkpoints on all three layouts, in one evaluate call each."""
    mp = pytest.MonkeyPatch()
    _, plain, ddp = weights
    registry = TaskRegistry([task_dir])
    out = {}
    for name, path in (("tiny", plain), ("tiny-ddp", ddp)):
        results = tmp_path_factory.mktemp(f"results-{name}")
        records, captured = run_capturing(
            mp, [f"{name}={tiny_arch}@{path}"], LAYOUTS, registry, results, tmp_path_factory.mktemp("cache")
        )
        assert [r["task"]["name"] for r in records] == LAYOUTS
        out[name] = dict(zip(LAYOUTS, zip(records, captured)))
    return out


def test_zeroshot_matches_direct_open_clip(layout_runs, tiny_arch, weights, imagefolder_root):
    state, _, _ = weights
    labels, scores = direct_scores(tiny_arch, state, imagefolder_root)
    record, (h_labels, h_scores) = layout_runs["tiny"]["colours-folder"]

    paired_rows(h_labels, h_scores, labels, scores)
    zs = record["results"]["zeroshot"]
    pred = scores.argmax(axis=1)
    assert zs["acc1"] == pytest.approx(np.mean(pred == labels))
    recall = [np.mean(pred[labels == k] == k) for k in range(len(CLASSES))]
    assert zs["mean_per_class_recall"] == pytest.approx(np.mean(recall))
    assert zs["main_score"] == pytest.approx(zs["acc1"])  # main_metric: acc1
    assert zs["n"] == len(labels)
    assert "acc5" not in zs  # three classes: top-5 is meaningless


def test_weights_really_come_from_the_checkpoint(layout_runs, tiny_arch, imagefolder_root):
    """Seed-0 random weights give other scores: the match above is not an accident of seeding."""
    model, _, _ = _fresh_model(tiny_arch)
    labels, seed0_scores = direct_scores(tiny_arch, model.state_dict(), imagefolder_root)
    _, (_, h_scores) = layout_runs["tiny"]["colours-folder"]
    assert not np.allclose(np.sort(seed0_scores, axis=0), np.sort(h_scores, axis=0), atol=1e-3)


@pytest.mark.parametrize("task", LAYOUTS)
def test_ddp_wrapped_state_dict_loads_identically(layout_runs, task):
    plain_record, (labels_a, scores_a) = layout_runs["tiny"][task]
    ddp_record, (labels_b, scores_b) = layout_runs["tiny-ddp"][task]
    np.testing.assert_array_equal(labels_a, labels_b)
    np.testing.assert_allclose(scores_a, scores_b, atol=1e-6)
    a, b = plain_record["results"], ddp_record["results"]
    for mode in ("zeroshot", "linear_probe"):
        for key in ("acc1", "mean_per_class_recall", "main_score", "n"):
            assert a[mode][key] == pytest.approx(b[mode][key]), (mode, key)
    assert a["linear_probe"]["C"] == pytest.approx(b["linear_probe"]["C"])


@pytest.mark.parametrize("task", ["colours-wds", "colours-hf"])
def test_layouts_give_identical_zeroshot(layout_runs, task):
    """Same images in three layouts: each image gets the same scores and the same task label
    (the HF copy's ClassLabel order differs, so this checks mapping labels by name)."""
    ref_record, (ref_labels, ref_scores) = layout_runs["tiny"]["colours-folder"]
    record, (labels, scores) = layout_runs["tiny"][task]
    paired_rows(labels, scores, ref_labels, ref_scores)
    for key in ("acc1", "mean_per_class_recall", "main_score", "n"):
        assert record["results"]["zeroshot"][key] == pytest.approx(ref_record["results"]["zeroshot"][key])


@pytest.mark.parametrize("task", ["colours-wds", "colours-hf"])
def test_layouts_give_identical_linear_probe(layout_runs, task):
    ref = layout_runs["tiny"]["colours-folder"][0]["results"]["linear_probe"]
    got = layout_runs["tiny"][task][0]["results"]["linear_probe"]
    for key in ("acc1", "mean_per_class_recall", "main_score", "n", "n_train", "n_val"):
        assert got[key] == pytest.approx(ref[key]), key
    # C itself is not compared: on these features the validation accuracy plateaus, and where
    # the plateau ends (predictions near uniform) lbfgs's result depends on the row order.


def test_linear_probe_matches_sklearn_on_direct_features(layout_runs, tiny_arch, weights, imagefolder_root):
    """The probe's test score equals scikit-learn fitted at the recorded C on train+val features
    computed by open_clip directly."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    state, _, _ = weights
    model, preprocess, _ = _fresh_model(tiny_arch)
    model.load_state_dict(state)

    def feats(split):
        files = sorted((imagefolder_root / split).glob("*/*.png"))
        with torch.no_grad():
            x = model.encode_image(torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files]))
        return x.float().numpy(), np.array([CLASSES.index(f.parent.name) for f in files])

    (xtr, ytr), (xva, yva), (xte, yte) = feats("train"), feats("val"), feats("test")
    probe = layout_runs["tiny"]["colours-folder"][0]["results"]["linear_probe"]
    clf = LogisticRegression(C=probe["C"], max_iter=1000).fit(np.concatenate([xtr, xva]), np.concatenate([ytr, yva]))
    assert probe["acc1"] == pytest.approx(clf.score(xte, yte))
    assert (probe["n_train"], probe["n_val"], probe["n"]) == (len(ytr), len(yva), len(yte))



def test_zeroshot_scores_in_chunks_equal_one_product():
    import numpy as np
    import torch
    import torch.nn.functional as F

    from evalbench.zeroshot import zeroshot_scores

    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    classifier = F.normalize(torch.randn(16, 5, generator=torch.Generator().manual_seed(0)), dim=0)
    whole = (F.normalize(torch.from_numpy(x), dim=-1) @ classifier).numpy()
    chunked = zeroshot_scores(x, classifier, chunk=64)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert (chunked.argmax(1) == whole.argmax(1)).all()
