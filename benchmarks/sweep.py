"""Checkpoint sweeps: one `evalbench run` over K checkpoints against K separate runs (issue 16).

Makes its own data and weights, then times whole processes, each with a cold cache (a fresh
--cache-dir and --results-dir):

  (1) one `evalbench run` with the K checkpoints as K --model flags, zero-shot + linear probe
  (2) K `evalbench run` processes, one checkpoint each, the same task and settings

and prints (1)/(2) against the target <= 0.7. The data is an image folder of JPEGs of moderate
size (so decoding costs what it costs on real photos); the checkpoints are seeded random weights
of one architecture saved as safetensors. Two architectures are worth running:

  --arch demo      the bundled demo architecture (64 px, 2-layer): decoding dominates
  --arch ViT-S-32  (or ViT-B-32) at 224 px: encoding dominates

``--strategies`` also measures, in child processes (wall time and peak RSS each), the two ways
one pass can serve K models with the same preprocessing:

  (a) interleaved: every model loaded, each decoded batch encoded by each model in turn
      (what `evalbench.features.extract_shared` does)
  (b) buffered: the first model's pass keeps the preprocessed tensors in a float32 memmap, then
      one model at a time is loaded, encodes from the buffer (read in whole slices), and is
      released

    .venv/bin/python benchmarks/sweep.py --arch demo --strategies
    .venv/bin/python benchmarks/sweep.py --arch ViT-S-32 --train 240 --test 120 --strategies

Timings are wall-clock of whole processes, the best of ``--repeat`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import feature_extraction as fe  # noqa: E402  (the house helpers: timed, env, machine)

DEMO_CONFIG = REPO / "evalbench" / "assets" / "demo-clip.json"
CLASSNAMES = fe.CLASSNAMES


def make_data(root: Path, sizes: dict[str, int], classes: int, seed: int, min_px: int, max_px: int) -> None:
    """``root/SPLIT/CLASS/NNNNN.jpg``: noisy striped pictures of random size, JPEG quality 90."""
    import numpy as np

    if (root / "done").is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    names = CLASSNAMES[:classes]
    for s, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, s])
        for i in range(n):
            label = i % classes
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            fe.make_image(rng, label, classes, min_px, max_px).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "done").write_text("ok\n")


def write_task(path: Path, data: Path, classes: int) -> None:
    names = ", ".join(CLASSNAMES[:classes])
    templates = ", ".join(f'"{t}"' for t in fe.TEMPLATES)
    path.write_text(
        "name: sweep-bench\nversion: 1\ndescription: JPEG image folder for benchmarks/sweep.py\n"
        f"dataset: {{source: imagefolder, path: {data}}}\n"
        "splits: {train: train, val: {fraction: 0.2, seed: 0}, test: test}\n"
        f"classnames: [{names}]\ntemplates: [{templates}]\nmain_metric: acc1\n"
    )


def make_checkpoints(work: Path, arch: str, k: int) -> list[str]:
    """K ``ARCH@weights.safetensors`` specs with seeded random weights (seed 0..K-1)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    if arch == "demo":
        open_clip.add_model_config(DEMO_CONFIG)
        name, spec_arch = DEMO_CONFIG.stem, str(DEMO_CONFIG)
    else:
        name, spec_arch = arch, arch
    specs = []
    for seed in range(k):
        path = work / "ckpts" / arch / f"step_{(seed + 1) * 1000}.safetensors"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.manual_seed(seed)
            model = open_clip.create_model(name, pretrained=None)
            save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(path))
        specs.append(f"ckpt{seed}={spec_arch}@{path}")
    return specs


def run_cmd(args, specs: list[str], task: Path, results: Path, cache: Path) -> list[str]:
    cmd = [sys.executable, "-m", "evalbench", "run", "--tasks", str(task), "--mode", "zeroshot,linear_probe",
           "--results-dir", str(results), "--cache-dir", str(cache), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--device", "cpu", "--no-progress"]
    for spec in specs:
        cmd += ["--model", spec]
    return cmd


def scores(results: Path) -> dict:
    out = {}
    for path in sorted(results.rglob("*.json")):
        record = json.loads(path.read_text())
        out[record["model"]["name"]] = {m: round(r["main_score"], 6) for m, r in record["results"].items()}
    return out


def sweep_round(args, work: Path, specs: list[str], task: Path) -> dict:
    fresh = lambda p: (shutil.rmtree(p, ignore_errors=True), p)[1]  # noqa: E731
    joint = fe.timed(run_cmd(args, specs, task, fresh(work / "joint" / "results"), fresh(work / "joint" / "cache")),
                     args.threads, "joint", work / "logs")
    joint["scores"] = scores(work / "joint" / "results")
    separate, sep_scores = [], {}
    for i, spec in enumerate(specs):
        res, cache = fresh(work / f"sep{i}" / "results"), fresh(work / f"sep{i}" / "cache")
        separate.append(fe.timed(run_cmd(args, [spec], task, res, cache), args.threads, f"separate {i}", work / "logs"))
        sep_scores.update(scores(res))
    return {"joint": joint, "separate": separate, "separate_wall_s": sum(r["wall_s"] for r in separate),
            "same_scores": joint["scores"] == sep_scores}


# --------------------------------------------------------------------------------------------
# one pass, two strategies: child processes of this script


def _images(data: Path):
    from PIL import Image
    from torch.utils.data import Dataset

    files = sorted((data / "train").rglob("*.jpg")) + sorted((data / "test").rglob("*.jpg"))

    class Files(Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            with Image.open(files[i]) as im:
                return im.convert("RGB")

    return Files()


def strategy_child(args) -> None:
    """Encode every image with each of the K checkpoints by one strategy; print JSON."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from evalbench.features import Encoder, FeatureJob, Preprocessed, extract_shared
    from evalbench.models import LazyModel, parse_model_spec

    torch.set_num_threads(args.threads)
    specs = json.loads(args.specs)
    dataset = _images(Path(args.data))
    import open_clip  # noqa: F401  (its 3 s import is not part of either strategy)

    lazy = [LazyModel(parse_model_spec(s), torch.device("cpu")) for s in specs]
    cpu0 = time.process_time()
    start = time.perf_counter()
    if args._strategy == "interleaved":
        jobs = [FeatureJob(m.get()) for m in lazy]
        feats = extract_shared(jobs, dataset, batch_size=args.batch_size, workers=args.workers, progress=False)
    else:
        first = lazy[0].get()
        n = len(dataset)
        shape = tuple(first.preprocess(dataset[0]).shape)
        with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
            buffer = np.lib.format.open_memmap(Path(tmp) / "pixels.npy", mode="w+", dtype=np.float32,
                                               shape=(n, *shape))
            loader = DataLoader(Preprocessed(dataset, first.preprocess), batch_size=args.batch_size,
                                num_workers=args.workers)
            encode, parts, row = Encoder(first), [], 0
            with torch.inference_mode():
                for pixels, _ in loader:
                    buffer[row : row + len(pixels)] = pixels.numpy()
                    row += len(pixels)
                    parts.append(encode(pixels))
                feats = [np.concatenate(parts)]
                lazy[0].release()
                for model in lazy[1:]:
                    encode, parts = Encoder(model.get()), []
                    for i in range(0, n, args.batch_size):  # whole slices of the memmap
                        parts.append(encode(torch.from_numpy(np.array(buffer[i : i + args.batch_size]))))
                    feats.append(np.concatenate(parts))
                    model.release()
            buffer_mb = buffer.nbytes / 2**20
    wall = time.perf_counter() - start
    out = {"strategy": args._strategy, "wall_s": wall, "cpu_s": time.process_time() - cpu0,
           "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "images": len(dataset), "models": len(specs), "checksum": [float(np.nansum(f[:5])) for f in feats]}
    if args._strategy == "buffered":
        out["buffer_mb"] = buffer_mb
    print(json.dumps(out))


def strategies(args, work: Path, data: Path, specs: list[str]) -> dict:
    out = {}
    for strategy in ("interleaved", "buffered") * args.repeat:
        cmd = [sys.executable, __file__, "--_strategy", strategy, "--specs", json.dumps(specs), "--data", str(data),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--threads", str(args.threads),
               "--work-dir", str(work)]
        proc = subprocess.run(cmd, env=fe.env(args.threads), capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"strategy {strategy} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if strategy not in out or result["wall_s"] < out[strategy]["wall_s"]:
            out[strategy] = {**result, "all_wall_s": out.get(strategy, {}).get("all_wall_s", [])}
        out[strategy]["all_wall_s"].append(round(result["wall_s"], 1))
    return out


# --------------------------------------------------------------------------------------------


def report_sweep(args, result: dict) -> None:
    best_joint = min(r["joint"]["wall_s"] for r in result["rounds"])
    best_sep = min(r["separate_wall_s"] for r in result["rounds"])
    print(f"\n== {args.arch}: K = {args.k} checkpoints, zero-shot + linear probe, cold caches ==")
    for i, r in enumerate(result["rounds"]):
        seps = ", ".join(f"{s['wall_s']:.1f}" for s in r["separate"])
        print(f"round {i + 1}: one run {r['joint']['wall_s']:.1f} s (peak RSS {r['joint']['rss_mb']:.0f} MB); "
              f"{args.k} runs {r['separate_wall_s']:.1f} s ({seps}); same scores: {r['same_scores']}")
    ratio = best_joint / best_sep
    print(f"one run / {args.k} runs = {best_joint:.1f} / {best_sep:.1f} = {ratio:.2f}x  "
          f"(target <= 0.7: {'met' if ratio <= 0.7 else 'missed'})")
    result.update(best_joint_s=best_joint, best_separate_s=best_sep, ratio=ratio)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="demo", help="'demo' (the bundled demo architecture) or an open_clip name")
    p.add_argument("-k", type=int, default=6, help="checkpoints")
    p.add_argument("--train", type=int, default=400, help="train images (val is 20%% of them)")
    p.add_argument("--test", type=int, default=200, help="test images")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--min-px", type=int, default=320, help="JPEG side, smallest")
    p.add_argument("--max-px", type=int, default=640, help="JPEG side, largest")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (evalbench's default: 0)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, every process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the best of each is reported")
    p.add_argument("--strategies", action="store_true", help="also time the two one-pass strategies in-process")
    p.add_argument("--strategies-only", action="store_true", help="only the strategies, not the process runs")
    p.add_argument("--work-dir", default=str(HERE / ".work" / "sweep"), help="data, weights, caches, logs")
    p.add_argument("--json", default=None, help="also write every measurement here")
    p.add_argument("--_strategy", help=argparse.SUPPRESS)
    p.add_argument("--specs", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._strategy:
        return strategy_child(args)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"jpeg-{args.train}-{args.test}-{args.classes}-{args.min_px}-{args.max_px}"
    made = time.perf_counter()
    make_data(data, {"train": args.train, "test": args.test}, args.classes, args.seed, args.min_px, args.max_px)
    specs = make_checkpoints(work, args.arch, args.k)
    task = work / "sweep-bench.yaml"
    write_task(task, data, args.classes)
    print(f"machine: {fe.machine()}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"data and {args.k} checkpoints of {args.arch} ready in {time.perf_counter() - made:.0f} s; "
          f"{args.train} + {args.test} JPEGs of {args.min_px}-{args.max_px} px, batch {args.batch_size}, "
          f"{args.workers} workers, {args.threads} threads", flush=True)
    result = {"machine": fe.machine(), "args": vars(args), "rounds": []}
    if args.strategies_only:
        args.strategies = True
    for _ in range(0 if args.strategies_only else args.repeat):
        result["rounds"].append(sweep_round(args, work, specs, task))
    if result["rounds"]:
        report_sweep(args, result)
    if args.strategies:
        s = strategies(args, work, data, specs)
        result["strategies"] = s
        print(f"\n== one pass over {s['interleaved']['images']} images for {args.k} models, in-process ==")
        for name, r in s.items():
            extra = f", buffer {r['buffer_mb']:.0f} MB on disk" if "buffer_mb" in r else ""
            print(f"({name}) best {r['wall_s']:.1f} s wall ({r['cpu_s']:.1f} s CPU; every round: {r['all_wall_s']}), "
                  f"peak RSS {r['rss_mb']:.0f} MB{extra}")
        print(f"buffered / interleaved = {s['buffered']['wall_s'] / s['interleaved']['wall_s']:.2f}x; "
              f"same features: {s['buffered']['checksum'] == s['interleaved']['checksum']}")
    if args.json:
        for r in result["rounds"]:
            for run in [r["joint"], *r["separate"]]:
                run.pop("stdout", None)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
