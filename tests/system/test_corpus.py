"""The bad-input corpus end to end through the CLI, as a user runs it (`python -m d2ov_core predict`
in a subprocess): every case either gives the library's result for the same file or one clear line
on stderr and exit code 2, never a traceback.

Images are generated here (the factories of tests/test_images.py plus a flat image with no
objects); broken IRs are made from a real converted IR. The model is the tiny spread-score Mask
R-CNN of tests/helpers.py (always available); the bundled demo model is used too when present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from d2ov_core.store.lookup import bundled_ir

from .. import helpers
from ..conftest import run_cli
from ..unit.test_images import BAD, GOOD, _save

SUFFIX = {
    "jpeg": ".jpg",
    "cmyk_jpeg": ".jpg",
    "exif_rotated": ".jpg",
    "animated_gif": ".gif",
    "webp": ".webp",
    "tiff": ".tif",
    "bmp": ".bmp",
}
DEMO = "demo/mask_rcnn_shapes"


def good_cases() -> dict:
    """name -> (bytes factory, expected (H, W)); a flat grey image is the 'no objects' case."""
    cases = dict(GOOD)
    cases["no_objects"] = (lambda: _save(Image.fromarray(np.full((240, 320, 3), 128, np.uint8)), "JPEG"), (240, 320))
    return cases


def write_cases(folder: Path, cases: dict, default_suffix: str = ".png") -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (make, _) in cases.items():
        p = folder / f"{name}{SUFFIX.get(name, default_suffix)}"
        p.write_bytes(make())
        paths[name] = p
    return paths


def one_line_error(res) -> str:
    """The contract for bad input: exit 2, no traceback, last stderr line is 'd2ov: error: ...'."""
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(("d2ov: error:", "usage:", "d2ov predict: error:")) or "error:" in last, res.stderr[-2000:]
    return last


@pytest.fixture(scope="module")
def model_ir() -> Path:
    return helpers.sparse_ir()


def demo_ir() -> Path:
    return bundled_ir(DEMO)


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_cli_good_images_give_the_library_result(which, model_ir, tmp_path):
    """All good images in one `predict` call; each result equals Predictor on the same file."""
    from d2ov_core.runtime.predictor import Predictor

    if which == "demo":
        if not demo_ir().is_file():
            pytest.skip(f"bundled demo IR {demo_ir()} not built yet (tools/train_demo_models.py, make bundle)")
        model, xml = DEMO, demo_ir()
    else:
        model, xml = str(model_ir), model_ir
    cases = good_cases()
    paths = write_cases(tmp_path / "good", cases)
    out = tmp_path / "pred.json"
    res = run_cli("predict", model, *map(str, paths.values()), "--threshold", "0.5", "--json", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    results = {Path(r["image"]).stem: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == set(cases)
    lib = Predictor(xml)
    for name, path in paths.items():
        r = results[name]
        assert (r["height"], r["width"]) == cases[name][1], name
        ref = lib.predict(path, threshold=0.5)
        inst = r["instances"]
        assert len(inst) == len(ref), name
        if len(ref):
            np.testing.assert_allclose([i["box"] for i in inst], ref.boxes, atol=2e-3, err_msg=name)
            np.testing.assert_allclose([i["score"] for i in inst], ref.scores, atol=1e-5, err_msg=name)
            assert [i["label"] for i in inst] == list(ref.labels), name
    if which == "demo":
        assert results["no_objects"]["instances"] == []  # a trained detector finds nothing on flat grey
    else:
        assert results["no_objects"]["instances"] == []  # the spread-score model too (by construction)
        assert any(len(r["instances"]) for r in results.values())


# name -> (CLI args with placeholders, fragment of the one-line error)
BAD_ARGS = {
    **{f"image_{n}": (["predict", "MODEL", f"BAD:{n}"], msg) for n, (_, msg) in BAD.items()},
    "image_missing": (["predict", "MODEL", "/no/such/image.jpg"], "image not found"),
    "threshold_nan": (["predict", "MODEL", "IMG", "--threshold", "nan"], "NaN"),
    "threshold_-1": (["predict", "MODEL", "IMG", "--threshold", "-1"], "must be in [0, 1]"),
    "threshold_2": (["predict", "MODEL", "IMG", "--threshold", "2"], "must be in [0, 1]"),
    "unknown_device": (["predict", "MODEL", "IMG", "--device", "TPU"], "unknown device 'TPU'"),
    "unknown_model": (["predict", "no_such_model", "IMG"], "unknown model 'no_such_model'"),
    "model_name_dotdot": (["predict", "../../../etc/passwd", "IMG"], "unknown model '../../../etc/passwd'"),
    "model_name_dotdot_catalog": (["predict", "demo/../../etc/passwd", "IMG"], "unknown model"),
    "ir_truncated_bin": (["predict", "IR:truncated", "IMG"], "model.bin sha256"),
    "ir_truncated_bin_no_card": (["predict", "IR:truncated_no_card", "IMG"], "cannot read IR"),
    "ir_xml_without_d2ov_metadata": (["predict", "IR:no_metadata", "IMG"], "not a d2ov IR"),
    "ir_bin_of_another_model": (["predict", "IR:other_bin", "IMG"], "model.bin sha256"),
    "ir_bin_of_another_model_no_card": (["predict", "IR:other_bin_no_card", "IMG"], "cannot read IR"),
}


@pytest.fixture(scope="module")
def broken_irs(model_ir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken_irs")
    other = helpers.resave(model_ir, root / "fp16", "FP16")  # same model, FP16 weights: another .bin
    return {
        "truncated": helpers.truncated_bin_ir(model_ir, root / "truncated"),
        "truncated_no_card": helpers.truncated_bin_ir(model_ir, root / "truncated_no_card", card=False),
        "no_metadata": helpers.no_metadata_ir(root / "no_metadata"),
        "other_bin": helpers.other_bin_ir(model_ir, other, root / "other_bin"),
        "other_bin_no_card": helpers.other_bin_ir(model_ir, other, root / "other_bin_no_card", card=False),
    }


@pytest.mark.parametrize("case", BAD_ARGS)
def test_cli_bad_input_is_one_line_and_exit_2(case, model_ir, broken_irs, tmp_path):
    args, msg = BAD_ARGS[case]
    good = tmp_path / "good.png"
    good.write_bytes(GOOD["png"][0]())

    def subst(a: str) -> str:
        if a == "MODEL":
            return str(model_ir)
        if a == "IMG":
            return str(good)
        if a.startswith("BAD:"):
            name = a[4:]
            p = tmp_path / f"{name}{'.png' if 'png' in name or 'bomb' in name else '.jpg'}"
            p.write_bytes(BAD[name][0]())
            return str(p)
        if a.startswith("IR:"):
            return str(broken_irs[a[3:]])
        return a

    res = run_cli(*map(subst, args))
    line = one_line_error(res)
    assert msg in line, res.stderr[-2000:]
    assert len(line) < 400, line


def test_corpus_has_the_issue_cases():
    """The issue asks for at least 25 cases: count them (good images, bad images, bad arguments, bad IRs)."""
    names = set(good_cases()) | set(BAD_ARGS)
    assert len(names) >= 25, sorted(names)
    for needed in [
        "1x1",
        "4x4000",
        "4000x4",
        "grayscale",
        "rgba",
        "palette",
        "16bit",
        "cmyk_jpeg",
        "exif_rotated",
        "animated_gif",
        "webp",
        "tiff",
        "no_objects",
        "image_zero_bytes",
        "image_random_bytes",
        "image_truncated_jpeg",
        "image_truncated_png",
        "image_html_named_jpg",
        "image_decompression_bomb",
        "threshold_nan",
        "threshold_-1",
        "threshold_2",
        "unknown_device",
        "unknown_model",
        "model_name_dotdot",
        "ir_truncated_bin",
        "ir_xml_without_d2ov_metadata",
        "ir_bin_of_another_model",
    ]:
        assert needed in names, needed
