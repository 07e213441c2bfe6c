"""Video in and out (runtime/video.py) and the predictor's frame pipeline: real H.264 files encoded
and decoded with PyAV, the bundled demo model."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from d2ov_core.errors import InputError
from d2ov_core.runtime.predictor import Predictor
from d2ov_core.runtime.video import Frame, VideoWriter, read_frames, video_info
from d2ov_core.store.lookup import bundled_ir

from ..helpers import make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("video") / "clip.mp4", frames=12, fps=10)


def test_written_video_reads_back_frame_by_frame(clip):
    info = video_info(clip)
    # shapes_1.jpg is 302x419: yuv420p needs even sizes, so the last row is dropped
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (12, 10.0, 302, 418)
    frames = list(read_frames(clip))
    assert [f.number for f in frames] == list(range(12))
    assert [round(f.time_s, 3) for f in frames] == [round(i / 10, 3) for i in range(12)]
    assert all(f.rgb.shape == (418, 302, 3) and f.rgb.dtype == np.uint8 for f in frames)
    # lossy, but the content moves 8 px a frame: frame 1 is frame 0 shifted, not a copy
    a, b = frames[0].rgb.astype(int), frames[1].rgb.astype(int)
    assert np.abs(np.roll(a, 8, axis=1)[:, 16:] - b[:, 16:]).mean() < 4 < np.abs(a - b).mean()


def test_every_and_max_frames(clip):
    assert [f.number for f in read_frames(clip, every=5)] == [0, 5, 10]
    assert [f.number for f in read_frames(clip, every=2, max_frames=3)] == [0, 2, 4]
    with pytest.raises(InputError, match="every must be >= 1"):
        next(read_frames(clip, every=0))


def test_bad_files_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(InputError, match="cannot read video .*garbage.mp4"):
        list(read_frames(garbage))
    with pytest.raises(InputError, match="video not found"):
        list(read_frames(tmp_path / "none.mp4"))
    audio_only = tmp_path / "audio.mp4"
    import av

    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            c.mux(p)
    with pytest.raises(InputError, match="no video stream"):
        list(read_frames(audio_only))


def test_truncated_video_yields_what_decodes_then_names_the_frame(clip, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    got: list[int] = []
    try:
        got.extend(f.number for f in read_frames(cut))
    except InputError as e:  # either a clean end or a one-line error: never a traceback from FFmpeg
        assert "\n" not in str(e) and "cut.mp4" in str(e)
    assert len(got) < 12


def test_writer_leaves_nothing_under_the_final_name_on_error(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(out, fps=5) as w:
        w.write(np.zeros((64, 64, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="frame 1 is 32x32"), VideoWriter(out, fps=5) as w:
        w.write(np.zeros((64, 64, 3), np.uint8))
        w.write(np.zeros((32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_predict_video_equals_predict_on_the_decoded_frames(clip):
    """The pipeline (requests in flight) gives, frame for frame, exactly what predict() gives."""
    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "INT8"))
    frames = {f.number: f.rgb for f in read_frames(clip)}
    results = list(pred.predict_video(clip, every=3))
    assert [(n, round(t, 3)) for n, t, _ in results] == [(0, 0.0), (3, 0.3), (6, 0.6), (9, 0.9)]
    for n, _, det in results:
        ref = pred.predict(frames[n])
        assert len(det) == len(ref) > 5
        assert np.array_equal(det.boxes, ref.boxes) and np.array_equal(det.scores, ref.scores)
        assert np.array_equal(det.masks, ref.masks)
    # plain images through stream(): numbered in order
    plain = list(pred.stream([frames[0], frames[1]]))
    assert [n for n, _, _ in plain] == [0, 1] and np.array_equal(plain[1][2].boxes, pred.predict(frames[1]).boxes)
    assert isinstance(next(pred.stream_frames([Frame(7, 0.7, frames[0])]))[0], Frame)


def _write_raw(path, frames, pts_s, rotation=0):
    """An H.264 MP4 written with PyAV directly: given frames at given times (s), optional display rotation."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for rgb, t in zip(frames, pts_s):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), stream.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.mark.parametrize("rotation,turns", [(90, 1), (-90, 3), (180, 2)])
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation, turns):
    """A phone's portrait video is stored landscape with a display rotation: frames come out as a player
    shows them (as images follow EXIF)."""
    stored = next(read_frames(make_clip(tmp_path / "c.mp4", frames=1))).rgb
    path = _write_raw(tmp_path / "r.mp4", [stored], [0.0], rotation=rotation)
    (frame,) = read_frames(path)
    want, wrong = np.rot90(stored, turns), np.rot90(stored, turns + 2)  # wrong: turned the other way
    assert frame.rgb.shape == want.shape
    # encoded twice (the clip, then this file): a few levels of codec loss, far from the wrong turn
    assert (
        np.abs(frame.rgb.astype(int) - want.astype(int)).mean()
        < 8
        < 20
        < np.abs(frame.rgb.astype(int) - wrong.astype(int)).mean()
    )


def test_variable_frame_rate_times_are_the_frames_own(tmp_path):
    rgb = next(read_frames(make_clip(tmp_path / "c.mp4", frames=1))).rgb
    times = [0.0, 0.04, 0.5, 0.52, 1.7]
    path = _write_raw(tmp_path / "vfr.mp4", [np.roll(rgb, 8 * i, axis=1) for i in range(5)], times)
    assert [round(f.time_s, 3) for f in read_frames(path)] == times


def test_long_videos_are_capped_and_the_summary_says_so(clip, tmp_path, monkeypatch):
    """The app's cap (D2OV_MAX_VIDEO_SECONDS): only the first seconds are decoded and processed, the
    rendered video has just those frames, and the summary tells the person why it is shorter."""
    from d2ov_core.serve.handlers import max_video_seconds
    from d2ov_core.serve.video import process_video

    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "INT8"))
    run = process_video(pred, clip, tmp_path / "out.mp4", every=2, max_seconds=0.5)
    assert [r["frame"] for r in run.records] == [0, 2]  # 0.5 s at 10 frames/s, every 2nd frame
    assert video_info(tmp_path / "out.mp4")["frames"] == 2
    assert run.summary("clip.mp4").endswith("only the first 0.5 s were processed (longer inputs are capped)")
    full = process_video(pred, clip, None, every=4, max_seconds=60)
    assert [r["frame"] for r in full.records] == [0, 4, 8] and "capped" not in full.summary("clip.mp4")
    monkeypatch.setenv("D2OV_MAX_VIDEO_SECONDS", "ten")
    with pytest.raises(InputError, match="D2OV_MAX_VIDEO_SECONDS must be a number of seconds, got 'ten'"):
        max_video_seconds()
    monkeypatch.setenv("D2OV_MAX_VIDEO_SECONDS", "0")
    with pytest.raises(InputError, match="must be > 0"):
        max_video_seconds()


def test_a_4k_frame_goes_through_at_its_size(tmp_path):
    """A 3840x2160 video: decoded, detected and drawn at its size (boxes in its pixels)."""
    from d2ov_core.serve.video import process_video

    small = next(read_frames(make_clip(tmp_path / "c.mp4", frames=1))).rgb
    big = np.ascontiguousarray(np.kron(small[:216, :302], np.ones((10, 13, 1), np.uint8))[:2160, :3840])
    with VideoWriter(tmp_path / "4k.mp4", fps=10) as w:
        w.write(big)
    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "INT8"))
    run = process_video(pred, tmp_path / "4k.mp4", tmp_path / "out.mp4")
    (record,) = run.records
    assert (record["width"], record["height"]) == (3840, 2160) and len(record["instances"]) > 0
    assert max(i["box"][2] for i in record["instances"]) > 1000  # in the 4K frame's pixels
    info = video_info(tmp_path / "out.mp4")
    assert (info["width"], info["height"], info["frames"]) == (3840, 2160, 1)


def test_video_frames_are_drawn_in_steady_colours(clip):
    """Detectron2's Visualizer colours each instance at random: a video drawn that way flickers. Video
    frames are drawn with a colour per class, the same however the random state moves, by either
    renderer."""
    from d2ov_core.serve.render import has_visualizer, render
    from d2ov_core.serve.video import _steady

    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "INT8"))
    rgb = next(read_frames(clip)).rgb
    det = pred.predict(rgb)
    assert has_visualizer()  # the repository's environment has torch and Detectron2
    for style in ("plain", "detectron2"):
        drawn = []
        for seed in (1, 2):
            np.random.seed(seed)
            drawn.append(render(rgb, _steady(det), pred.labels, task=pred.task, style=style))
        assert np.array_equal(drawn[0], drawn[1]), style
    np.random.seed(1)  # the Visualizer's own drawing of an image differs with the random state: what video avoids
    a = render(rgb, det, pred.labels, task=pred.task, style="detectron2")
    np.random.seed(2)
    assert not np.array_equal(a, render(rgb, det, pred.labels, task=pred.task, style="detectron2"))


def test_records_to_a_sink_are_the_records_kept_and_none_is_held(clip, tmp_path):
    """``process_video(sink=)``, what the CLI's --json and the app do: each frame's record goes to the
    sink as it is made, in order, equal to the records kept without one, and the run holds none."""
    import json

    from d2ov_core.runtime.detections import PredictionsWriter, predictions_document
    from d2ov_core.serve.video import process_video

    pred = Predictor(bundled_ir("demo/mask_rcnn_shapes", "INT8"))
    kept = process_video(pred, clip, None, every=3)
    got: list[dict] = []
    streamed = process_video(pred, clip, None, every=3, sink=got.append)
    assert streamed.records == [] and streamed.frames == kept.frames == 4
    assert [r["frame"] for r in got] == [0, 3, 6, 9]

    def untimed(records):
        return json.dumps([{k: v for k, v in r.items() if k != "timing_ms"} for r in records])

    assert untimed(got) == untimed(kept.records)  # the same detections, byte for byte
    assert streamed.per_class == kept.per_class and sum(streamed.per_class.values()) > 0
    with PredictionsWriter(tmp_path / "p.json", pred.describe(), "openvino", "CPU", 0.5) as w:
        for record in got:
            w.add(record)
    document = predictions_document(pred.describe(), "openvino", "CPU", 0.5, got)
    assert (tmp_path / "p.json").read_text() == json.dumps(document, indent=1)
