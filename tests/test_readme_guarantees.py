"""What the README promises about the protocols, checked by watching what the code reads: few-shot
probes see k examples per class of train and of val, never the test split nor the whole val split,
while choosing C and fitting; zero-shot without templates is an error, never a default prompt."""

from __future__ import annotations

import numpy as np

import evalbench.runners as runners
from evalbench.cli import main
from evalbench.probe import SklearnBackend

from conftest import CLASSES, SPLIT_SIZES, Counts, write_task


class RecordingBackend(SklearnBackend):
    """scikit-learn's backend, keeping every array it is given to fit on or to score."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, np.ndarray]] = []

    def fit(self, x, y, c, init=None):
        self.calls.append(("fit", np.array(x)))
        return super().fit(x, y, c, init)

    def scores(self, model, x, n_classes):
        self.calls.append(("scores", np.array(x)))
        return super().scores(model, x, n_classes)


def test_few_shot_never_reads_test_or_the_whole_val_split(tmp_path, imagefolder_root, tiny_arch, monkeypatch):
    """`--shots 2 --seeds 2` on a task with train, val and test folders (6, 3 and 4 images per
    class): each row the probe is given is traced back to its split. Fits see 2 train images per
    class only; C is chosen on 2 val images per class (never all 3); test rows reach the backend
    only to score the final model of each seed, never to fit or to choose C."""
    k, seeds = 2, 2
    backend, feats = RecordingBackend(), {}
    monkeypatch.setattr(runners, "make_backend", lambda name, device: backend)
    few_shot = runners.few_shot_probe

    def keep_features(train, val, test, *args, **kwargs):
        feats.update(train=train[0], val=val[0], test=test[0])
        return few_shot(train, val, test, *args, **kwargs)

    monkeypatch.setattr(runners, "few_shot_probe", keep_features)
    folder = tmp_path / "tasks"
    folder.mkdir()
    task = write_task(folder, "colours", {"source": "imagefolder", "path": str(imagefolder_root)})
    rc = main(["-q", "run", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--mode", "linear_probe",
               "--shots", str(k), "--seeds", str(seeds), "--results-dir", str(tmp_path / "r"), "--no-cache",
               "--no-progress"])
    assert rc == 0
    assert {role: len(x) for role, x in feats.items()} == SPLIT_SIZES
    where = {row.tobytes(): role for role, x in feats.items() for row in x}
    assert len(where) == sum(SPLIT_SIZES.values()), "every image's features are distinct"

    def roles(x: np.ndarray) -> set[str]:
        return {where[row.tobytes()] for row in x}

    per_seed = k * len(CLASSES)
    fits = [x for op, x in backend.calls if op == "fit"]
    scored = [x for op, x in backend.calls if op == "scores"]
    assert fits and all(roles(x) == {"train"} and len(x) == per_seed for x in fits)
    on_test = [x for x in scored if roles(x) == {"test"}]
    choosing_c = [x for x in scored if roles(x) != {"test"}]
    assert len(on_test) == seeds and all(len(x) == SPLIT_SIZES["test"] for x in on_test)
    assert choosing_c and all(roles(x) == {"val"} and len(x) == per_seed < SPLIT_SIZES["val"] for x in choosing_c)


def test_zeroshot_without_templates_is_an_error_not_a_default_prompt(tmp_path, imagefolder_root, tiny_arch,
                                                                     monkeypatch, capsys):
    """A task with no templates over data that ships none: zero-shot stops with one line naming
    the task file and the field, before any model is loaded or record written; the linear probe,
    which needs no prompts, still runs."""
    counts = Counts(monkeypatch)
    folder = tmp_path / "tasks"
    folder.mkdir()
    task = write_task(folder, "no-prompts", {"source": "imagefolder", "path": str(imagefolder_root)}, templates=None)
    args = ["--model", f"tiny={tiny_arch}", "--tasks", str(task), "--results-dir", str(tmp_path / "r"), "--no-cache",
            "--no-progress"]
    capsys.readouterr()
    assert main(["-q", "run", *args, "--mode", "zeroshot"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{task}: templates: missing" in err and "zero-shot needs them" in err
    assert counts.take() == (0, 0)
    assert not (tmp_path / "r" / "tiny" / "no-prompts.json").exists()
    assert main(["-q", "run", *args, "--mode", "linear_probe"]) == 0
    assert counts.take() == (3, 0)
