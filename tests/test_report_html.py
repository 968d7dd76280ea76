"""The html report: self-contained, and working in a real browser (headless Chromium): every model
and task present, a header click reorders rows, the plots decode. Without matplotlib it still
renders, saying why there are no plots."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_report_fixtures import mode_result, plus_right, record, wrong_class

from evalbench.errors import EvalbenchError
from evalbench.report import build_report, render
from evalbench.report.plots import write_plots
from evalbench.tasks.loader import SuiteSpec

N, C = 120, 6
MODELS = ["base", "mid", "top", "zz-partial"]
TASKS = ["alpha", "beta"]
SUITES = {"both": SuiteSpec(name="both", tasks=TASKS)}
# alpha correct counts per model; the name order is not the score order, so sorting shows
RIGHT = {"alpha": {"base": 60, "mid": 90, "top": 75, "zz-partial": 100}, "beta": {"base": 50, "mid": 40, "top": 70}}


@pytest.fixture(scope="module")
def records():
    y = np.arange(N) % C
    out = []
    for model in MODELS:
        results = {}
        for task in TASKS:
            if model not in RIGHT[task]:
                continue
            pred = plus_right(y, wrong_class(y, C), RIGHT[task][model], C)
            results[task] = {"zeroshot": mode_result(y, pred, C),
                             "linear_probe": mode_result(y, plus_right(y, pred, 10, C), C)}
        for task, res in results.items():
            out.append(record(model, task, res))
    return out


@pytest.fixture(scope="module")
def page(records, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render(records, SUITES, "html", baseline="base"), encoding="utf-8")
    return path


def test_html_is_self_contained(page):
    text = page.read_text()
    assert not re.search(r'(?:src|href)="(?!data:|#)', text), "no external resources"
    assert "<style>" in text and "<script>" in text and "<link" not in text
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(pngs) == 5  # bars per mode (2), zero-shot vs probe, forest per mode (2)
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)
    assert 'class="pos sig"' in text  # mid and top beat base on alpha by 30 and 15 of 120
    assert 'class="neg' in text  # mid is worse on beta


def test_html_without_matplotlib(records, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    text = render(records, SUITES, "html", baseline="base")
    assert 'id="no-plots"' in text and "<img" not in text
    assert all(m in text for m in MODELS)
    with pytest.raises(EvalbenchError, match="--plots: needs matplotlib"):
        write_plots(build_report(records, SUITES, "base"), tmp_path / "plots")


def test_plots_folder(records, tmp_path):
    written = write_plots(build_report(records, SUITES, "base"), tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert names == ["deltas-linear_probe.png", "deltas-zeroshot.png", "scores-linear_probe.png",
                     "scores-zeroshot.png", "zeroshot-vs-linear-probe.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    message = "chromium not installed (.ci/run installs Debian's chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)  # in CI the browser check must run, not skip
    pytest.skip(message)


def _dump_dom(url: str, tmp_path) -> str:
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(dom: str, table_id: str) -> list[str]:
    table = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', dom, re.S).group(1)
    return re.findall(r'<tr data-model="([^"]+)"', table)


def _body(dom: str) -> dict:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body([^>]*)>", dom).group(1)))


@pytest.mark.parametrize(
    "table, column, direction, expected",
    [
        # alpha, best first: zz-partial 100, mid 90, top 75, base 60
        ("scores-zeroshot", "alpha", "desc", ["zz-partial", "mid", "top", "base"]),
        # the second click of the same handler flips the order
        ("scores-zeroshot", "alpha", "asc", ["base", "top", "mid", "zz-partial"]),
        # beta deltas: top +20, mid -10; zz-partial has no beta, gaps sort last
        ("deltas-zeroshot", "beta", "desc", ["top", "mid", "zz-partial"]),
    ],
)
def test_browser_sorts_on_header_click(page, tmp_path, table, column, direction, expected):
    dom = _dump_dom(f"{page.as_uri()}#sort={table}:{column}:{direction}", tmp_path)
    body = _body(dom)
    assert body.get("data-sorted-by") == f"{table}:{column}:{'descending' if direction == 'desc' else 'ascending'}"
    assert _rows(dom, table) == expected
    assert _rows(dom, table) != _rows(page.read_text(), table)  # the click changed the order


def test_browser_shows_every_model_task_and_plot(page, tmp_path):
    dom = _dump_dom(page.as_uri(), tmp_path)
    assert sorted(_rows(dom, "scores-zeroshot")) == MODELS
    assert sorted(_rows(dom, "scores-linear_probe")) == MODELS
    for task in TASKS:
        assert f'data-key="{task}"' in dom
    body = _body(dom)
    assert int(body["data-plots-total"]) == 5
    assert body["data-plots-loaded"] == body["data-plots-total"]
    widths = re.findall(r'data-natural-width="(\d+)"', dom)
    assert len(widths) == 5 and all(int(w) > 0 for w in widths)
    assert "data-sorted-by" not in body  # no hash, no sorting
