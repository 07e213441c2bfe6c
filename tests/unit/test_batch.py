"""Many images at once (serve/batch.py): archives as untrusted input (skips, traversal names, zip
bombs, limits), corrupt images as per-file errors, and the COCO results and CSV equal to the
predictor's answer on the same images (the bundled demo models)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from d2ov_core.errors import InputError
from d2ov_core.runtime.detections import Detections, rle_decode
from d2ov_core.runtime.images import load_image
from d2ov_core.runtime.predictor import Predictor
from d2ov_core.runtime.settings import IRMetadata
from d2ov_core.serve import batch as B
from d2ov_core.serve.handlers import prune_outputs
from d2ov_core.store.lookup import bundled_ir

from ..conftest import SAMPLES

SHAPES = sorted(SAMPLES.glob("shapes_*.jpg"))


class Echo:
    """A predictor without a pipeline (frames_through runs it one image at a time) that finds nothing
    and remembers what it was given: the plumbing without the model's cost."""

    labels = ["thing"]
    task = "detection"
    metadata = IRMetadata(confidence_threshold=0.5)

    def __init__(self, fail_at: int | None = None):
        self.seen: list[np.ndarray] = []
        self.fail_at = fail_at

    def predict_image(self, rgb, threshold=None):
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("the model broke")
        self.seen.append(rgb)
        return rgb, Detections.empty(rgb.shape[:2])

    def describe(self):
        return {"name": "echo", "task": "detection", "precision": "FP32", "classes": self.labels}


def png(h: int = 6, w: int = 5, value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def patch_central_directory(path: Path, member: str, offset: int, fmt: str, value: int) -> None:
    """Overwrite a field of ``member``'s central directory entry (what ``ZipFile.infolist`` reads)."""
    data = bytearray(path.read_bytes())
    at = 0
    while not data[at + 46 :].startswith(member.encode()):
        at = data.index(b"PK\x01\x02", at + 1)
    struct.pack_into(fmt, data, at + offset, value)
    path.write_bytes(bytes(data))


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text, text
    return text


@pytest.fixture(scope="module")
def mask_rcnn():
    return Predictor(bundled_ir("demo/mask_rcnn_shapes", "FP16"))


def test_a_zip_gives_its_images_by_name_and_lists_what_it_skips(tmp_path, monkeypatch):
    inner = write_zip(tmp_path / "inner.zip", {"deep.png": png()})
    archive = write_zip(
        tmp_path / "mixed.zip",
        {
            "a.png": png(value=10),
            "sub/b.jpg": SHAPES[0].read_bytes(),
            "notes.txt": b"hello",
            "b.pdf": b"%PDF-1.4",
            "inner.zip": inner.read_bytes(),
            "../x.png": png(value=30),
            "/abs.png": png(value=40),
            "__MACOSX/._a.png": b"\x00\x05\x16\x07",
            ".hidden.png": png(),
            "secret.png": png(),
        },
    )
    patch_central_directory(archive, "secret.png", 8, "<H", 0x1)  # "encrypted"
    work = tmp_path / "work"
    work.mkdir()
    plain = tmp_path / "plain.png"
    plain.write_bytes(png(value=50))
    monkeypatch.chdir(work)  # a traversal name, were it extracted, would land beside `work`
    inputs = B.list_inputs([(plain, "plain.png"), (archive, "mixed.zip")])
    names = [e.name for e in inputs.images]
    assert names == ["plain.png", "mixed.zip/a.png", "mixed.zip/sub/b.jpg", "mixed.zip/../x.png", "mixed.zip//abs.png"]
    assert inputs.skipped == [
        ("mixed.zip/notes.txt", "not an image"),
        ("mixed.zip/b.pdf", "not an image"),
        ("mixed.zip/inner.zip", "archive in an archive"),
        ("mixed.zip/__MACOSX/._a.png", "hidden"),
        ("mixed.zip/.hidden.png", "hidden"),
        ("mixed.zip/secret.png", "encrypted"),
    ]
    assert inputs.skipped_text() == (
        "skipped 2 files that are not images: mixed.zip/notes.txt, mixed.zip/b.pdf; "
        "skipped 1 archive inside an archive (not opened): mixed.zip/inner.zip; "
        "skipped 2 files that are hidden (or macOS metadata): mixed.zip/__MACOSX/._a.png, mixed.zip/.hidden.png; "
        "skipped 1 file that is encrypted: mixed.zip/secret.png"
    )
    echo = Echo()
    items = list(B.predict_batch(echo, inputs))
    assert [(i.index, i.name, i.error) for i in items] == [(k, n, None) for k, n in enumerate(names)]
    assert [int(rgb[0, 0, 0]) for rgb in echo.seen] == [50, 10, int(load_image(SHAPES[0])[0, 0, 0]), 30, 40]
    np.testing.assert_array_equal(echo.seen[2], load_image(SHAPES[0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner.zip", "mixed.zip", "plain.png", "work"]
    assert list(work.iterdir()) == [] and not Path("/abs.png").exists()


def test_a_zip_bomb_is_refused_in_one_line_fast_and_without_inflating_it(tmp_path):
    """200 MB of zeros compressed to about 200 KB: refused from its declared sizes, before a byte is
    inflated."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", png())
        with zf.open("zeros.png", "w", force_zip64=False) as f:
            chunk = bytes(1 << 20)
            for _ in range(200):
                f.write(chunk)
    assert bomb.stat().st_size < 400_000
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(InputError) as e:
        B.run_batch(Echo(), B.list_inputs([(bomb, "bomb.zip")]), tmp_path)
    took = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert one_line(e).startswith("bomb.zip/zeros.png: compressed 1") and "expected at most 100 to 1" in str(e.value)
    assert took < 1.0 and peak < 5e6, (took, peak)


def test_declared_sizes_are_not_trusted(tmp_path, monkeypatch):
    """A member whose headers claim 1 KB holds 3 MB of zeros: the read stops at the size it claims,
    the file fails alone (a bad CRC), and nothing near 3 MB is held; a claim that passes the header
    check but inflates beyond the ratio is refused while reading."""
    archive = write_zip(tmp_path / "liar.zip", {"ok.png": png(value=7), "liar.png": bytes(3 << 20)})
    patch_central_directory(archive, "liar.png", 24, "<I", 1000)  # "uncompressed: 1000 bytes"
    inputs = B.list_inputs([(archive, "liar.zip")])
    items = list(B.predict_batch(Echo(), inputs))
    assert items[0].error is None and items[1].name == "liar.zip/liar.png"
    assert items[1].error is not None and items[1].error.startswith(
        "liar.zip/liar.png: cannot read it from the archive"
    )
    # the reader's own bound: a member that inflates beyond the ratio it declared (ratio lowered for the test)
    monkeypatch.setenv("D2OV_MAX_ZIP_RATIO", "100000")
    honest = write_zip(tmp_path / "zeros.zip", {"zeros.bmp": bytes(3 << 20)})
    inputs = B.list_inputs([(honest, "zeros.zip")])
    monkeypatch.setenv("D2OV_MAX_ZIP_RATIO", "50")
    with pytest.raises(InputError) as e:
        list(B.predict_batch(Echo(), inputs))
    assert one_line(e) == "zeros.zip/zeros.bmp: decompresses beyond 50 to 1 (a zip bomb?): the batch is refused"


def test_the_batch_total_and_the_per_file_limit(tmp_path, monkeypatch):
    archive = write_zip(tmp_path / "two.zip", {"a.bmp": bytes(600_000), "b.png": png()}, zipfile.ZIP_STORED)
    monkeypatch.setenv("D2OV_MAX_BATCH_BYTES", "500000")
    with pytest.raises(InputError) as e:
        B.list_inputs([(archive, "two.zip")])
    assert one_line(e) == "two.zip: the batch would read 1 MB, at most 0 MB (D2OV_MAX_BATCH_BYTES)"
    monkeypatch.setenv("D2OV_MAX_BATCH_BYTES", str(1 << 30))
    monkeypatch.setattr("d2ov_core.runtime.images.MAX_FILE_BYTES", 500_000)
    items = list(B.predict_batch(Echo(), B.list_inputs([(archive, "two.zip")])))
    assert [i.error for i in items] == ["two.zip/a.bmp: file is 0.6 MB, the limit is 0 MB", None]


def test_501_images_are_refused_before_any_model_work_and_500_run(tmp_path):
    tiny = png(4, 4)
    big = write_zip(tmp_path / "501.zip", {f"{i:03d}.png": tiny for i in range(501)})
    with pytest.raises(InputError) as e:
        B.list_inputs([(big, "501.zip")])
    assert one_line(e) == "too many images: 501, at most 500 a batch (D2OV_MAX_BATCH_FILES)"
    plain = []
    for i in range(501):
        (tmp_path / f"{i}.png").write_bytes(tiny)
        plain.append((tmp_path / f"{i}.png", f"{i}.png"))
    with pytest.raises(InputError) as e:
        B.list_inputs(plain)
    assert one_line(e) == "too many files: 501, at most 500 images a batch (D2OV_MAX_BATCH_FILES)"
    ok = write_zip(tmp_path / "500.zip", {f"{i:03d}.png": tiny for i in range(500)})
    t = time.perf_counter()
    done = []
    run = B.run_batch(Echo(), B.list_inputs([(ok, "500.zip")]), tmp_path, progress=lambda d, n, r: done.append((d, n)))
    took = time.perf_counter() - t
    assert run.images == 500 and len(run.gallery) == 500 and done[-1] == (500, 500) and len(done) == 500
    assert [name for _, name in run.gallery][:2] == ["500.zip/000.png", "500.zip/001.png"]
    assert all(Path(p).is_file() for p, _ in run.gallery)
    assert [i["id"] for i in run.document["images"]] == list(range(1, 501))
    assert took < 120, took


def test_an_archive_declaring_too_many_entries_is_refused_before_its_directory_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("D2OV_MAX_BATCH_FILES", "2")  # at most 20 entries an archive
    many = write_zip(tmp_path / "many.zip", {f"{i}.txt": b"" for i in range(21)})
    monkeypatch.setattr(zipfile, "ZipFile", None)  # parsing its directory would fail differently
    with pytest.raises(InputError) as e:
        B.list_inputs([(many, "many.zip")])
    assert one_line(e) == "many.zip: 21 entries in the archive, at most 20 are read"


def test_nothing_usable_is_one_error(tmp_path):
    empty = write_zip(tmp_path / "empty.zip", {})
    with pytest.raises(InputError) as e:
        B.list_inputs([(empty, "empty.zip")])
    assert one_line(e).startswith("no images to run on: expected JPEG, PNG") and one_line(e).endswith("found no files")
    texts = write_zip(tmp_path / "texts.zip", {"a.txt": b"a", "b.pdf": b"b"})
    with pytest.raises(InputError) as e:
        B.list_inputs([(texts, "texts.zip")])
    assert one_line(e).endswith("found skipped 2 files that are not images: texts.zip/a.txt, texts.zip/b.pdf")
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip at all")
    with pytest.raises(InputError) as e:
        B.list_inputs([(fake, "fake.zip")])
    assert one_line(e) == "fake.zip: not a readable .zip archive (File is not a zip file)"


def test_a_corrupt_image_fails_alone_in_the_summary_csv_and_json(tmp_path):
    archive = write_zip(tmp_path / "some.zip", {"good.png": png(), "broken.jpg": SHAPES[0].read_bytes()[:300]})
    bad = tmp_path / "text.png"
    bad.write_bytes(b"this is not a png")
    run = B.run_batch(Echo(), B.list_inputs([(archive, "some.zip"), (bad, "text.png")]), tmp_path / "out")
    assert run.images == 1 and [n for _, n in run.gallery] == ["some.zip/good.png"]
    assert [n for n, _ in run.failed] == ["some.zip/broken.jpg", "text.png"]
    assert run.failed[0][1] == "some.zip/broken.jpg: cannot read image (Truncated File Read)"
    assert run.failed[1][1] == "text.png: not an image (expected JPEG, PNG, BMP, GIF, WebP or TIFF)"
    assert (
        "2 could not be read: some.zip/broken.jpg: cannot read image (Truncated File Read); text.png: not an image"
        in run.summary()
    )
    rows = list(csv.DictReader(run.csv.open()))
    assert [(r["file"], r["label"], r["error"]) for r in rows] == [(n, "", e) for n, e in run.failed]
    assert [f["file_name"] for f in json.loads(run.coco_json.read_text())["failed"]] == [
        "some.zip/broken.jpg",
        "text.png",
    ]


def test_a_batch_that_fails_leaves_nothing_under_a_final_name(tmp_path):
    archive = write_zip(tmp_path / "four.zip", {f"{i}.png": png() for i in range(4)})
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="the model broke"):
        B.run_batch(Echo(fail_at=2), B.list_inputs([(archive, "four.zip")]), out)
    assert list(out.iterdir()) == []


def test_prune_outputs_removes_old_batches(tmp_path):
    old, new = tmp_path / "batch-old", tmp_path / "batch-new"
    for d in (old, new):
        (d / "images").mkdir(parents=True)
        (d / "coco.json").write_text("{}")
    stale = tmp_path / ".batch-x.part-1"
    stale.mkdir()
    old_drawn, new_drawn = tmp_path / "drawn-old.jpeg", tmp_path / "drawn-new.jpeg"
    for f in (old_drawn, new_drawn):
        f.write_bytes(b"jpeg")
    for d in (old, stale, old_drawn):
        os.utime(d, (time.time() - 7200,) * 2)
    prune_outputs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-new", "drawn-new.jpeg"]


def test_coco_results_and_csv_equal_the_predictor(mask_rcnn, tmp_path):
    """The batch's COCO results and CSV rows are ``predictor.predict`` on each image: same boxes,
    scores, labels and masks, exactly; the images listed with their ids and sizes."""
    archive = write_zip(tmp_path / "more.zip", {"dir/two.jpg": SHAPES[1].read_bytes()})
    files = [(SHAPES[0], SHAPES[0].name), (archive, "more.zip"), (SHAPES[2], SHAPES[2].name)]
    run = B.run_batch(mask_rcnn, B.list_inputs(files), tmp_path, threshold=0.5)
    doc = json.loads(run.coco_json.read_text())
    assert doc == run.document
    refs = [mask_rcnn.predict(p, threshold=0.5) for p in (SHAPES[0], SHAPES[1], SHAPES[2])]
    names = ["shapes_1.jpg", "more.zip/dir/two.jpg", "shapes_3.jpg"]
    assert doc["images"] == [
        {"id": i + 1, "file_name": n, "width": r.image_size[1], "height": r.image_size[0]}
        for i, (n, r) in enumerate(zip(names, refs))
    ]
    assert doc["categories"] == [
        {"id": 1, "name": "circle"},
        {"id": 2, "name": "square"},
        {"id": 3, "name": "triangle"},
    ]
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    expected_rows = []
    for image_id, ref in enumerate(refs, 1):
        got = [r for r in doc["results"] if r["image_id"] == image_id]
        assert len(got) == len(ref) > 1
        assert [r["bbox"] for r in got] == [
            [float(x0), float(y0), float(x1) - float(x0), float(y1) - float(y0)] for x0, y0, x1, y1 in ref.boxes
        ]
        assert [r["score"] for r in got] == [float(s) for s in ref.scores]
        assert [cats[r["category_id"]] for r in got] == ref.labels.tolist()
        for r, mask in zip(got, ref.masks):
            np.testing.assert_array_equal(rle_decode(r["segmentation"]), mask)
        for inst in ref.to_dict(with_masks=False)["instances"]:
            expected_rows.append(
                [names[image_id - 1], str(image_id), inst["label"], str(inst["score"]), *map(str, inst["box"]), ""]
            )
    with contextlib.redirect_stdout(io.StringIO()):  # COCO's tools read it as results of those images
        gt = COCO()
        gt.dataset = {"images": doc["images"], "categories": doc["categories"], "annotations": []}
        gt.createIndex()
        loaded = gt.loadRes(doc["results"])
    assert len(loaded.getAnnIds()) == len(doc["results"]) and sorted(loaded.getImgIds()) == [1, 2, 3]
    rows = list(csv.reader(run.csv.open()))
    assert rows[0] == list(B.CSV_COLUMNS) and rows[1:] == expected_rows
    assert run.summary().startswith(f"**3** images, **{len(expected_rows)}** detections (")
    assert [Image.open(p).size for p, _ in run.gallery] == [(r.image_size[1], r.image_size[0]) for r in refs]


def test_keypoint_and_panoptic_models_export_what_coco_results_hold(tmp_path):
    figure = sorted(SAMPLES.glob("figures_*.jpg"))[0]
    kp = Predictor(bundled_ir("demo/keypoint_rcnn_figures", "FP16"))
    run = B.run_batch(kp, B.list_inputs([(figure, figure.name)]), tmp_path, threshold=0.5)
    ref = kp.predict(figure, threshold=0.5)
    got = run.document["results"]
    assert len(got) == len(ref) > 0 and "segmentation" not in got[0]
    expected = ref.keypoints.astype(np.float64)
    expected[:, :, :2] -= 0.5  # COCO's keypoints are pixel indices
    assert [r["keypoints"] for r in got] == [k.reshape(-1).tolist() for k in expected]
    pan = Predictor(bundled_ir("demo/panoptic_fpn_shapes", "FP16"))
    sample = sorted(SAMPLES.glob("panoptic_*.jpg"))[0]
    run = B.run_batch(pan, B.list_inputs([(sample, sample.name)]), tmp_path, threshold=0.5)
    assert "stuff segments" in run.document["note"] and len(run.document["results"]) == len(pan.predict(sample, 0.5))


def test_a_large_photo_is_drawn_on_its_display_copy_and_listed_at_its_size(tmp_path):
    """A 3000 x 2100 photo: its gallery image is the display copy (every 2nd pixel, 1500 x 1050), while
    the COCO document lists the original's size."""
    big = tmp_path / "big.png"
    Image.fromarray(np.full((2100, 3000, 3), 90, np.uint8)).save(big)
    run = B.run_batch(Echo(), B.list_inputs([(big, "big.png"), (SHAPES[0], SHAPES[0].name)]), tmp_path)
    assert [Image.open(p).size for p, _ in run.gallery] == [(1500, 1050), Image.open(SHAPES[0]).size]
    assert [(i["width"], i["height"]) for i in run.document["images"]] == [(3000, 2100), Image.open(SHAPES[0]).size]
