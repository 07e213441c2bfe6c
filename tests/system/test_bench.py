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
