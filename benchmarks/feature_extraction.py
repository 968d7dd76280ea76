"""Feature extraction: evalbench against CLIP_benchmark 1.6.2 and against a bare encode loop.

Makes its own data and weights, then times whole processes on them (issue 5):

  (a) evalbench, zero-shot alone, cold cache
  (b) CLIP_benchmark 1.6.2, zero-shot on the same data, model, batch size, workers and threads
  (c) evalbench, zero-shot + linear probe in one run, cold cache
  (d) a bare ``model.encode_image`` loop over pre-decoded, pre-processed tensors of every image (c)
      encodes (train + test); only the loop is timed, start-up is reported apart
  (e) evalbench, (c) again with a warm cache and ``--overwrite`` (no model should load)

and prints the ratios against their targets: (a)/(b) <= 0.8, (c)/(d) <= 1.3, (e)/(b) <= 0.3, and
the per-(model, task) work of a cached rerun beyond process start-up <= 2 s. It checks that (a)
and (b) agree on zero-shot acc1. On a CPU only zero-shot can be compared with CLIP_benchmark: its
linear probe asserts CUDA.

``--rss-images N`` adds a peak-RSS run of evalbench over N synthetic 32 px images with a tiny
open_clip config (embed_dim 512, as ViT-B-32), and the cache size per million images in float32
and float16.

CLIP_benchmark's zero-shot code fails with numpy 2.4, so it runs from its own venv
(``--clipbench-venv``, default benchmarks/.venv-clipbench, created on first use with
``torch==2.14.1 torchvision==0.29.1 'numpy<2.4' clip_benchmark==1.6.2 requests``).

    .venv/bin/python benchmarks/feature_extraction.py                          # ViT-B-32, 300+200 images
    .venv/bin/python benchmarks/feature_extraction.py --arch ViT-S-32 --train 120 --test 80   # quick
    .venv/bin/python benchmarks/feature_extraction.py --skip-compare --rss-images 100000

Timings are wall-clock of whole processes, the best of ``--repeat`` interleaved rounds; on a
shared machine read the ratios, next to the load average printed with them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# requests: imported by clip_benchmark.datasets.imagenetv2 at start-up but not declared by 1.6.2
CLIPBENCH_PINS = ["torch==2.14.1", "torchvision==0.29.1", "numpy<2.4", "clip_benchmark==1.6.2", "requests"]
TEMPLATES = ["a photo of a {c}.", "a blurry photo of a {c}.", "a drawing of a {c}.", "a close-up photo of the {c}."]
CLASSNAMES = ["apple", "bridge", "cat", "dolphin", "engine", "forest", "guitar", "harbor", "island", "jacket",
              "kettle", "lantern", "mountain", "notebook", "orchid", "penguin", "quilt", "rocket", "saddle", "tulip"]
TINY_512 = {  # 2-layer width-64 ViT at 32 px with ViT-B-32's embedding width, for the RSS and cache runs
    "embed_dim": 512,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


# --------------------------------------------------------------------------------------------
# data and weights


def make_image(rng, label: int, n_classes: int, min_px: int, max_px: int):
    """A noisy picture whose hue and stripe frequency depend on the class, of random size."""
    import numpy as np
    from PIL import Image

    w, h = (int(v) for v in rng.integers(min_px, max_px + 1, 2))
    hue = np.array([np.sin(label * 2.4), np.sin(label * 2.4 + 2.1), np.sin(label * 2.4 + 4.2)]) * 90 + 128
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin((xx + yy) * (0.05 + 0.3 * label / n_classes))[..., None] * 50
    pixels = hue + stripes + rng.normal(0, 30, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_wds(root: Path, sizes: dict[str, int], classes: int, shards: int, seed: int, min_px: int, max_px: int,
              templates: list[str] = TEMPLATES) -> None:
    """CLIP_benchmark's webdataset layout: SPLIT/nshards.txt, SPLIT/{0..shards-1}.tar of KEY.png +
    KEY.cls, and classnames.txt, zeroshot_classification_templates.txt at the root."""
    import numpy as np

    if (root / "done").is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    names = (CLASSNAMES + [f"thing{i}" for i in range(len(CLASSNAMES), classes)])[:classes]
    (root / "classnames.txt").write_text("\n".join(names) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    (root / "dataset_type.txt").write_text("classification\n")
    for s, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, s])
        (root / split).mkdir()
        (root / split / "nshards.txt").write_text(f"{shards}\n")
        per = (n + shards - 1) // shards
        for shard in range(shards):
            with tarfile.open(root / split / f"{shard}.tar", "w") as tar:
                for i in range(shard * per, min(n, (shard + 1) * per)):
                    label = int(rng.integers(classes))
                    buf = io.BytesIO()
                    make_image(rng, label, classes, min_px, max_px).save(buf, format="PNG")
                    for ext, data in (("png", buf.getvalue()), ("cls", f"{label}\n".encode())):
                        info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    (root / "done").write_text("ok\n")


def write_weights(path: Path, arch: str, seed: int) -> None:
    """A seeded random open_clip model, saved with torch.save(model.state_dict())."""
    import open_clip
    import torch

    if path.is_file():
        return
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)


def write_task(path: Path, name: str, data_root: Path, probe: bool) -> None:
    """A task YAML over the local webdataset folder; classnames and templates come from its files."""
    splits = "{train: train, val: {fraction: 0.2, seed: 0}, test: test}" if probe else "{test: test}"
    path.write_text(
        f"name: {name}\nversion: 1\ndescription: synthetic webdataset for benchmarks/feature_extraction.py\n"
        f"dataset: {{source: webdataset, path: {data_root}}}\nsplits: {splits}\n"
    )


# --------------------------------------------------------------------------------------------
# running things


DEVICE = "cpu"  # set from --device in main(); CLIP_benchmark takes CUDA whenever it sees one


def env(threads: int) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
         "OPENBLAS_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    e.pop("EVALBENCH_CACHE", None)
    if DEVICE == "cpu":
        e["CUDA_VISIBLE_DEVICES"] = ""
    return e


def timed(cmd: list[str], threads: int, label: str, log_dir: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time; wall seconds, peak RSS (MB, largest process), load."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = label.replace(" ", "_").replace("/", "_")
    rusage = log_dir / f"{stem}.time"
    full = ["/usr/bin/time", "-f", "%e %M", "-o", str(rusage), *cmd] if Path("/usr/bin/time").exists() else cmd
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(full, env=env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    (log_dir / f"{stem}.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode:
        sys.exit(f"{label} failed (exit {proc.returncode}); see {log_dir / (stem + '.log')}\n{proc.stderr[-3000:]}")
    rss = None
    if rusage.is_file():
        rss = int(rusage.read_text().split()[-1]) / 1024
    return {"wall_s": wall, "rss_mb": rss, "load": load, "stdout": proc.stdout}


def ensure_clipbench(venv: Path) -> Path:
    """CLIP_benchmark 1.6.2 in its own venv (its zero-shot code needs numpy < 2.4)."""
    exe = venv / "bin" / "clip_benchmark"
    if not exe.is_file():
        print(f"creating {venv} for CLIP_benchmark 1.6.2 (a few minutes) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *CLIPBENCH_PINS], check=True)
    return exe


def evalbench_cmd(args, model: str, task: Path, mode: str, results: Path, cache: Path, extra=()) -> list[str]:
    return [sys.executable, "-m", "evalbench", "run", "--model", model, "--tasks", str(task), "--mode", mode,
            "--results-dir", str(results), "--cache-dir", str(cache), "--batch-size", str(args.batch_size),
            "--workers", str(args.workers), "--device", DEVICE, "--no-progress", *extra]


def read_record(results: Path) -> dict:
    paths = [p for p in results.rglob("*.json")]
    if len(paths) != 1:
        sys.exit(f"expected one record under {results}, found {len(paths)}")
    return json.loads(paths[0].read_text())


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------------------
# in-process helpers, run as child processes of this script


def bare_loop(args) -> None:
    """(d): decode and preprocess every train+test image first, then time only encode_image."""
    t0 = time.perf_counter()
    import open_clip
    import torch

    from evalbench.models.checkpoint import read_state_dict  # noqa: F401 - same import cost as evalbench

    torch.set_num_threads(args.threads)
    t_import = time.perf_counter() - t0
    t = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(args.arch, pretrained=None)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model.eval().to(args.device)
    t_model = time.perf_counter() - t
    t = time.perf_counter()
    from PIL import Image

    pixels = []
    for split in ("train", "test"):
        for tar_path in sorted((Path(args.data) / split).glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if member.name.endswith(".png"):
                        image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                        pixels.append(preprocess(image))
    pixels = torch.stack(pixels)
    t_decode = time.perf_counter() - t
    cuda = args.device.startswith("cuda")
    with torch.inference_mode():
        model.encode_image(pixels[:2].to(args.device))  # first-call allocations, outside the timed loop
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, len(pixels), args.batch_size):  # host-to-device copies count, as in evalbench
            model.encode_image(pixels[i : i + args.batch_size].to(args.device))
        if cuda:
            torch.cuda.synchronize()
        t_loop = time.perf_counter() - t
    print(json.dumps({"images": len(pixels), "import_s": t_import, "model_s": t_model, "decode_s": t_decode,
                      "loop_s": t_loop}))


def cached_inprocess(args) -> None:
    """(e) again, in one process: start-up (interpreter, torch and evalbench.cli imports) timed
    apart from the work of ``evalbench.cli.main``; optionally under cProfile."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    import evalbench.cli

    t_import = time.perf_counter() - t0
    argv = json.loads(args.argv)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.runcall(evalbench.cli.main, argv)
        t_main = time.perf_counter() - t
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue(), file=sys.stderr)
    else:
        t = time.perf_counter()
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull
            evalbench.cli.main(argv)
            sys.stdout = stdout
        t_main = time.perf_counter() - t
    print(json.dumps({"import_s": t_import, "main_s": t_main}))


# --------------------------------------------------------------------------------------------
# the benchmark


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{os.cpu_count()} cores, {cpu}"


def versions(clipbench_python: Path | None) -> dict:
    import open_clip
    import sklearn
    import torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "open_clip": open_clip.__version__,
           "sklearn": sklearn.__version__}
    if clipbench_python:
        code = ("import importlib.metadata as m; print(m.version('clip_benchmark'), m.version('open_clip_torch'), "
                "m.version('numpy'), m.version('torch'))")
        cb = subprocess.run([str(clipbench_python), "-c", code], capture_output=True, text=True).stdout.split()
        out.update(clip_benchmark=cb[0], clipbench_open_clip=cb[1], clipbench_numpy=cb[2], clipbench_torch=cb[3])
    return out


def compare(args, work: Path) -> dict:
    data = work / f"wds-{args.train}-{args.test}-{args.classes}"
    write_wds(data, {"train": args.train, "test": args.test}, args.classes, args.shards, args.seed,
              args.min_px, args.max_px)
    weights = work / f"{args.arch}-seed{args.seed}.pt"
    write_weights(weights, args.arch, args.seed)
    zs_task, both_task = work / "bench-zs.yaml", work / "bench-both.yaml"
    write_task(zs_task, "bench-zs", data, probe=False)
    write_task(both_task, "bench-both", data, probe=True)
    model = f"{args.arch}@{weights}"
    cb_exe = ensure_clipbench(Path(args.clipbench_venv))
    logs = work / "logs"
    runs: dict[str, list[dict]] = {k: [] for k in "abcde"}
    acc = {}
    for r in range(args.repeat):
        tag = f"round{r}"
        res, cache = fresh(work / "out" / "a"), fresh(work / "cache-a")
        run = timed(evalbench_cmd(args, model, zs_task, "zeroshot", res, cache), args.threads, f"{tag} a", logs)
        acc["a"] = read_record(res)["results"]["zeroshot"]
        runs["a"].append(run)

        out_json = work / "out" / "b.json"
        out_json.unlink(missing_ok=True)
        # CLIP_benchmark resolves wds/NAME to --dataset_root as given (no download when local).
        cmd = [str(cb_exe), "eval", "--dataset", "wds/bench", "--dataset_root", str(data), "--model", args.arch,
               "--pretrained", str(weights), "--task", "zeroshot_classification", "--batch_size",
               str(args.batch_size), "--num_workers", str(args.workers), "--no_amp", "--split", "test",
               "--output", str(out_json)]
        run = timed(cmd, args.threads, f"{tag} b", logs)
        acc["b"] = json.loads(out_json.read_text())["metrics"]
        runs["b"].append(run)

        res, cache = fresh(work / "out" / "c"), fresh(work / "cache-c")
        run = timed(evalbench_cmd(args, model, both_task, "zeroshot,linear_probe", res, cache), args.threads,
                    f"{tag} c", logs)
        record = read_record(res)
        run["model_loaded"] = record["provenance"]["model_loaded"]
        run["probe_s"] = record["results"]["linear_probe"]["duration_s"]
        run["encoded"] = record["results"]["linear_probe"]["n_train"] + record["results"]["linear_probe"]["n_val"] \
            + record["results"]["linear_probe"]["n"]
        runs["c"].append(run)

        cmd = [sys.executable, __file__, "--_bare-loop", "--arch", args.arch, "--weights", str(weights), "--data",
               str(data), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--device", DEVICE]
        run = timed(cmd, args.threads, f"{tag} d", logs)
        run.update(json.loads(run["stdout"].strip().splitlines()[-1]))
        runs["d"].append(run)

        cmd = evalbench_cmd(args, model, both_task, "zeroshot,linear_probe", res, cache, ["--overwrite"])
        run = timed(cmd, args.threads, f"{tag} e", logs)
        record = read_record(res)
        run["model_loaded"] = record["provenance"]["model_loaded"]
        run["record_duration_s"] = record["provenance"]["duration_s"]
        run["probe_s"] = record["results"]["linear_probe"]["duration_s"]
        inproc = [sys.executable, __file__, "--_cached-inprocess", "--argv", json.dumps(cmd[3:])]
        run.update(json.loads(timed(inproc, args.threads, f"{tag} e-inprocess", logs)["stdout"].strip()
                              .splitlines()[-1]))
        runs["e"].append(run)
        print(f"round {r}: " + ", ".join(f"({k}) {v[-1]['wall_s']:.1f} s" for k, v in runs.items())
              + f"  [load {os.getloadavg()[0]:.2f}]", flush=True)

    if args.profile:
        inproc = [sys.executable, __file__, "--_cached-inprocess", "--profile", "--argv", json.dumps(cmd[3:])]
        prof = subprocess.run(inproc, env=env(args.threads), capture_output=True, text=True)
        (logs / "e-profile.txt").write_text(prof.stderr)
        print(f"cProfile of the cached rerun: {logs / 'e-profile.txt'}")
    best = {k: min(v, key=lambda run: run["wall_s"]) for k, v in runs.items()}
    best["d"] = min(runs["d"], key=lambda run: run["loop_s"])  # (d) is the loop alone
    best["e"] = {**best["e"], "main_s": min(run["main_s"] for run in runs["e"]),
                 "import_s": min(run["import_s"] for run in runs["e"])}
    return {"best": best, "runs": runs, "acc": acc, "data": str(data), "weights": str(weights),
            "weights_mb": weights.stat().st_size / 2**20}


def report_compare(args, c: dict) -> None:
    b, acc = c["best"], c["acc"]
    a_, b_, c_, d_, e_ = (b[k]["wall_s"] for k in "abcde")
    d = b["d"]
    print(f"\n== {args.arch}, {args.train} train + {args.test} test images, {args.classes} classes, batch "
          f"{args.batch_size}, {args.workers} workers, {args.threads} threads; best of {args.repeat} ==")
    print(f"(a) evalbench zero-shot, cold cache      {a_:7.1f} s   peak RSS {b['a']['rss_mb']:.0f} MB")
    print(f"(b) CLIP_benchmark 1.6.2 zero-shot       {b_:7.1f} s   peak RSS {b['b']['rss_mb']:.0f} MB")
    print(f"(c) evalbench zero-shot + probe, cold    {c_:7.1f} s   ({b['c']['encoded']} images encoded; "
          f"linear probe {b['c'].get('probe_s', float('nan')):.1f} s of it)")
    print(f"(d) bare encode_image loop               {d['loop_s']:7.1f} s   over {d['images']} images "
          f"({d['images'] / d['loop_s']:.1f} img/s); start-up apart: imports {d['import_s']:.1f} s, "
          f"model {d['model_s']:.1f} s, decode+preprocess {d['decode_s']:.1f} s; whole process {d_:.1f} s")
    print(f"(e) evalbench (c) rerun, warm cache      {e_:7.1f} s   model_loaded={b['e']['model_loaded']}, "
          f"record duration_s {b['e']['record_duration_s']:.2f} (linear probe {b['e'].get('probe_s', float('nan')):.1f} s)")
    same = abs(acc["a"]["acc1"] - acc["b"]["acc1"]) < 1e-9
    print(f"\nzero-shot acc1: evalbench {acc['a']['acc1']:.4f}, CLIP_benchmark {acc['b']['acc1']:.4f} "
          f"-> {'SAME' if same else 'DIFFERENT'}; acc5 {acc['a'].get('acc5', float('nan')):.4f} vs "
          f"{acc['b'].get('acc5', float('nan')):.4f}; mean per-class recall "
          f"{acc['a'].get('mean_per_class_recall', float('nan')):.4f} vs "
          f"{acc['b'].get('mean_per_class_recall', float('nan')):.4f}")
    work = b["e"]["main_s"]
    rows = [("(a)/(b)", a_ / b_, 0.8), ("(c)/(d)", c_ / d["loop_s"], 1.3), ("(e)/(b)", e_ / b_, 0.3),
            ("cached rerun work beyond start-up [s]", work, 2.0)]
    print()
    for name, value, target in rows:
        print(f"{name:<40} {value:7.2f}   target <= {target:<4}  {'met' if value <= target else 'MISSED'}")
    print(f"  (start-up of the cached rerun: torch + evalbench.cli imports {b['e']['import_s']:.1f} s)")
    print("linear probe vs CLIP_benchmark: not comparable on CPU (CLIP_benchmark's linear probe asserts CUDA)")


def rss_run(args, work: Path) -> dict:
    """Peak RSS of evalbench zero-shot over ``--rss-images`` 32 px images with a tiny config, and
    the cache size per million images in float32 and float16."""
    n = args.rss_images
    data = work / f"wds-rss-{n}"
    t = time.perf_counter()
    write_wds(data, {"test": n}, args.classes, max(args.workers, 8), args.seed, 32, 32)
    made = time.perf_counter() - t
    arch = work / "tiny512.json"
    arch.write_text(json.dumps(TINY_512))
    task = work / "bench-rss.yaml"
    write_task(task, "bench-rss", data, probe=False)
    out = {}
    for dtype, limit in (("float32", None), ("float16", args.rss_f16_images)):
        res, cache = fresh(work / "out" / f"rss-{dtype}"), fresh(work / f"cache-rss-{dtype}")
        extra = ["--cache-dtype", dtype] + (["--limit", str(limit)] if limit and limit < n else [])
        sub = argparse.Namespace(**{**vars(args), "batch_size": args.rss_batch_size})
        run = timed(evalbench_cmd(sub, str(arch), task, "zeroshot", res, cache, extra), args.threads,
                    f"rss {dtype}", work / "logs")
        shards = list((cache / "features").rglob("shard-*.npy"))
        manifest = json.loads(next((cache / "features").rglob("manifest.json")).read_text())
        size = sum(p.stat().st_size for p in shards)
        run.update(rows=manifest["n"], dim=manifest["dim"], bytes=size, per_million_gb=size / manifest["n"] * 1e6 / 1e9)
        out[dtype] = run
    out["made_s"] = made
    return out


def report_rss(args, r: dict) -> None:
    f32, f16 = r["float32"], r["float16"]
    print(f"\n== peak RSS: evalbench zero-shot over {f32['rows']} images of 32 px, tiny open_clip (embed_dim "
          f"{f32['dim']}), batch {args.rss_batch_size}, {args.workers} workers ==")
    print(f"wall {f32['wall_s']:.1f} s ({f32['rows'] / f32['wall_s']:.0f} img/s), peak RSS of the largest process "
          f"{f32['rss_mb']:.0f} MB  [load {f32['load']:.2f}]; data made in {r['made_s']:.0f} s")
    for dtype, run in (("float32", f32), ("float16", f16)):
        print(f"cache {dtype}: {run['bytes'] / 2**20:.1f} MB for {run['rows']} rows x {run['dim']} -> "
              f"{run['per_million_gb']:.2f} GB per million images")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-32", help="open_clip architecture of the random model")
    p.add_argument("--train", type=int, default=300, help="train images (val is 20%% of them)")
    p.add_argument("--test", type=int, default=200, help="test images")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shards", type=int, default=4, help="shards per split (>= --workers for CLIP_benchmark)")
    p.add_argument("--min-px", type=int, default=64)
    p.add_argument("--max-px", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64, help="both tools")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers, both tools")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, every process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda, for every tool (CUDA is hidden on cpu)")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the best of each is reported")
    p.add_argument("--profile", action="store_true", help="cProfile the cached rerun (e)")
    p.add_argument("--skip-compare", action="store_true", help="only the --rss-images run")
    p.add_argument("--rss-images", type=int, default=0, help="also measure peak RSS over this many images")
    p.add_argument("--rss-f16-images", type=int, default=10_000, help="rows of the float16 cache-size run")
    p.add_argument("--rss-batch-size", type=int, default=256)
    p.add_argument("--work-dir", default=str(HERE / ".work"), help="data, weights, caches, logs")
    p.add_argument("--clipbench-venv", default=str(HERE / ".venv-clipbench"))
    p.add_argument("--json", default=None, help="also write every measurement here")
    # children of this script
    p.add_argument("--_bare-loop", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_cached-inprocess", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--argv", help=argparse.SUPPRESS)
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    if args._bare_loop:
        return bare_loop(args)
    if args._cached_inprocess:
        return cached_inprocess(args)
    if args.shards < args.workers:
        p.error("--shards must be >= --workers (CLIP_benchmark finds no samples otherwise)")

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cb_python = None if args.skip_compare else Path(args.clipbench_venv) / "bin" / "python"
    if cb_python:
        ensure_clipbench(Path(args.clipbench_venv))
    print(f"machine: {machine()}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"versions: {json.dumps(versions(cb_python))}", flush=True)
    result = {"machine": machine(), "args": vars(args)}
    if not args.skip_compare:
        result["compare"] = compare(args, work)
        report_compare(args, result["compare"])
    if args.rss_images:
        result["rss"] = rss_run(args, work)
        report_rss(args, result["rss"])
    if args.json:
        for runs in result.get("compare", {}).get("runs", {}).values():
            for run in runs:
                run.pop("stdout", None)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
