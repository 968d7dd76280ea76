"""`evalbench cache list` and `cache clear` with damaged cache metadata: one warning line per
damaged file, naming it, and the other entries still listed."""

from __future__ import annotations

import numpy as np

from evalbench.cache import FeatureCache, list_entries
from evalbench.cli import main


def _cache_with_damage(root):
    """One whole feature entry, then a truncated feature manifest, a text classifier whose JSON
    is not an object, and a probe result that is not UTF-8."""
    cache = FeatureCache(root)
    good = cache.features({"model": "m", "task": "t"}, {"model": "m", "task": "cifar10", "split": "test"})
    good.begin(3)
    good.write_shard(0, np.ones((3, 4), dtype=np.float32))
    good.finish(3, 4)
    broken = root / "features" / "0123456789abcdef0123" / "manifest.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"model": "m", "task": "pe', encoding="utf-8")
    (root / "text").mkdir()
    (root / "text" / "k.json").write_text("[1, 2]", encoding="utf-8")
    np.save(root / "text" / "k.npy", np.zeros((2, 4), dtype=np.float32))
    (root / "probes").mkdir()
    (root / "probes" / "p.json").write_bytes(b"\xff\xfe{")
    return broken, root / "text" / "k.json", root / "probes" / "p.json"


def test_cache_list_warns_once_per_damaged_file_and_lists_the_rest(tmp_path, capsys):
    root = tmp_path / "cache"
    damaged = _cache_with_damage(root)
    assert main(["cache", "list", "--cache-dir", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 3
    for path in damaged:
        assert sum(str(path) in line for line in lines) == 1, (path, err)
    assert all(line.startswith("evalbench: ") for line in lines)
    assert "cifar10" in out  # the whole entry is still listed

    rows = list_entries(root)
    assert [r["complete"] for r in rows if r["task"] == "cifar10"] == [True]
    assert sorted(r["kind"] for r in rows if r["model"] is None) == ["features", "probe", "text"]
    assert not any(r["complete"] for r in rows if r["model"] is None)


def test_cache_clear_removes_damaged_entries(tmp_path, capsys):
    root = tmp_path / "cache"
    damaged = _cache_with_damage(root)
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert "removed 4 cache entries" in capsys.readouterr().out
    assert not any(p.exists() for p in damaged)
    assert not (root / "text" / "k.npy").exists()
    assert list_entries(root) == []
