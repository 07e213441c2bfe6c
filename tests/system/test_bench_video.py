"""`d2ov bench MODEL --video CLIP` as a user runs it: the app's pipeline and the plain loop, each in
its own process, one table. No assertion on speed (machines differ): only that both ran every frame,
agree, and say so."""

import json

import pytest

from ..conftest import run_cli
from ..helpers import make_clip
from .test_cli import one_line_error


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("bench_video") / "clip.mp4", frames=12, fps=10)


def test_bench_video_pipeline_against_loop(clip, tmp_path):
    res = run_cli(
        "bench",
        "demo/mask_rcnn_shapes",
        "--video",
        str(clip),
        "--precision",
        "INT8",
        "--renderer",
        "plain",
        "--warmup",
        "1",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "bench_video.json").read_text())
    assert report["failed"] == [] and report["precision"] == "INT8" and report["renderer"] == "plain"
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"pipeline", "loop"}
    for r in rows.values():
        assert r["frames"] == [12] and r["fps"] > 0 and r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["encoded"]
        a = r["agreement"]
        assert a["frames"] == 12 and a["identical"] == 12 and a["differ"] == 0 and a["detections"] > 0
    assert rows["loop"]["vs_loop"] == 1.0 and rows["pipeline"]["vs_loop"] > 0
    assert "| pipeline |" in res.stdout and "| loop |" in res.stdout and "identical: 12/12 frames" in res.stdout
    assert "DIFFER" not in res.stdout and (tmp_path / "bench_video.md").read_text() in res.stdout


@pytest.mark.parametrize("which", ["missing", "not_a_video"])
def test_bench_video_bad_input_is_one_line(which, tmp_path):
    """Exit code 2 and one line naming the file, before any model is loaded."""
    path = tmp_path / ("no_such.mp4" if which == "missing" else "text.mp4")
    if which == "not_a_video":
        path.write_text("not a video at all\n")
    res = run_cli("bench", "demo/mask_rcnn_shapes", "--video", str(path), timeout=120)
    line = one_line_error(res)
    assert str(path) in line and ("video not found" if which == "missing" else "cannot read video") in line
