"""torchrun: two CPU processes (gloo) give the same records as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from evalbench.cli import main
from evalbench.records import read_record

ROOT = Path(__file__).resolve().parents[1]


def _metrics(record: dict) -> dict:
    return {m: {k: v for k, v in r.items() if k != "duration_s"} for m, r in record["results"].items()}


def _torchrun_two_ranks(run_args: list[str], tmp_path, port: int) -> subprocess.CompletedProcess:
    """``evalbench run RUN_ARGS`` on two CPU ranks (shards of 4 images), writing results to
    ``tmp_path/two`` and the cache to ``tmp_path/c2``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "EVALBENCH_SHARD_SIZE": "4",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "evalbench", "run", *run_args, "--results-dir", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2")]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_two_ranks_match_one_process(tmp_path, tiny_arch, task_dir):
    common = ["--model", f"tiny={tiny_arch}", "--tasks", "colours-folder,colours-hf", "--tasks-dir", str(task_dir),
              "--no-progress", "--batch-size", "4"]
    done = _torchrun_two_ranks(common, tmp_path, port=29517)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("### zeroshot (main score") == 1, "only rank 0 prints the table"

    os.environ["EVALBENCH_SHARD_SIZE"] = "4"
    try:
        assert main(["run", *common, "--results-dir", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "c1")]) == 0
    finally:
        del os.environ["EVALBENCH_SHARD_SIZE"]
    for task in ("colours-folder", "colours-hf"):
        two = read_record(tmp_path / "two" / "tiny" / f"{task}.json")
        one = read_record(tmp_path / "one" / "tiny" / f"{task}.json")
        assert two["provenance"]["world_size"] == 2 and one["provenance"]["world_size"] == 1
        assert _metrics(two) == _metrics(one)
    # Both ranks encoded: the cached shards of the 2-rank run equal the 1-rank ones.
    import numpy as np

    shards2 = sorted((tmp_path / "c2").glob("features/*/shard-*.npy"))
    shards1 = sorted((tmp_path / "c1").glob("features/*/shard-*.npy"))
    assert len(shards2) == len(shards1) > 2
    for a, b in zip(sorted(shards1, key=lambda p: (p.parent.name, p.name)), sorted(shards2, key=lambda p: (p.parent.name, p.name))):
        np.testing.assert_allclose(np.load(a), np.load(b), rtol=1e-5, atol=1e-6)


def test_two_ranks_share_one_pass_between_two_models(tmp_path, task_dir):
    """Two models with the same preprocessing under torchrun: one pass per split, each rank
    encoding its shards with both models, and the records equal a one-process run's."""
    common = ["--model", "demo-final", "--model", "demo-early", "--tasks", "colours-folder", "--tasks-dir",
              str(task_dir), "--no-progress", "--batch-size", "3"]
    done = _torchrun_two_ranks(common, tmp_path, port=29519)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("one pass for 2 models") == 3, done.stderr[-3000:]  # train, val, test; rank 0 logs

    os.environ["EVALBENCH_SHARD_SIZE"] = "4"
    try:
        for model in ("demo-final", "demo-early"):  # each alone, in one process
            args = [a for a in common if a not in ("demo-final", "demo-early", "--model")]
            assert main(["run", "--model", model, *args, "--results-dir", str(tmp_path / "one"),
                         "--cache-dir", str(tmp_path / f"c1-{model}")]) == 0
    finally:
        del os.environ["EVALBENCH_SHARD_SIZE"]
    for model in ("demo-final", "demo-early"):
        two = read_record(tmp_path / "two" / model / "colours-folder.json")
        one = read_record(tmp_path / "one" / model / "colours-folder.json")
        assert two["provenance"]["world_size"] == 2
        assert _metrics(two) == _metrics(one)
