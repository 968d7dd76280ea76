"""The in-training evaluator: the same numbers as `evalbench run`, images decoded once, records
per step, the model's mode restored, and two gloo ranks agreeing with one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import evalbench
from evalbench.errors import EvalbenchError
from evalbench.models import ASSETS
from evalbench.records import read_record

ROOT = Path(__file__).resolve().parents[1]


def demo_clip(weights: str = "demo-final"):
    """The bundled demo CLIP as a training script holds it: open_clip's module, preprocess and
    tokenizer, with the bundled weights loaded."""
    import open_clip

    from evalbench.models.checkpoint import read_state_dict

    open_clip.add_model_config(ASSETS / "demo-clip.json")
    model, _, preprocess = open_clip.create_model_and_transforms("demo-clip")
    model.load_state_dict(read_state_dict(ASSETS / f"{weights}.safetensors"))
    return model, preprocess, open_clip.get_tokenizer("demo-clip")


@pytest.fixture(scope="module")
def demo():
    return demo_clip()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluator-cache")


class Counter:
    """A transform that counts the images passing through it (the decodes) and changes nothing."""

    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return image


def counting(preprocess):
    """``preprocess`` with a :class:`Counter` in front, still a Compose (as uint8 storage needs)."""
    from torchvision.transforms import Compose

    counter = Counter()
    return Compose([counter, *preprocess.transforms]), counter


def _evaluate_records(results: Path, cache: Path, tasks, tasks_dir=()) -> dict:
    """`evalbench run`'s records (through evalbench.evaluate) of demo-final, by task."""
    evalbench.evaluate("demo-final", tasks, modes="zeroshot", results_dir=results, cache_dir=cache,
                       tasks_dir=tasks_dir, progress=False)
    return {path.stem: read_record(path) for path in (results / "demo-final").glob("*.json")}


@pytest.mark.parametrize("storage", ["float32", "uint8"])
def test_zeroshot_equals_evalbench_run(demo, cache, tmp_path, storage):
    model, preprocess, tokenizer = demo
    counted, counter = counting(preprocess)
    evaluator = evalbench.Evaluator(["digits"], preprocess=counted, tokenizer=tokenizer, run="exp",
                                    results_dir=tmp_path / "ev", cache_dir=cache, storage=storage, progress=False)
    decoded = counter.calls
    assert decoded == 500 + 1, "each of digits' 500 test images once (and one blank for padding)"
    first = evaluator(model, step=10)
    second = evaluator(model, step=20)
    assert counter.calls == decoded, "calls reuse the prepared images"
    assert first == second

    reference = _evaluate_records(tmp_path / "run", cache, ["digits"])["digits"]["results"]["zeroshot"]
    ours = read_record(tmp_path / "ev" / "exp_10" / "digits.json")["results"]["zeroshot"]
    for metric in ("acc1", "acc5", "mean_per_class_recall", "main_score"):
        assert first["digits"][metric] == reference[metric] == ours[metric]
    # Image by image, the same predictions as `evalbench run`.
    assert ours["per_sample"] == reference["per_sample"]
    assert reference["acc1"] > 0.5  # the trained demo checkpoint, not chance (0.1)


def test_records_carry_the_step_and_follow_the_overwrite_rule(demo, cache, tmp_path):
    model, preprocess, tokenizer = demo
    settings = dict(preprocess=preprocess, tokenizer=tokenizer, run="exp1", results_dir=tmp_path, cache_dir=cache,
                    limit=60, progress=False)
    evaluator = evalbench.Evaluator(["digits", "colors"], **settings)
    evaluator(model, step=100)
    evaluator(model, step=200)
    for step in (100, 200):
        for task in ("digits", "colors"):
            record = read_record(tmp_path / f"exp1_{step}" / f"{task}.json")
            assert record["model"]["step"] == step and record["model"]["run"] == "exp1"
            assert record["model"]["name"] == f"exp1@{step}"
            assert record["task"]["limit"] == 60 and record["results"]["zeroshot"]["n"] == 60
    written = (tmp_path / "exp1_100" / "digits.json").read_bytes()
    with pytest.raises(EvalbenchError, match=r"exp1_100.digits\.json.*overwrite=True"):
        evaluator(model, step=100)
    assert (tmp_path / "exp1_100" / "digits.json").read_bytes() == written
    assert not (tmp_path / "exp1_300").exists()
    again = evalbench.Evaluator(["digits", "colors"], overwrite=True, **settings)(model, step=100)
    assert json.loads((tmp_path / "exp1_100" / "digits.json").read_text())["results"]["zeroshot"]["acc1"] == \
        again["digits"]["acc1"]
    # Reports read the evaluator's records like any other.
    table = evalbench.report(tmp_path, format="csv")
    assert "exp1@200" in table


def test_mode_is_restored_and_the_model_runs_in_eval_mode(demo, cache, tmp_path):
    model, preprocess, tokenizer = demo
    evaluator = evalbench.Evaluator(["digits"], preprocess=preprocess, tokenizer=tokenizer, results_dir=None,
                                    cache_dir=cache, limit=20, progress=False)
    seen = []
    encode_image = model.encode_image

    def spy(*args, **kwargs):
        seen.append(model.training or any(m.training for m in model.modules()))
        return encode_image(*args, **kwargs)

    model.encode_image = spy
    try:
        model.train()
        model.visual.eval()  # a frozen tower stays frozen after the call
        evaluator(model, step=1)
        assert model.training and model.transformer.training and not model.visual.training
        assert seen and not any(seen), "the forward passes ran in eval mode"
        model.eval()
        evaluator(model, step=2)
        assert not any(m.training for m in model.modules())
    finally:
        del model.encode_image


def test_new_weights_change_the_scores_and_an_adapter_is_accepted(cache, tmp_path):
    model, preprocess, tokenizer = demo_clip("demo-early")
    evaluator = evalbench.Evaluator(["digits"], preprocess=preprocess, tokenizer=tokenizer, results_dir=None,
                                    cache_dir=cache, progress=False)
    early = evaluator(model)
    final_model, _, _ = demo_clip("demo-final")
    model.load_state_dict(final_model.state_dict())  # what an optimiser step does, in one go
    final = evaluator(model)
    assert early["digits"]["acc1"] < final["digits"]["acc1"] - 0.2  # README: 43.4% and 78.0%
    # An evalbench ModelAdapter encodes its own text (no tokenizer in the evaluator needed).
    import torch

    from evalbench.models import load_model, parse_model_spec

    adapter = load_model(parse_model_spec("demo-final"), torch.device("cpu"))
    plain = evalbench.Evaluator(["digits"], preprocess=preprocess, results_dir=None, cache_dir=cache, progress=False)
    assert plain(adapter)["digits"]["acc1"] == final["digits"]["acc1"]
    with pytest.raises(EvalbenchError, match="tokenizer"):
        plain(model)


def test_retrieval_equals_evalbench_run(demo, cache, tmp_path):
    from conftest import make_image

    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(3)
    captions = {"red": ["a red square", "red"], "green": ["a green square"], "blue": ["a blue square", "blue", "navy"]}
    with open(folder / "captions.jsonl", "w") as f:
        for i, colour in enumerate(["red", "green", "blue"] * 3):
            make_image(colour, rng, 64).save(folder / "images" / f"{i}.png")
            f.write(json.dumps({"image": f"images/{i}.png", "captions": captions[colour]}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ret.yaml").write_text(yaml.safe_dump({
        "name": "ret", "version": 1, "description": "colour captions", "type": "retrieval",
        "dataset": {"source": "captionfolder", "path": str(folder)}, "splits": {"test": "test"}}))
    model, preprocess, tokenizer = demo
    ours = evalbench.Evaluator("ret", tasks_dir=tasks, preprocess=preprocess, tokenizer=tokenizer,
                               results_dir=tmp_path / "ev", cache_dir=cache, batch_size=4, progress=False)(model, step=5)
    reference = _evaluate_records(tmp_path / "run", cache, ["ret"], tasks)["ret"]["results"]["retrieval"]
    assert set(ours["ret"]) >= {"mean_recall@1", "image_retrieval_recall@5", "text_retrieval_recall@1", "main_score"}
    for key, value in ours["ret"].items():
        assert value == pytest.approx(reference[key], abs=1e-12), key
    assert read_record(tmp_path / "ev" / "model_5" / "ret.json")["results"]["retrieval"]["n_texts"] == 18


def test_bad_settings_are_one_clear_error(demo, cache):
    _, preprocess, tokenizer = demo
    with pytest.raises(EvalbenchError, match=r"storage: 'int4' is not allowed \(allowed: float32, float16, uint8\)"):
        evalbench.Evaluator(["digits"], preprocess=preprocess, storage="int4")
    with pytest.raises(EvalbenchError, match="batch_size"):
        evalbench.Evaluator(["digits"], preprocess=preprocess, batch_size=0)
    with pytest.raises(EvalbenchError, match="type: the evaluator scores .* not matching"):
        evalbench.Evaluator(["sugarcrepe"], preprocess=preprocess)
    with pytest.raises(EvalbenchError, match="storage: uint8 needs a torchvision Compose"):
        evalbench.Evaluator(["digits"], preprocess=lambda image: image, storage="uint8", cache_dir=cache, limit=2)
    evaluator = evalbench.Evaluator(["digits"], preprocess=preprocess, tokenizer=tokenizer, results_dir=None,
                                    cache_dir=cache, limit=2, progress=False)
    with pytest.raises(EvalbenchError, match="model: a str has neither"):
        evaluator("ViT-B-32")


def test_float16_and_memmap_storage_keep_the_scores(demo, cache, tmp_path):
    model, preprocess, tokenizer = demo
    common = dict(preprocess=preprocess, tokenizer=tokenizer, results_dir=None, cache_dir=cache, limit=200,
                  progress=False)
    full = evalbench.Evaluator(["shapes"], **common)
    mapped = evalbench.Evaluator(["shapes"], storage="uint8", storage_dir=tmp_path / "mm", **common)
    half = evalbench.Evaluator(["shapes"], storage="float16", **common)
    assert (tmp_path / "mm" / "shapes-test-rank0.npy").is_file()
    assert mapped.nbytes * 4 == full.nbytes == half.nbytes * 2
    assert mapped(model) == full(model)  # uint8 is lossless for open_clip's preprocess
    assert half(model)["shapes"]["acc1"] == pytest.approx(full(model)["shapes"]["acc1"], abs=0.02)


DISTRIBUTED_SCRIPT = """
import json, os, sys, time
import torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_evaluator import demo_clip
import evalbench

dist.init_process_group("gloo")
rank = dist.get_rank()
model, preprocess, tokenizer = demo_clip()
evaluator = evalbench.Evaluator(["digits", "colors"], preprocess=preprocess, tokenizer=tokenizer, run="ddp",
                                results_dir={results!r}, cache_dir={cache!r}, limit=101, batch_size=16,
                                progress=False)
out = []
for step in (1, 2):
    time.sleep(1.5 * rank)  # rank 1 reaches each call late
    out.append(evaluator(model, step=step))
with open(os.path.join({results!r}, f"rank{{rank}}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
"""


def test_two_gloo_ranks_agree_with_one_process(demo, cache, tmp_path):
    model, preprocess, tokenizer = demo
    # One process first; it also generates the data into the shared cache.
    single = evalbench.Evaluator(["digits", "colors"], preprocess=preprocess, tokenizer=tokenizer, run="one",
                                 results_dir=None, cache_dir=cache, limit=101, batch_size=16, progress=False)(model)
    results = tmp_path / "two"
    results.mkdir()
    script = tmp_path / "ranks.py"
    script.write_text(DISTRIBUTED_SCRIPT.format(tests=str(ROOT / "tests"), results=str(results), cache=str(cache)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533", str(script)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = json.loads((results / "rank0.json").read_text())
    rank1 = json.loads((results / "rank1.json").read_text())
    assert rank0 == rank1
    for scores in rank0:
        assert scores.keys() == single.keys()
        for task, metrics in scores.items():
            assert metrics == pytest.approx(single[task], rel=1e-9), task
    record = read_record(results / "ddp_2" / "digits.json")
    assert record["model"]["step"] == 2 and record["provenance"]["world_size"] == 2
    assert record["results"]["zeroshot"]["n"] == 101


def test_the_training_example_runs(tmp_path):
    """examples/train_with_evalbench.py, as docs/training.md shows it, trains and writes a record
    per evaluation step."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVALBENCH_CACHE": os.environ["EVALBENCH_CACHE"]}
    cmd = [sys.executable, str(ROOT / "examples" / "train_with_evalbench.py"), "--steps", "2", "--eval-every", "1",
           "--limit", "30", "--results-dir", str(tmp_path), "--batch-size", "8"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("step")] == ["0", "1", "2"]
    for step in (0, 1, 2):
        record = read_record(tmp_path / f"exp1_{step}" / "colors.json")
        assert record["model"]["step"] == step and record["results"]["zeroshot"]["n"] == 30


def test_linear_probe_equals_evalbench_run(demo, cache, tmp_path):
    model, preprocess, tokenizer = demo
    ours = evalbench.Evaluator(["colors"], modes="zeroshot,linear_probe", preprocess=preprocess, tokenizer=tokenizer,
                               results_dir=None, cache_dir=cache, limit=60, progress=False)(model)["colors"]
    table = evalbench.evaluate("demo-final", "colors", modes="zeroshot,linear_probe", results_dir=tmp_path,
                               cache_dir=tmp_path / "c", limit=60, progress=False)
    probe = table[(table["mode"] == "linear_probe")].set_index("metric")["value"]
    assert ours["linear_probe/acc1"] == probe["acc1"] and ours["linear_probe/main_score"] == probe["main_score"]
    assert ours["acc1"] == table[(table["mode"] == "zeroshot") & (table["metric"] == "acc1")]["value"].item()
