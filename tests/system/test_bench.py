"""`d2ov bench` as a user runs it: every variant in its own worker process, one table."""

import json

import pytest

from ..conftest import SAMPLES, run_cli


@pytest.mark.slow
def test_bench_runs_every_variant_and_reports_ratios(tmp_path):
    images = [str(p) for p in sorted(SAMPLES.glob("shapes_*.jpg"))[:2]]
    res = run_cli(
        "bench",
        "demo/faster_rcnn_shapes",
        "--images",
        *images,
        "--runs",
        "1",
        "--warmup",
        "1",
        "--variants",
        "detectron2",
        "ov-fp16w",
        "ov-int8",
        "--out",
        str(tmp_path),
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["failed"] == [] and [r["variant"] for r in report["rows"]] == ["detectron2", "ov-fp16w", "ov-int8"]
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["detectron2"]["speedup_vs_detectron2"] == 1.0
    for r in rows.values():
        assert r["e2e_ms"] > 0 and r["images_per_s"] > 0 and r["samples"] == 2 and r["detections_median"] > 0
    assert "| ov-int8 |" in res.stdout and (tmp_path / "bench.png").stat().st_size > 1000


def test_flops_are_counted_once_per_model_and_image(tmp_path, monkeypatch):
    """The FLOP count (a PyTorch build and trace) is kept in the cache: the same model and image read
    it back; another image is counted; a corrupt record is counted again and replaced."""
    from d2ov_core.measure import bench

    monkeypatch.setenv("D2OV_CACHE", str(tmp_path))
    first, second = (str(p) for p in sorted(SAMPLES.glob("shapes_*.jpg"))[:2])
    counted: list[str] = []
    count = bench._count_gflops
    monkeypatch.setattr(bench, "_count_gflops", lambda m, w, i: counted.append(i) or count(m, w, i))
    g1 = bench.model_gflops("demo/faster_rcnn_shapes", None, first)
    assert 1.0 < g1 < 50.0 and counted == [first]  # a ResNet-18-size FPN at 512 px: a few GFLOPs
    assert bench.model_gflops("demo/faster_rcnn_shapes", None, first) == g1 and counted == [first]
    records = list((tmp_path / "flops").iterdir())
    assert len(records) == 1 and json.loads(records[0].read_text())["gflops"] == g1
    bench.model_gflops("demo/faster_rcnn_shapes", None, second)
    assert counted == [first, second] and len(list((tmp_path / "flops").iterdir())) == 2
    records[0].write_text("{not json")
    assert bench.model_gflops("demo/faster_rcnn_shapes", None, first) == g1 and counted == [first, second, first]
    assert json.loads(records[0].read_text())["gflops"] == g1
    assert not [p for p in (tmp_path / "flops").iterdir() if p.name.startswith(".")]  # no temporary names left
