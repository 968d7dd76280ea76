"""Metrics against scikit-learn or hand-computed cases; class subsets; multi-label tasks; leaks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from evalbench.cli import main
from evalbench.metrics import acc1, classification_metrics, map_11pt, mean_per_class_recall, roc_auc
from evalbench.records import read_record, unpack_predictions

from conftest import CLASSES, colour_samples, write_task


def test_map_11pt_hand_computed():
    # One class, ranking: pos, neg, pos, neg, pos -> precision at recall 1/3, 2/3, 1 is 1, 2/3, 3/5.
    y = np.array([[1], [0], [1], [0], [1]])
    s = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]])
    # Interpolated precision for recall >= t: t=0..0.3 -> 1; t=0.4..0.6 -> 2/3; t=0.7..1.0 -> 3/5.
    expected = (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11
    assert map_11pt(y, s) == pytest.approx(expected)
    # A class without positives is left out of the mean, not counted as zero.
    y2 = np.hstack([y, np.zeros((5, 1), dtype=int)])
    assert map_11pt(y2, np.hstack([s, s])) == pytest.approx(expected)


def test_map_11pt_top_ranked_negative_is_not_rewarded():
    """VOC 2007 devkit definition: with a negative ranked first, no rank has precision 1, so the
    t = 0 term is the best precision anywhere (2/3), not 1 (scikit-learn's curve ends with the
    point recall 0, precision 1, which gave (1 + 6 * 2/3 + 4 * 3/5) / 11 = 0.6727 here)."""
    # Ranked by score: neg, pos, pos, neg, pos. Given out of order, to check the ranking.
    y = np.array([[1], [0], [1], [0], [1]])
    s = np.array([[0.8], [0.9], [0.7], [0.6], [0.5]])
    # rank:       1    2    3    4    5
    # precision:  0/1  1/2  2/3  2/4  3/5
    # recall:     0    1/3  2/3  2/3  1
    # t = 0 ........ max over ranks 1-5 = 2/3   (1 level)
    # t = 0.1..0.3 . max over ranks 2-5 = 2/3   (3 levels)
    # t = 0.4..0.6 . max over ranks 3-5 = 2/3   (3 levels)
    # t = 0.7..1.0 . rank 5 only       = 3/5   (4 levels)
    expected = (7 * (2 / 3) + 4 * (3 / 5)) / 11  # = 106/165 = 0.64242...
    assert map_11pt(y, s) == pytest.approx(106 / 165)
    assert map_11pt(y, s) == pytest.approx(expected)
    # Per class, then the mean: a second class ranked perfectly (AP 1) averages to (106/165 + 1) / 2.
    y2 = np.hstack([y, y])
    s2 = np.hstack([s, y.astype(float)])
    assert map_11pt(y2, s2) == pytest.approx((106 / 165 + 1) / 2)


def test_map_11pt_counts_a_recall_level_reached_exactly():
    """10 positives: 3 on top, then 3 negatives, then 7 positives. Recall reaches exactly 0.3 at
    rank 3 (precision 1), so t = 0.3 counts precision 1; ranks 7..13 have precision 4/7 .. 10/13,
    increasing, so every t >= 0.4 gets 10/13."""
    y = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])[:, None]
    s = -np.arange(13, dtype=float)[:, None]  # already in rank order
    expected = (4 * 1 + 7 * (10 / 13)) / 11  # t = 0, 0.1, 0.2, 0.3 -> 1; t = 0.4 .. 1.0 -> 10/13
    assert map_11pt(y, s) == pytest.approx(expected)


def test_single_label_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 300)
    scores = rng.normal(size=(300, 7)) + 1.5 * np.eye(7)[y]
    assert acc1(y, scores) == pytest.approx(np.mean(scores.argmax(1) == y))
    assert mean_per_class_recall(y, scores) == pytest.approx(recall_score(y, scores.argmax(1), average="macro"))
    y2 = rng.integers(0, 2, 200)
    s2 = rng.normal(size=(200, 2)) + np.eye(2)[y2]
    assert roc_auc(y2, s2) == pytest.approx(roc_auc_score(y2, s2[:, 1] - s2[:, 0]))
    out = classification_metrics(y2, s2, "roc_auc")
    assert out["main_score"] == out["roc_auc"] and "acc5" not in out


def _colour_task(tmp_path, imagefolder_root, **fields):
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    return write_task(folder, fields.pop("name", "subset"), {"source": "imagefolder", "path": str(imagefolder_root)},
                      **fields)


def test_class_subset_restricts_logits(tmp_path, imagefolder_root, tiny_arch):
    """Five published classes, data and subset of three: the scores have three columns, and equal
    those of a task that lists only the three classes."""
    full = ["yellow", *CLASSES, "purple"]
    subset = _colour_task(tmp_path, imagefolder_root, name="subset", classnames=full, class_subset=[1, 2, 3])
    plain = _colour_task(tmp_path, imagefolder_root, name="plain")
    args = ["--model", f"tiny={tiny_arch}", "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress"]
    assert main(["run", "--tasks", f"{subset},{plain}", *args]) == 0
    a = read_record(tmp_path / "r" / "tiny" / "subset.json")["results"]
    b = read_record(tmp_path / "r" / "tiny" / "plain.json")["results"]
    pred_a, _ = unpack_predictions(a["zeroshot"]["per_sample"])
    pred_b, _ = unpack_predictions(b["zeroshot"]["per_sample"])
    assert pred_a.max() < 3 and (pred_a == pred_b).all()
    assert a["zeroshot"]["acc1"] == b["zeroshot"]["acc1"]
    assert a["linear_probe"]["acc1"] == b["linear_probe"]["acc1"]


def test_data_outside_the_subset_is_an_error(tmp_path, imagefolder_root, tiny_arch, capsys):
    full = ["yellow", *CLASSES]
    task = _colour_task(tmp_path, imagefolder_root, classnames=full, class_subset=[0, 1, 2])
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--results-dir", str(tmp_path / "r"),
               "--no-cache", "--no-progress", "--mode", "zeroshot"])
    assert rc == 2 and "class_subset" in capsys.readouterr().err


def test_duplicate_names_match_by_position_or_not_at_all(tmp_path, imagefolder_root, tiny_arch, capsys):
    """ImageNet publishes two classes named "missile": a repeated name can only be matched when the
    data's names equal the task's in order; by name it is ambiguous, and an error says so."""
    args = ["--model", f"tiny={tiny_arch}", "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress",
            "--mode", "zeroshot"]
    # The folder's classes sorted: blue, green, red.
    in_order = _colour_task(tmp_path, imagefolder_root, name="in-order", classnames=["blue", "green", "red", "red"],
                            class_subset=[0, 1, 2])
    assert main(["run", "--tasks", str(in_order), *args]) == 0
    other_order = _colour_task(tmp_path, imagefolder_root, name="other-order",
                               classnames=["red", "green", "blue", "red"], class_subset=[0, 1, 2])
    assert main(["run", "--tasks", str(other_order), *args]) == 2
    assert "'red' names more than one class" in capsys.readouterr().err


def test_multilabel_task_runs_zeroshot_and_one_vs_rest_probe(tmp_path, tiny_arch):
    """An HF dataset whose label column is a list of ClassLabel: zero-shot and the probe report
    11-point mAP, and the zero-shot value equals a direct computation from the scores."""
    import datasets

    names = ["red", "green", "blue"]
    features = datasets.Features({"image": datasets.Image(), "labels": datasets.Sequence(datasets.ClassLabel(names=names))})
    splits = {}
    for split in ("train", "test"):
        rows = {"image": [], "labels": []}
        for i, (_, name, image) in enumerate(colour_samples(split)):
            rows["image"].append(image)
            rows["labels"].append(sorted({names.index(name), (names.index(name) + 1) % 3} if i % 2 else {names.index(name)}))
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    root = tmp_path / "ml"
    datasets.DatasetDict(splits).save_to_disk(str(root))
    folder = tmp_path / "tasks"
    folder.mkdir()
    write_task(folder, "multi", {"source": "hf", "path": str(root), "label_column": "labels"}, type="multilabel",
               main_metric="map_11pt", splits={"train": "train", "test": "test"})

    import evalbench.runners as runners

    seen = {}
    original = runners.classification_metrics
    runners.classification_metrics = lambda y, s, m, *rest: seen.setdefault("zs", (y, s)) and original(y, s, m, *rest)
    try:
        rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks-dir", str(folder), "--tasks", "multi",
                   "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress"])
    finally:
        runners.classification_metrics = original
    assert rc == 0
    results = read_record(tmp_path / "r" / "tiny" / "multi.json")["results"]
    y, s = seen["zs"]
    assert y.shape == (12, 3) and y.sum() == 12 + 6
    assert results["zeroshot"]["main_score"] == pytest.approx(map_11pt(y, s))
    assert "map_11pt" in results["linear_probe"] and "acc1" not in results["linear_probe"]


def test_test_split_shared_with_train_is_a_leak(tmp_path, imagefolder_root, tiny_arch, capsys):
    task = _colour_task(tmp_path, imagefolder_root, splits={"train": "test", "test": "test"})
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--results-dir", str(tmp_path / "r"),
               "--no-cache", "--no-progress"])
    assert rc == 2 and "shares images with splits.test" in capsys.readouterr().err


def test_builtin_tasks_never_test_on_training_data():
    """Every built-in task tests on a split of its own: test is never the train or val split, and
    a val fraction is carved out of train only."""
    from evalbench.tasks.loader import TaskRegistry

    registry = TaskRegistry()
    for name in registry.names():
        splits = registry.get(name).spec.splits
        assert splits.test not in {splits.train, splits.val}, name


# label_match: index with data that ships its own class names.


def _index_task(tmp_path, dataset: dict, classnames: list[str], name: str = "by-index", **fields):
    from evalbench.tasks.loader import TaskRegistry

    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    path = write_task(folder, name, dataset, classnames=classnames, label_match="index", **fields)
    return path, TaskRegistry([folder]).get(name)


def _hf_colours(tmp_path, names: list[str]):
    """A save_to_disk DatasetDict of the colour images whose ClassLabel names are ``names``, label i
    being the i-th of red, green, blue."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split in ("train", "test"):
        rows = {"image": [], "label": []}
        for _, colour, image in colour_samples(split):
            rows["image"].append(image)
            rows["label"].append(CLASSES.index(colour))
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    root = tmp_path / "hf-index"
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return {"source": "hf", "path": str(root)}


def test_index_labels_accept_the_datas_own_names_in_order(tmp_path, imagefolder_root, tiny_arch):
    """Folder names (sorted: blue, green, red) in the task's order, and hub-style names with
    synonyms, other case and underscores: both run."""
    args = ["--model", f"tiny={tiny_arch}", "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress",
            "--mode", "zeroshot"]
    folder, _ = _index_task(tmp_path, {"source": "imagefolder", "path": str(imagefolder_root)},
                            ["blue", "green", "red"], name="folder-in-order")
    assert main(["run", "--tasks", str(folder), *args]) == 0
    hub = _hf_colours(tmp_path, ["Red, crimson, scarlet", "GREEN_colour", "blue"])
    hub_task, _ = _index_task(tmp_path, hub, ["red", "green colour", "blue"], name="hub-in-order",
                              splits={"train": "train", "test": "test"})
    assert main(["run", "--tasks", str(hub_task), *args]) == 0


def test_index_labels_in_another_order_are_an_error(tmp_path, imagefolder_root, hf_root, tiny_arch, capsys):
    """The same data with the task's classes in another order: one line naming the file, the
    field, the first displaced label and both names; no record is written."""
    args = ["--model", f"tiny={tiny_arch}", "--results-dir", str(tmp_path / "r"), "--no-cache", "--no-progress",
            "--mode", "zeroshot"]
    folder, _ = _index_task(tmp_path, {"source": "imagefolder", "path": str(imagefolder_root)},
                            ["red", "green", "blue"], name="folder-shuffled")
    capsys.readouterr()
    assert main(["-q", "run", "--tasks", str(folder), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(folder) in err and "classnames" in err
    assert "label 0 of the data is named 'blue' while classnames[0] is 'red'" in err
    assert not (tmp_path / "r" / "tiny" / "folder-shuffled.json").exists()
    # hf_root's ClassLabel names are blue, red, green: against red, green, blue it fails at label 0,
    # against the data's own order (with the names as label_names) it runs.
    hub, _ = _index_task(tmp_path, {"source": "hf", "path": str(hf_root)}, CLASSES, name="hub-shuffled")
    assert main(["run", "--tasks", str(hub), *args]) == 2
    assert "label 0 of the data is named 'blue' while classnames[0] is 'red'" in capsys.readouterr().err
    relabelled, _ = _index_task(tmp_path, {"source": "hf", "path": str(hf_root)}, ["a blue one", "red", "green"],
                                name="hub-label-names", label_names=["Blue", "red", "green"])
    assert main(["run", "--tasks", str(relabelled), *args]) == 0


def test_index_order_check_on_real_imagenet_names(tmp_path):
    """The built-in ImageNet task against the names real hub copies carry: CLIP's own list
    (clip-benchmark's classnames.txt) and the ILSVRC synset lemmas ("tench, Tinca tinca"; the
    names of ILSVRC/imagenet-1k on the hub, here from timm's copy), of which about 300 differ from
    CLIP's renamed classes. Both pass; the lemmas rotated by one place fail at label 0."""
    timm = pytest.importorskip("timm")
    from pathlib import Path

    from evalbench.data import label_mapping
    from evalbench.errors import EvalbenchError
    from evalbench.tasks.loader import TaskRegistry

    info = Path(timm.__file__).parent / "data" / "_info"
    lemma = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    lemmas = [lemma[s] for s in (info / "imagenet_synsets.txt").read_text().split()]
    task = TaskRegistry().get("imagenet1k")
    clip = task.spec.classnames
    assert lemmas[0] == "tench, Tinca tinca" and len(lemmas) == len(clip) == 1000
    np.testing.assert_array_equal(label_mapping(task, clip, clip, 1000), np.arange(1000))
    np.testing.assert_array_equal(label_mapping(task, clip, lemmas, 1000), np.arange(1000))
    with pytest.raises(EvalbenchError, match=r"label 0 of the data is named 'goldfish, Carassius auratus' "
                                             r"while classnames\[0\] is 'tench'"):
        label_mapping(task, clip, lemmas[1:] + lemmas[:1], 1000)
    # Two neighbours swapped far down the list are found too.
    swapped = lemmas[:500] + [lemmas[501], lemmas[500]] + lemmas[502:]
    with pytest.raises(EvalbenchError, match=r"label 500 of the data"):
        label_mapping(task, clip, swapped, 1000)


def test_val_fraction_too_small_for_every_class_splits_unstratified(caplog):
    """20 images of 10 classes: a 0.2 val fraction (4 images) cannot hold each class, which
    scikit-learn's stratified split refuses; the split falls back to a seeded plain one, warned."""
    from evalbench.data import _split_off
    from evalbench.tasks.spec import ValFraction

    indices, labels = np.arange(100, 120), np.repeat(np.arange(10), 2)
    with caplog.at_level("WARNING", logger="evalbench.data"):
        train, held = _split_off(indices, labels, ValFraction(fraction=0.2, seed=1))
    assert len(held) == 4 and len(train) == 16
    assert sorted(np.concatenate([train, held])) == list(indices)
    assert "unstratified" in caplog.text
    # With room for every class, the split stays stratified: each class twice in the 20 held rows.
    train, held = _split_off(np.arange(100), np.repeat(np.arange(10), 10), ValFraction(fraction=0.2))
    assert sorted(np.bincount(np.repeat(np.arange(10), 10)[held])) == [2] * 10
