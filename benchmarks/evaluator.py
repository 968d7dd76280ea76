"""The in-training evaluator against a cold `evalbench run` of the same model and tasks.

A training script pays for the evaluator's second and later calls (the forward passes and the
metrics); `evalbench run` on a saved checkpoint pays for decoding, preprocessing, model loading
and, as a process, imports. This prints the time of each, and the ratio of a later call to a
cold run (fresh cache and results folders), both as a new process (what a training job that
shells out pays) and in-process (`evalbench.evaluate`, without the imports).

    python benchmarks/evaluator.py --model demo --tasks digits
    python benchmarks/evaluator.py --model ViT-B-32 --tasks digits --limit 300

`--model demo` is the bundled demo CLIP (demo-final weights); an open_clip architecture name
is built with random weights (seed 0), the same in both paths. Zero-shot only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(model_name: str, work: Path):
    """(module, preprocess, tokenizer, --model spec for `evalbench run`) with the same weights."""
    import open_clip
    import torch

    from evalbench.models import ASSETS, BUNDLED
    from evalbench.models.checkpoint import read_state_dict

    if model_name == "demo":
        open_clip.add_model_config(ASSETS / "demo-clip.json")
        model, _, preprocess = open_clip.create_model_and_transforms("demo-clip")
        model.load_state_dict(read_state_dict(ASSETS / "demo-final.safetensors"))
        return model, preprocess, open_clip.get_tokenizer("demo-clip"), BUNDLED["demo-final"]
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(model_name)
    weights = work / f"{model_name}.pt"
    torch.save(model.state_dict(), weights)
    return model, preprocess, open_clip.get_tokenizer(model_name), f"{model_name}@{weights}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--tasks", default="digits")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--calls", type=int, default=4, help="evaluator calls (the first is reported apart)")
    parser.add_argument("--storage", default="float32")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import evalbench

    (ROOT / "benchmarks" / ".work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="evaluator-", dir=ROOT / "benchmarks" / ".work"))
    tasks = args.tasks.split(",")
    limit = ["--limit", str(args.limit)] if args.limit else []
    model, preprocess, tokenizer, spec = build(args.model, work)
    # The data (generated tasks) once into a shared data cache, so that neither side pays for
    # generating it; feature caches are separate and fresh.
    data_cache = work / "data-cache"
    evalbench.Evaluator(tasks, preprocess=preprocess, tokenizer=tokenizer, results_dir=None, cache_dir=data_cache,
                        limit=args.limit, progress=False)

    def cold_cache(name: str) -> Path:
        fresh = work / name
        subprocess.run(["cp", "-r", str(data_cache), str(fresh)], check=True)
        for sub in ("features", "text", "results", "locks"):  # keep only the generated data
            subprocess.run(["rm", "-rf", str(fresh / sub)], check=True)
        return fresh

    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evalbench", "run", "--model", f"bench={spec}", "--tasks", args.tasks,
                    "--mode", "zeroshot", "--batch-size", str(args.batch_size), "--no-progress", *limit,
                    "--cache-dir", str(cold_cache("cache-process")), "--results-dir", str(work / "r-process")],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    process = time.perf_counter() - start

    start = time.perf_counter()
    evalbench.evaluate(f"bench={spec}", tasks, modes="zeroshot", batch_size=args.batch_size, limit=args.limit,
                       cache_dir=cold_cache("cache-inproc"), results_dir=work / "r-inproc", progress=False)
    inproc = time.perf_counter() - start

    start = time.perf_counter()
    evaluator = evalbench.Evaluator(tasks, preprocess=preprocess, tokenizer=tokenizer, run="bench",
                                    results_dir=work / "r-evaluator", cache_dir=data_cache, limit=args.limit,
                                    batch_size=args.batch_size, storage=args.storage, progress=False)
    built = time.perf_counter() - start
    calls = []
    for step in range(args.calls):
        start = time.perf_counter()
        evaluator(model, step=step)
        calls.append(time.perf_counter() - start)
    later = statistics.median(calls[1:])

    import torch

    print(f"model {args.model}, tasks {args.tasks}, limit {args.limit}, batch {args.batch_size}, "
          f"storage {args.storage} ({evaluator.nbytes / 1e6:.1f} MB), torch threads {torch.get_num_threads()}")
    print(f"cold `evalbench run` (new process):   {process:7.2f} s")
    print(f"cold evalbench.evaluate (in-process): {inproc:7.2f} s")
    print(f"Evaluator build:                      {built:7.2f} s")
    print(f"Evaluator call 1:                     {calls[0]:7.2f} s")
    print(f"Evaluator calls 2..{args.calls} (median):       {later:7.2f} s  ({', '.join(f'{c:.2f}' for c in calls[1:])})")
    print(f"ratio later call / cold run (process):    {later / process:.3f}")
    print(f"ratio later call / cold run (in-process): {later / inproc:.3f}")
    print(f"(kept: {work})")


if __name__ == "__main__":
    main()
