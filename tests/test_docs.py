"""The examples in docs/ are real: every YAML block validates, and the local ones run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evalbench.cli import main
from evalbench.records import read_record

from conftest import COLOURS, make_image

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-task.md"


def doc_blocks() -> dict[str, str]:
    blocks = re.findall(r"```yaml\n# file: (\S+)\n(.*?)```", DOC.read_text(), flags=re.S)
    return {name: body for name, body in blocks}


def test_the_doc_has_the_three_layouts_retrieval_and_matching():
    sources = {re.search(r"source: (\w+)", body).group(1) for body in doc_blocks().values()}
    assert sources == {"imagefolder", "hf", "webdataset", "captionfolder", "jsonl"}


@pytest.fixture
def doc_tasks(tmp_path):
    for name, body in doc_blocks().items():
        (tmp_path / name).write_text(body)
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 6)):
        for animal, colour in (("cat", "red"), ("dog", "blue")):
            folder = tmp_path / "my-pets" / split / animal
            folder.mkdir(parents=True)
            for i in range(n):
                make_image(colour, rng).save(folder / f"{i:04d}.png")
    captions = tmp_path / "my-captions"
    captions.mkdir()
    with open(captions / "captions.jsonl", "w") as f:
        for i, colour in enumerate(COLOURS):
            make_image(colour, rng).save(captions / f"{i}.png")
            f.write(json.dumps({"image": f"{i}.png", "captions": [f"a {colour} square"]}) + "\n")
    matching = tmp_path / "my-hard-negatives"
    matching.mkdir()
    with open(matching / "test.jsonl", "w") as f:
        for i, colour in enumerate(COLOURS):
            other = list(COLOURS)[(i + 1) % len(COLOURS)]
            make_image(colour, rng).save(matching / f"{i}.png")
            item = {"image": f"{i}.png", "captions": [f"a {other} square", f"a {colour} square"], "label": 1,
                    "subset": "colour"}
            f.write(json.dumps(item) + "\n")
    return tmp_path


def test_every_doc_example_validates(doc_tasks, capsys):
    assert main(["tasks", "validate", str(doc_tasks)]) == 0, capsys.readouterr().out


def test_local_doc_examples_run(doc_tasks, tiny_arch, tmp_path):
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks",
               f"{doc_tasks / 'my-pets.yaml'},{doc_tasks / 'my-captions.yaml'},{doc_tasks / 'my-hard-negatives.yaml'}",
               "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert rc == 0
    pets = read_record(tmp_path / "r" / "tiny" / "my-pets.json")["results"]
    assert pets["linear_probe"]["n_train"] == 16 and pets["linear_probe"]["n_val"] == 4  # 20% of 20, stratified
    assert pets["zeroshot"]["n"] == 12
    captions = read_record(tmp_path / "r" / "tiny" / "my-captions.json")["results"]
    assert captions["retrieval"]["n"] == 3
    matching = read_record(tmp_path / "r" / "tiny" / "my-hard-negatives.json")["results"]
    assert set(matching) == {"zeroshot"} and matching["zeroshot"]["per_subset"]["colour"]["n"] == 3
