"""What a person sees on the app's page, read back from a real browser (Playwright) and checked
against the library (tests/system/test_app.py): the rendered result image (decoded pixels), the
results table (cell by cell), the precision labels (their AP values) and a screenshot compared with a
stored reference by a perceptual difference.

References: ``tests/reference/app_<name>.png``, made by the current code. To regenerate them (after
a deliberate change of the page's look), run the browser tests with ``D2OV_UPDATE_REFERENCES=1``:

    D2OV_UPDATE_REFERENCES=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/system/test_app.py -k real_browser

and look at the new PNGs before committing them. A failed comparison leaves the screenshot and a
difference image in ``tests/_artifacts/``.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

import numpy as np
from PIL import Image

from .conftest import ROOT

REFERENCES = ROOT / "tests" / "reference"
ARTIFACTS = ROOT / "tests" / "_artifacts"

# ----------------------------------------------------------------------------- the result image

#: a pixel "changed" when one of its channels moved by more than this (0-255); JPEG/PNG round trips
#: of the same pixels move none (the app sends PNG, the input is decoded the way the app decodes it)
CHANGED = 24


def output_image(page, label: str = "Detections") -> np.ndarray:
    """The RGB pixels of the image shown under the block label ``label`` (the result, not the input's
    preview): its ``src`` fetched through the page's own context and decoded. Waits until the browser
    has loaded it."""
    img = (
        page.locator(".block")
        .filter(has=page.get_by_test_id("block-label").get_by_text(label, exact=True))
        .locator("img")
    )
    img.wait_for(state="visible", timeout=60_000)
    assert img.count() == 1, f"{img.count()} images under the label {label!r}"
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
    src = img.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, f"{src}: HTTP {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def shown_precision(page) -> str:
    """The precision the summary line says the result ran at ("... on CPU, INT8 — ...")."""
    text = page.get_by_text(re.compile(r" on \S+, [A-Z0-9]+ — ")).first.inner_text()
    return re.search(r" on \S+, ([A-Z0-9]+) — ", text).group(1)


def _changed(out: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    (h, w), (ih, iw) = out.shape[:2], rgb.shape[:2]
    assert out.shape == rgb.shape, f"the result image is {w}x{h}, the input {iw}x{ih}"
    return np.abs(out.astype(np.int16) - rgb.astype(np.int16)).max(-1) > CHANGED


def _box_slice(box, shape, margin: int = 0):
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return (
        slice(max(y0 - margin, 0), min(y1 + 1 + margin, shape[0])),
        slice(max(x0 - margin, 0), min(x1 + 1 + margin, shape[1])),
    )


def check_instances_drawn(out: np.ndarray, rgb: np.ndarray, det) -> None:
    """``out`` is ``rgb`` with ``det`` drawn on it: the same size; inside every box at least 3% of
    the pixels changed (outline, label, mask); away from all boxes (20 px margin for the labels drawn
    above them) at least 80% unchanged, so neither the input returned as it is nor a blank or
    repainted image passes; every keypoint scoring above the renderer's threshold changed at least a
    third of the 5x5 pixels around it. Measured with Detectron2's Visualizer (random colours per
    instance) on the demo models' first 4 samples at thresholds 0.5 and 0.95, 5 renders each, INT8
    and FP16: in a box at least 6.9% changed (Faster R-CNN: a large box holds only its outline and
    label; Mask R-CNN 26%, Keypoint R-CNN 12%), away from them at least 94% unchanged, around a
    keypoint at least 84% changed."""
    from d2ov_core.runtime.detections import KEYPOINT_THRESHOLD

    changed = _changed(out, rgb)
    assert len(det) > 0
    away = np.ones(changed.shape, bool)
    for i, box in enumerate(det.boxes):
        inside = changed[_box_slice(box, changed.shape)].mean()
        assert inside >= 0.03, (
            f"detection {i} ({det.labels[i]}, box {np.round(box, 1).tolist()}): only {inside:.1%} of its pixels changed"
        )
        away[_box_slice(box, changed.shape, margin=20)] = False
    if away.sum() > 1000:
        kept = 1 - changed[away].mean()
        assert kept >= 0.8, f"only {kept:.1%} of the pixels away from the detections are the input's"
    if det.keypoints is not None:
        for i, inst in enumerate(det.keypoints):
            for k, (x, y, s) in enumerate(inst):
                if s > KEYPOINT_THRESHOLD:
                    near = changed[_box_slice((x - 2, y - 2, x + 2, y + 2), changed.shape)].mean()
                    assert near >= 1 / 3, (
                        f"detection {i}, keypoint {det.keypoint_names[k]} at ({x:.0f}, {y:.0f}): not drawn"
                    )


def check_segments_drawn(out: np.ndarray, rgb: np.ndarray, det) -> None:
    """``out`` is ``rgb`` with ``det``'s panoptic map drawn on it: the same size; in every segment at
    least 5% of the pixels changed, and in all segments but one at least 10%; the segments are told
    apart (their median colours in the result are at least as many as the classes shown: a uniform
    repaint fails); the pixels of no segment are at least 30% the input's. Measured as for
    :func:`check_instances_drawn` (the panoptic demo model): in a segment at least 19.5% changed over
    many runs, but Detectron2's Visualizer picks colours at random, and one CI run drew a circle in a
    colour close enough to the input's that only 9.4% of its pixels changed (hence one segment may be
    between 5% and 10%); 2 colours more than classes at least, the pixels of no segment at least 59%
    unchanged."""
    changed = _changed(out, rgb)
    assert det.segment_map is not None and len(det.segments) > 0
    medians = set()
    faint = []
    for seg in det.segments:
        where = det.segment_map == seg.id
        part = changed[where].mean()
        shown = f"segment {seg.id} ({seg.label}, {seg.area} px): only {part:.1%} changed"
        assert part >= 0.05, shown
        if part < 0.1:
            faint.append(shown)
        medians.add(tuple(np.median(out[where], axis=0).astype(int) // 8))
    assert len(faint) <= 1, faint
    classes = {seg.label for seg in det.segments}
    assert len(medians) >= len(classes), f"{len(medians)} colours for {len(classes)} classes"
    none = det.segment_map == 0
    if none.sum() > 500:
        kept = 1 - changed[none].mean()
        assert kept >= 0.3, f"only {kept:.1%} of the pixels of no segment are the input's"


# ----------------------------------------------------------------------------- the table


def table_rows(page, label: str = "Detections table") -> tuple[list[str], list[list[str]]]:
    """``(headers, rows)`` of the Dataframe labelled ``label`` as the page shows them (cell texts).
    Gradio draws the table as a virtual grid: it is scrolled until every row has been seen."""
    grid = page.get_by_role("grid", name=label)
    grid.wait_for(timeout=30_000)
    headers = [t.strip() for t in grid.locator("[role=columnheader]").all_inner_texts()]
    n_rows = int(grid.get_attribute("aria-rowcount")) - 1  # the header row counts
    viewport = grid.locator(".virtual-table-viewport")
    seen: dict[tuple[int, int], str] = {}
    for _ in range(50):
        cells = grid.locator("[role=gridcell]").evaluate_all(
            "cs => cs.map(c => [+c.dataset.row, +c.dataset.col, c.innerText])"
        )
        seen.update({(r, c): text.strip() for r, c, text in cells})
        if len({r for r, _ in seen}) >= n_rows:
            break
        viewport.evaluate("e => e.scrollBy(0, e.clientHeight / 2)")
        page.wait_for_timeout(100)
    rows = [[seen.get((r, c), "") for c in range(len(headers))] for r in range(n_rows)]
    assert all(all(k in seen for k in ((r, c) for c in range(len(headers)))) for r in range(n_rows)), (
        f"not every cell of {label!r} was shown"
    )
    return headers, rows


def _number(text: str) -> float | None:
    return None if text in ("", "None", "nan", "NaN") else float(text)


def check_detection_rows(headers: list[str], rows: list[list[str]], det) -> None:
    """The table is ``det``, row by row: labels equal, scores to 2 decimals, boxes within 1 px."""
    assert headers == ["label", "score", "x0", "y0", "x1", "y1"], headers
    assert len(rows) == len(det) > 0, f"the page shows {len(rows)} rows, the library finds {len(det)}"
    for i, (row, label, score, box) in enumerate(zip(rows, det.labels, det.scores, det.boxes)):
        assert row[0] == str(label), f"row {i}: {row[0]!r}, the library says {label!r}"
        assert abs(float(row[1]) - float(score)) <= 0.005, f"row {i}: score {row[1]}, the library's {score:.3f}"
        shown = np.array([float(v) for v in row[2:]])
        assert np.abs(shown - box).max() <= 1.0, (
            f"row {i}: box {shown.tolist()}, the library's {np.round(box, 1).tolist()}"
        )


def check_segment_rows(headers: list[str], rows: list[list[str]], det) -> None:
    """The table is ``det``'s panoptic segments, row by row: id, class, thing/stuff and area equal,
    scores to 2 decimals (stuff has none)."""
    assert headers == ["segment", "class", "thing/stuff", "area px", "score"], headers
    assert len(rows) == len(det.segments) > 0, (
        f"the page shows {len(rows)} rows, the library finds {len(det.segments)} segments"
    )
    for row, seg in zip(rows, det.segments):
        assert [int(row[0]), row[1], row[2], int(row[3])] == [
            seg.id,
            seg.label,
            "thing" if seg.isthing else "stuff",
            seg.area,
        ], (row, seg)
        score = _number(row[4])
        if seg.score is None:
            assert score is None, (row, seg)
        else:
            assert score is not None and abs(score - seg.score) <= 0.005, (row, seg)


# ----------------------------------------------------------------------------- precision labels

_METRICS = {"PQ": "PQ", "box AP": "box_AP", "mask AP": "mask_AP", "keypoint AP": "keypoint_AP"}
_PRIMARY = ("PQ", "keypoint_AP", "mask_AP", "box_AP")  # the measure the default is chosen by, per row


def precision_labels(page) -> list[str]:
    """The precision control's option labels as the page shows them ("INT8 · box AP 60.8 ... · 53 ms")."""
    radio = page.locator(".block").filter(has=page.get_by_text("Precision (AP measured", exact=False)).last
    labels = [t.strip() for t in radio.locator("label").all_inner_texts()]
    return [t for t in labels if " · " in t]


def check_precision_labels(labels: list[str], model: str) -> str:
    """Every option's AP values, AP difference from the float model and model time are the bundled
    IRs' metadata (:func:`~d2ov_core.runtime.ir.read_metadata`: each precision's row from the IR it
    runs, BF16 from the FP16 IR, FP32 from whichever IR measured it), to the one decimal shown; the
    options are the bundled IRs' precisions (BF16 where this CPU computes bfloat16); "Auto" names the
    fastest within 0.5 of the float model's main measure. Returns the precision "Auto" names."""
    from d2ov_core.runtime.ir import bf16_available, read_metadata
    from d2ov_core.runtime.settings import PRECISIONS
    from d2ov_core.store.lookup import bundled_ir

    acc = {ir: read_metadata(bundled_ir(model, ir)).accuracy for ir in ("FP16", "INT8")}
    fp32 = next(a["FP32"] for a in acc.values() if "FP32" in a)
    auto = [t for t in labels if t.startswith("Auto · ")]
    shown = {}
    for text in labels:
        if text.startswith("Auto · "):
            continue
        m = re.fullmatch(r"(\w+) · (.+?)(?: \(([+-]\d+\.\d) ([\w ]+)\))? · (\d+) ms", text)
        assert m, f"unexpected precision label {text!r}"
        p, aps, delta, delta_key, ms = m.groups()
        row = acc[PRECISIONS[p].ir][p]
        values = {_METRICS[k]: v for k, v in re.findall(r"(PQ|box AP|mask AP|keypoint AP) (-?\d+\.\d)", aps)}
        expected = {k: f"{row.value(k):.1f}" for k in _METRICS.values() if row.value(k) is not None}
        assert values == expected, f"{p}: the page shows {values}, the IR's metadata {expected}"
        assert ms == f"{row.ms:.0f}", f"{p}: {ms} ms shown, {row.ms} in the metadata"
        key = next(k for k in _PRIMARY if row.value(k) is not None)
        assert delta == f"{row.value(key) - fp32.value(key):+.1f}" and delta_key == key.replace("_", " "), (
            f"{p}: difference {delta} {delta_key}, the metadata's {row.value(key) - fp32.value(key):+.1f} {key}"
        )
        shown[p] = row
    assert set(shown) == {"FP16", "INT8"} | ({"BF16"} if bf16_available() else set()), labels
    key = next(k for k in _PRIMARY if fp32.value(k) is not None)
    default = min((p for p, r in shown.items() if r.value(key) >= fp32.value(key) - 0.5), key=lambda p: shown[p].ms)
    assert auto == [f"Auto · {default}"], (auto, default)
    return default


# ----------------------------------------------------------------------------- screenshots

#: the part of the page compared: the first screen at 1400 px wide (title, input and result side by
#: side, Detect, the examples, the summary, the task choice and the top of the model card)
CLIP = {"x": 0, "y": 0, "width": 1400, "height": 940}
#: The comparison: both screenshots as grey thumbnails of CELL x CELL-pixel cells (averaged); the
#: fraction of cells whose grey level differs by more than CELL_DIFF (0-255) must be at most TOLERANCE.
#: What depends on the CPU or the run is painted over first (:func:`screenshot_masks`): the timings,
#: the model card and precision options (they list BF16 only on CPUs with bfloat16), and the result
#: image, whose colours Detectron2's Visualizer picks at random per instance (its checks are
#: :func:`check_instances_drawn` / :func:`check_segments_drawn`); it is painted grey, so where it
#: sits and how big it is still count.
#: Measured with chromium on an Intel Xeon (AVX-512, AMX), 3 tasks (the page driven as the tests do):
#: the same page twice, and INT8 against FP16 results (other boxes, scores, masks; the other
#: precision selected): 0 cells differ once the masks cover the image's fractional edge pixels
#: (0.13% before). Deliberate layout breaks with CSS: the two columns stacked 23-38%, the result
#: image 40 px lower 4.0-10.8%, the Detect button gone 6.0-6.6%, a 48 px gap between the columns
#: 1.5-7.2%, a serif font everywhere 2.5-3.0%. TOLERANCE lies between (3x below the smallest break):
#: what is left to vary across machines with the same chromium and fonts, whatever the CPU, is
#: sub-level antialiasing (Skia's per-CPU SIMD paths), far below CELL_DIFF.
#: Another chromium or font set: regenerate the references (the module's docstring).
CELL = 4
CELL_DIFF = 16
TOLERANCE = 0.005
GREY, WHITE = (128, 128, 128), (255, 255, 255)


def screenshot_masks(page) -> list[tuple[Any, tuple[int, int, int]]]:
    """What :func:`check_screenshot` paints over, and in which colour: the summary (timings), the model
    card (it lists the precisions this CPU runs) and the precision options (BF16 only on CPUs with
    bfloat16) in the page's white; the result image (random colours) in grey."""
    markdown = page.get_by_test_id("markdown")
    result = page.locator(".block").filter(has=page.get_by_test_id("block-label").get_by_text("Detections", exact=True))
    return [
        (markdown.filter(has_text=re.compile(r" on \S+, [A-Z0-9]+ — ")), WHITE),
        (markdown.filter(has_text="status: "), WHITE),
        (page.locator(".block").filter(has=page.get_by_text("Precision (AP measured")).last, WHITE),
        (result.locator("img"), GREY),
    ]


def _thumbnail(image: Image.Image) -> np.ndarray:
    grey = image.convert("L")
    return np.asarray(grey.resize((grey.width // CELL, grey.height // CELL), Image.BOX), dtype=np.float32)


def perceptual_diff(a: Image.Image, b: Image.Image) -> float:
    """The fraction of :data:`CELL`-pixel cells whose mean grey level differs by more than
    :data:`CELL_DIFF` (1.0 when the sizes differ)."""
    if a.size != b.size:
        return 1.0
    return float((np.abs(_thumbnail(a) - _thumbnail(b)) > CELL_DIFF).mean())


def page_screenshot(page, masks: list[tuple[Any, tuple[int, int, int]]]) -> Image.Image:
    """The page's first screen (:data:`CLIP`), deterministic: scrolled to the top, the mouse away, no
    caret, no animation, the fonts loaded; every ``(locator, colour)`` of ``masks`` painted over (its
    box widened to whole pixels and by one more: its fractional edge would show through)."""
    import math

    from PIL import ImageDraw

    page.mouse.move(CLIP["width"] - 1, CLIP["height"] - 1)
    page.evaluate("() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); }")
    page.evaluate("() => document.fonts.ready")
    page.wait_for_timeout(300)  # let transitions (hover, focus rings) end
    png = page.screenshot(clip=CLIP, animations="disabled", caret="hide")
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    draw = ImageDraw.Draw(shot)
    for locator, colour in masks:
        for box in [loc.bounding_box() for loc in locator.all()]:
            if box is not None:
                draw.rectangle(
                    [
                        math.floor(box["x"]) - 1,
                        math.floor(box["y"]) - 1,
                        math.ceil(box["x"] + box["width"]),
                        math.ceil(box["y"] + box["height"]),
                    ],
                    fill=colour,
                )
    return shot


def check_screenshot(page, name: str, masks: list[tuple[Any, tuple[int, int, int]]]) -> float:
    """:func:`page_screenshot` compared with ``tests/reference/app_<name>.png`` (see the module's
    docstring to regenerate it); returns the difference."""
    shot = page_screenshot(page, masks)
    ref_path = REFERENCES / f"app_{name}.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot.save(ARTIFACTS / f"app_{name}.png")
    if os.environ.get("D2OV_UPDATE_REFERENCES") == "1":
        REFERENCES.mkdir(parents=True, exist_ok=True)
        shot.save(ref_path, optimize=True)
    assert ref_path.is_file(), f"no reference {ref_path} (make it with D2OV_UPDATE_REFERENCES=1)"
    ref = Image.open(ref_path).convert("RGB")
    diff = perceptual_diff(shot, ref)
    if diff > TOLERANCE:
        if shot.size == ref.size:
            d = np.abs(np.asarray(shot, np.int16) - np.asarray(ref, np.int16)).max(-1).astype(np.uint8)
            Image.fromarray(d).save(ARTIFACTS / f"app_{name}.diff.png")
        raise AssertionError(
            f"the page looks different from {ref_path.relative_to(ROOT)}: {diff:.2%} of the "
            f"{CELL}x{CELL}-pixel cells differ (tolerance {TOLERANCE:.1%}); "
            f"see tests/_artifacts/app_{name}*.png"
        )
    return diff
