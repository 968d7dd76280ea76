"""The torch L-BFGS backend against scikit-learn, k-shot probes, and `evalbench probe`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from evalbench.cli import main
from evalbench.errors import EvalbenchError
from evalbench.probe import choose_c, few_shot_probe, linear_probe, make_backend
from evalbench.probe.sweep import draw_shots


def structured(n: int, dim: int = 32, classes: int = 8, seed: int = 0):
    """Class means on a low-dimensional manifold plus noise: a probe problem with overlap."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, dim))
    means = rng.normal(size=(classes, 4)) @ basis
    y = rng.integers(0, classes, n)
    return (means[y] + rng.normal(scale=2.0, size=(n, dim))).astype(np.float32), y


@pytest.fixture(autouse=True)
def one_thread():
    """Small problems: one thread each for BLAS and torch (two threads only add waiting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def problem():
    x, y = structured(2400)
    return (x[:1200], y[:1200]), (x[1200:1600], y[1200:1600]), (x[1600:], y[1600:])


@pytest.mark.parametrize("kind", ["multiclass", "binary"])
def test_torch_matches_sklearn_within_0_3_points(problem, kind):
    train, val, test = problem
    if kind == "binary":
        train, val, test = ((x, (y >= 4).astype(np.int64)) for x, y in (train, val, test))
    n_classes = 8 if kind == "multiclass" else 2
    with threadpool_limits(1):
        ref = linear_probe(train, val, test, n_classes, "acc1", make_backend("sklearn"), progress=False)
        got = linear_probe(train, val, test, n_classes, "acc1", make_backend("torch"), progress=False)
    assert abs(got["acc1"] - ref["acc1"]) <= 0.003
    assert got["backend"] == "torch" and ref["backend"] == "sklearn"
    # The same C grid is walked: both record validation scores at the same C values.
    assert {round(np.log10(c) * 8) for c, _ in got["val_scores"]} & {round(np.log10(c) * 8) for c, _ in ref["val_scores"]}


def objective(x, y, weight, bias, c) -> float:
    """scikit-learn's multinomial objective, divided by n, in float64."""
    z = x.astype(np.float64) @ weight + bias
    z -= z.max(axis=1, keepdims=True)
    log_p = z[np.arange(len(z)), y] - np.log(np.exp(z).sum(axis=1))
    return float((-log_p.sum() + (weight * weight).sum() / (2 * c)) / len(z))


@pytest.mark.parametrize("c", [0.05, 1.0])
def test_torch_solves_the_same_objective(problem, c):
    """At a fixed C the torch solution is at scikit-learn's optimum (found with a tight tolerance):
    within 0.2% of it, or twice the distance of scikit-learn's own default stopping point (both
    stop at a gradient of 1e-4)."""
    from sklearn.linear_model import LogisticRegression

    (x, y), _, _ = problem
    with threadpool_limits(1):
        tight = LogisticRegression(C=c, tol=1e-10, max_iter=10000).fit(x, y)
        default = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    torch_model = make_backend("torch").fit(x, y, c=c)
    best = objective(x, y, tight.coef_.T, tight.intercept_, c)
    got = objective(x, y, torch_model.weight.numpy().astype(np.float64), torch_model.bias.numpy().astype(np.float64), c)
    sk_gap = objective(x, y, default.coef_.T, default.intercept_, c) - best
    assert 0 <= got - best + 1e-12 and got - best <= max(2e-3 * best, 2 * sk_gap)


def test_warm_start_reaches_the_cold_solution(problem):
    (x, y), _, _ = problem
    th = make_backend("torch")
    as_np = lambda m: (m.weight.numpy().astype(np.float64), m.bias.numpy().astype(np.float64))  # noqa: E731
    cold = objective(x, y, *as_np(th.fit(x, y, c=1.0)), 1.0)
    warm = objective(x, y, *as_np(th.fit(x, y, c=1.0, init=th.fit(x, y, c=0.01))), 1.0)
    assert abs(warm - cold) <= 1e-4 * cold


def test_sweep_uses_the_torch_backend(problem):
    train, val, _ = problem
    sweep = choose_c(*train, *val, n_classes=8, backend=make_backend("torch"), progress=False)
    assert 1e-6 <= sweep.best_c <= 1e6 and len(sweep.scores) >= 13


def test_draws_are_k_per_class_and_disjoint(problem):
    train, val, test = problem
    names = [f"c{i}" for i in range(8)]
    rows = draw_shots(train[1], 4, np.random.default_rng([0, 0]), names, "train")
    assert np.bincount(train[1][rows], minlength=8).tolist() == [4] * 8
    result = few_shot_probe(train, val, test, names, "acc1", k=4, seeds=3, progress=False)
    assert [r["seed"] for r in result["runs"]] == [0, 1, 2]
    accs = [r["acc1"] for r in result["runs"]]
    assert result["acc1"] == pytest.approx(np.mean(accs)) and result["acc1_std"] == pytest.approx(np.std(accs))
    assert result["n_train"] == 32 and result["n_val"] == 32 and result["n"] == len(test[1])
    assert len(set(accs)) > 1, "different seeds draw different shots"


def test_too_few_examples_names_the_class(problem):
    train, val, test = problem
    x, y = train
    keep = (y != 3) | (np.cumsum(y == 3) <= 2)  # leave class 3 with two examples
    names = [f"c{i}" for i in range(8)]
    with pytest.raises(EvalbenchError, match="class 'c3' has 2 train examples, fewer than 4"):
        few_shot_probe((x[keep], y[keep]), val, test, names, "acc1", k=4, seeds=1, progress=False)


def test_probe_command_on_an_npz(tmp_path, problem, capsys):
    (xtr, ytr), (xva, yva), (xte, yte) = problem
    with_val = tmp_path / "with_val.npz"
    np.savez(with_val, x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    assert main(["probe", "--features", str(with_val), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    direct = linear_probe((xtr, ytr), (xva, yva), (xte, yte), 8, "acc1", progress=False)
    assert out["acc1"] == pytest.approx(direct["acc1"]) and out["C"] == pytest.approx(direct["C"])
    assert out["n_val"] == 400

    no_val = tmp_path / "no_val.npz"
    np.savez(no_val, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    assert main(["probe", "--features", str(no_val), "--json", "--shots", "2", "--seeds", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["k"] == 2 and len(out["runs"]) == 2

    assert main(["probe", "--features", str(no_val), "--json", "--backend", "torch"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_val"] == 240 and out["n_train"] == 960  # a seeded 20% of train

    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=xtr, y_train=ytr)
    assert main(["probe", "--features", str(bad)]) == 2
    assert "x_test: missing array" in capsys.readouterr().err


def test_run_records_few_shot_and_normalisation(tmp_path, tiny_arch, task_dir):
    from evalbench.records import read_record

    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks-dir", str(task_dir), "--tasks", "colours-folder",
               "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress",
               "--mode", "linear_probe", "--shots", "1,2", "--seeds", "2", "--probe-normalize"])
    assert rc == 0
    results = read_record(tmp_path / "r" / "tiny" / "colours-folder.json")["results"]
    assert set(results) == {"linear_probe@1", "linear_probe@2"}
    assert results["linear_probe@2"]["normalize"] is True and len(results["linear_probe@2"]["runs"]) == 2
