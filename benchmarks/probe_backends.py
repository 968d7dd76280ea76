"""Linear-probe backends: the C sweep of scikit-learn vs torch L-BFGS, on the same features.

Times ``evalbench.probe.choose_c`` with ``make_backend('sklearn')`` and ``make_backend('torch')``
on a seeded, structured feature set (class means on a low-dimensional manifold plus noise), then
refits at each backend's chosen C with ``evalbench.probe.linear_probe`` and scores test accuracy.

Target (issue 6): on CPU, torch's sweep is >= 3x faster than scikit-learn's at equal test
accuracy (within 0.3 points). Prints numbers and ratios; asserts nothing.

    .venv/bin/python benchmarks/probe_backends.py                    # 50k x 512, 100 classes
    .venv/bin/python benchmarks/probe_backends.py --n 5000 --classes 20   # a quick run
    .venv/bin/python benchmarks/probe_backends.py --diagnose         # + iterations per fit
    .venv/bin/python benchmarks/probe_backends.py --device cuda      # torch backend on the GPU

Run the full size in the background (``nohup ... > probe.log &``): scikit-learn takes many
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def make_features(n_train: int, n_val: int, n_test: int, dim: int, classes: int, latent: int, noise: float,
                  spread: float, seed: int):
    """Seeded features: each class has a centre on a ``latent``-dim manifold embedded non-linearly
    in ``dim`` dims; samples scatter around their centre along the manifold (``spread``) and off it
    (isotropic ``noise``). Returns float32 (x, y) for train, val, test."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lift = rng.normal(0, 1 / np.sqrt(latent), (latent, dim))
    bend = rng.normal(0, 1 / np.sqrt(dim), (dim, dim))
    centres = rng.normal(0, 1, (classes, latent))

    def draw(n: int, stream: int):
        r = np.random.default_rng([seed, stream])
        y = r.integers(0, classes, n)
        z = centres[y] + spread * r.normal(0, 1, (n, latent))
        h = np.tanh(z @ lift)
        x = h + 0.5 * np.tanh(h @ bend) + noise * r.normal(0, 1, (n, dim))
        return x.astype(np.float32), y.astype(np.int64)

    return draw(n_train, 1), draw(n_val, 2), draw(n_test, 3)


class Counter:
    """Counts loss evaluations of the torch backend: calls of the closure given to L-BFGS."""

    def __init__(self):
        import torch

        self.lbfgs, self.original, self.calls = torch.optim.LBFGS, torch.optim.LBFGS.step, 0

    def __enter__(self):
        counter, original = self, self.original

        def step(opt, closure):
            def counted():
                counter.calls += 1
                return closure()

            return original(opt, counted)

        self.lbfgs.step = step
        return self

    def __exit__(self, *exc):
        self.lbfgs.step = self.original


def run_probe(name: str, train, val, test, classes: int, diagnose: bool, torch_tol: float | None = None,
              device: str = "cpu") -> dict:
    """``linear_probe`` with one backend, timing its ``choose_c`` call (the sweep) apart from the
    refit; with ``diagnose``, also each fit's time and iterations (loss evaluations for torch)."""
    import evalbench.probe.sweep as sweep_module
    from evalbench.probe import TorchBackend, linear_probe, make_backend

    # --torch-tol tries another gradient tolerance through the backend's own parameter
    backend = TorchBackend(device=device, tol=torch_tol) if name == "torch" and torch_tol else make_backend(name, device)
    fits, timing = [], {}
    original_fit, original_choose = backend.fit, sweep_module.choose_c

    def fit(x, y, c, init=None):
        t = time.perf_counter()
        with Counter() as counter:
            model = original_fit(x, y, c, init=init)
        its = counter.calls if name == "torch" else int(getattr(model, "n_iter_", [0])[0])
        fits.append({"C": c, "s": round(time.perf_counter() - t, 3), "iters": its})
        unit = "loss evaluations" if name == "torch" else "iterations"
        print(f"  {name} fit C={c:<10.4g} {fits[-1]['s']:7.2f} s {its:5d} {unit}", flush=True)
        return model

    def choose_c(*a, **k):
        t, cpu = time.perf_counter(), time.process_time()
        result = original_choose(*a, **k)
        timing["sweep_s"], timing["sweep_cpu_s"] = time.perf_counter() - t, time.process_time() - cpu
        return result

    if diagnose:
        backend.fit = fit
    sweep_module.choose_c = choose_c
    try:
        t = time.perf_counter()
        probe = linear_probe(train, val, test, classes, "acc1", backend, progress=False)
        total = time.perf_counter() - t
    finally:
        sweep_module.choose_c = original_choose
    val_scores = dict((c, s) for c, s in probe["val_scores"])
    return {"sweep_s": timing["sweep_s"], "sweep_cpu_s": timing["sweep_cpu_s"],
            "evaluations": sum(f["iters"] for f in fits[:-1]), "refit_s": total - timing["sweep_s"], "probe_s": total,
            "fits": len(val_scores), "best_c": probe["C"], "best_val": val_scores[probe["C"]],
            "test_acc1": probe["acc1"], "per_fit": fits}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="training rows (val and test are n/5 each)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--latent", type=int, default=16, help="dimension of the manifold of class centres")
    p.add_argument("--noise", type=float, default=1.0, help="isotropic noise off the manifold")
    p.add_argument("--spread", type=float, default=1.0, help="within-class spread along the manifold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and BLAS threads (same for both)")
    p.add_argument("--backends", default="torch,sklearn", help="comma-separated, in the order run")
    p.add_argument("--diagnose", action="store_true", help="time each fit and count its iterations")
    p.add_argument("--torch-tol", type=float, default=None, help="try TorchBackend(tol=...) (default: evalbench's)")
    p.add_argument("--device", default="cpu", help="device of the torch backend (cuda for GPU numbers)")
    p.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    args = p.parse_args()

    import numpy as np
    import sklearn
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    limits = threadpool_limits(args.threads)  # noqa: F841 - keeps numpy/scipy BLAS at --threads
    n_val = n_test = max(args.n // 5, args.classes)
    t = time.perf_counter()
    train, val, test = make_features(args.n, n_val, n_test, args.dim, args.classes, args.latent, args.noise,
                                     args.spread, args.seed)
    print(f"features: train {train[0].shape}, val {val[0].shape}, test {test[0].shape}, {args.classes} classes "
          f"(made in {time.perf_counter() - t:.1f} s)")
    print(f"threads: {args.threads}; torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
          f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f} at start", flush=True)

    results = {}
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        r = run_probe(name, train, val, test, args.classes, args.diagnose, args.torch_tol, args.device)
        r["load_after"] = os.getloadavg()[0]
        results[name] = r
        print(f"{name:>8}: sweep {r['sweep_s']:7.1f} s ({r['fits']} fits), C={r['best_c']:.4g} "
              f"(val acc1 {100 * r['best_val']:.2f}), CPU {r['sweep_cpu_s']:.1f} s, "
              f"{r['evaluations'] or '?'} {'evaluations' if name == 'torch' else 'iterations'}, refit+test {r['refit_s']:6.1f} s, "
              f"test acc1 {100 * r['test_acc1']:.2f}  [load {r['load_after']:.2f}]", flush=True)

    if {"sklearn", "torch"} <= results.keys():
        s, tch = results["sklearn"], results["torch"]
        speed = s["sweep_s"] / tch["sweep_s"]
        gap = 100 * abs(s["test_acc1"] - tch["test_acc1"])
        ok = speed >= 3 and gap <= 0.3
        print(f"\nsweep speed-up torch vs sklearn: {speed:.2f}x wall, "
              f"{s['sweep_cpu_s'] / tch['sweep_cpu_s']:.2f}x CPU time  [target >= 3x]")
        print(f"whole-probe speed-up (sweep + refit): {s['probe_s'] / tch['probe_s']:.2f}x")
        print(f"test acc1: sklearn {100 * s['test_acc1']:.2f}, torch {100 * tch['test_acc1']:.2f}, "
              f"gap {gap:.2f} points  [target <= 0.3]")
        print(f"target {'MET' if ok else 'MISSED'}")
    if args.json:
        meta = {"args": vars(args), "python": platform.python_version(), "torch": torch.__version__,
                "sklearn": sklearn.__version__, "numpy": np.__version__}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
