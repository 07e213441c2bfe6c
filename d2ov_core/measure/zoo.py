"""The zoo check: every catalog model converted (calibrated random weights, FP32 IR), checked stage by
stage and verified on two real photos, one model at a time, each in its own process; a table in
``docs/zoo.md``. Rerunnable: ``tools/zoo_check.sh`` (``python -m d2ov_core.measure.zoo``).

Each model runs ``d2ov -q verify MODEL PHOTOS --weights random --precision FP32 --stages --json`` in a
child process, so a crash or a timeout costs one row (its reason: the one-line error, or the
timeout), not the run. Results are kept per model (``--results DIR``, one JSON each) and reused on
a rerun unless ``--force``; the table is written from whatever results exist.

With random weights, entries whose configs agree on everything the model is made of (``MODEL``,
``INPUT``, ``TEST``; the 1x and 3x schedules differ only in ``SOLVER``) are the same model, seeded
alike: the same graph and the same weights. The first of them is checked; the others get its result,
marked as such.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..export.model import load_cfg
from ..store import catalog

__all__ = ["photos", "run_one", "render", "main"]


def photos() -> list[str]:
    """The two real photos: matplotlib's grace_hopper.jpg and scikit-learn's china.jpg."""
    import matplotlib
    import sklearn

    return [
        str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
        str(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"),
    ]


def model_key(name: str) -> str:
    """What makes ``name``'s random-weights model: its config's MODEL, INPUT and TEST sections."""
    import hashlib

    cfg = load_cfg(catalog.get(name))
    return hashlib.sha256("".join(cfg[k].dump() for k in ("MODEL", "INPUT", "TEST")).encode()).hexdigest()[:16]


def order(names: list[str]) -> list[str]:
    """Check order: one model per family first (R50 FPN, C4, DC5, RetinaNet, keypoints, X101; then masks),
    then the rest."""
    first = [
        "faster_rcnn_R_50_FPN_1x",
        "faster_rcnn_R_50_C4_1x",
        "faster_rcnn_R_50_DC5_1x",
        "retinanet_R_50_FPN_1x",
        "keypoint_rcnn_R_50_FPN_1x",
        "faster_rcnn_X_101_32x8d_FPN_3x",
        "mask_rcnn_R_50_FPN_1x",
        "mask_rcnn_R_50_C4_1x",
        "mask_rcnn_R_50_DC5_1x",
    ]
    rank = {n: i for i, n in enumerate(first)}
    return sorted(names, key=lambda n: rank.get(n.split("/", 1)[1], len(first)))


def _result_path(results: Path, name: str) -> Path:
    return results / (name.replace("/", "__") + ".json")


def run_one(name: str, results: Path, timeout: float, images: list[str]) -> dict:
    """Check one model in a child process; returns its result row (also written to ``results``)."""
    out = _result_path(results, name)
    report = out.with_suffix(".report.json")
    report.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "d2ov_core",
        "-q",
        "verify",
        name,
        *images,
        "--weights",
        "random",
        "--precision",
        "FP32",
        "--stages",
        "--json",
        str(report),
    ]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        code, err, stdout = proc.returncode, proc.stderr, proc.stdout
    except subprocess.TimeoutExpired:
        code, err, stdout = None, f"timed out after {timeout:.0f} s", ""
    row = {"model": name, "exit": code, "seconds": round(time.perf_counter() - t, 1), "stdout": stdout}
    if report.is_file():
        row["report"] = json.loads(report.read_text())
        report.unlink()
        card = Path(row["report"]["ir"]).parent / "d2ov.json"
        if card.is_file():
            row["convert_s"] = json.loads(card.read_text()).get("converted_s")
    else:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        row["reason"] = lines[-1] if lines else f"exit code {code}, no output"
        row["traceback"] = "Traceback" in err
    out.write_text(json.dumps(row, indent=1))
    return row


def _cells(row: dict) -> list[str]:
    if row.get("same_as"):
        verdict = "pass" if row.get("ok") else "FAIL"
        return [
            row["model"],
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            verdict,
            f"the same model as {row['same_as']} with random weights (configs differ only in the training "
            "schedule): its result",
        ]
    rep = row.get("report")
    if rep is None:
        return [row["model"], "-", "-", "-", "-", "-", "-", "-", "-", "FAIL", row.get("reason", "")]
    dets = rep["detections"]
    matched = ", ".join(f"{d['matched']}/{d['reference']}" for d in dets)
    box = max((d["max_box_dev"] for d in dets), default=0.0)
    score = max((d["max_score_dev"] for d in dets), default=0.0)
    kp = [d for d in dets if d.get("max_keypoint_dev") is not None]
    off = sum(d.get("keypoints_off", 0) for d in kp)
    keypoints = (
        f"{max(d['max_keypoint_dev'] for d in kp):.3f} ({sum(d['keypoints_compared'] for d in kp)}"
        + (f", {off} beyond 0.5 px" if off else "")
        + ")"
        if kp
        else "-"
    )
    pan = [d for d in dets if d.get("min_segment_iou") is not None]
    segments = (
        ", ".join(f"{d['segments_matched']}/{d['segments_reference']}" for d in pan)
        + f"; {min(d['min_segment_iou'] for d in pan):.3f}"
        if pan
        else "-"
    )
    stages = {s["stage"]: s for s in rep["stages"]}
    notes = []
    prop = stages.get("proposals")
    if prop:
        notes.append("proposals identical: " + ", ".join(n.split(" of ")[0] for n in prop["notes"]))
    failed = [s["stage"] for s in rep["stages"] if s["ok"] is False]
    if failed:
        why = "; ".join(
            f"{s['stage']} {s['worst']} rel {s['max_rel']:.1e}"
            for s in rep["stages"]
            if s["ok"] is False and s["stage"] != "detections"
        )
        notes.insert(0, "failed: " + ", ".join(failed) + (f" ({why})" if why else " (see below)"))
    return [
        row["model"],
        f"{row.get('convert_s', '-')}",
        f"{rep['ir_mb']}",
        f"{rep['tensor_rel']:.1e}",
        matched,
        f"{box:.3f}",
        f"{score:.1e}",
        keypoints,
        segments,
        "pass" if rep["ok"] else "FAIL",
        "; ".join(notes),
    ]


def render(names: list[str], results: Path, doc: Path, tolerance: float = 1e-3) -> str:
    """Write the table of every model that has a result to ``doc``; returns its text."""
    rows = []
    for name in names:
        p = _result_path(results, name)
        if p.is_file():
            row = json.loads(p.read_text())
            twin = _result_path(results, row["same_as"]) if row.get("same_as") else None
            if twin is not None and twin.is_file():  # the twin's verdict as it stands now (it may be rerun)
                row["ok"] = bool(json.loads(twin.read_text()).get("report", {}).get("ok"))
            rows.append(row)
    header = [
        "model",
        "convert s",
        "IR MB (FP32)",
        "stage max rel",
        "matched (2 photos)",
        "max box dev px",
        "max score dev",
        "max keypoint dev px (visible)",
        "segments matched; min IoU",
        "pass",
        "notes / reason",
    ]
    lines = [
        "# The zoo check",
        "",
        "Every catalog model converted with calibrated random weights (no Model Zoo checkpoint is reachable here) to an",
        "FP32 IR, then `d2ov verify MODEL grace_hopper.jpg china.jpg --weights random --precision FP32 --stages`:",
        "stage tensors (backbone/FPN features, semantic head, RPN or RetinaNet head, ROI heads on the eager model's proposals) within",
        f"{tolerance:g} relative of PyTorch, and the final detections (score >= 0.3) of the deployed IR against Detectron2's",
        '(see `d2ov_core/measure/stages.py` and the README\'s "Stage-by-stage check"). "matched" counts detections',
        "found by both; where the RPN's proposals are not identical (near-tied objectness on random weights), missing",
        "detections are expected and do not fail a model; matched ones must agree within 0.5 px and 1e-3, and their",
        "visible keypoints (score > 0.05; random keypoint heads are calibrated to peaked heatmaps) within 0.5 px: 99%",
        "of them with random weights, whose noise heatmaps have near-equal peaks that a 1e-5 change can swap (the",
        "heatmaps themselves are held to 1e-3 at the `roi` stage). A semantic head adds its logits as a stage",
        "(`sem_seg`), and a map of segments its segments: where the proposals were identical, every segment matched (same",
        "class, IoU > 0.5) with IoU >= 0.98 (other proposals give other instances, hence other thing segments).",
        "",
        "With random weights the heads sit where tiny changes flip outcomes, so the heads are held to 1e-3 at the `roi`",
        "stage (class logits, box deltas, mask logits, keypoint heatmaps) and the final outputs by rules that allow for",
        "it: masks by their IoU pooled over the matched detections >= 0.9 (their probabilities sit near 0.5, and a mask of",
        "a few pixels flips whole), keypoints 99% within 0.5 px, scores within the class logits' measured deviation when",
        "that exceeds 1e-3.",
        "",
        "Rerun: `tools/zoo_check.sh` (one model at a time, each in its own process; `--only NAME`, `--force`).",
        f"This table: {len(rows)} of {len(names)} models, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores shared with other work (times are wall-clock under that load).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in _cells(row)) + " |")
    missing = [n for n in names if not _result_path(results, n).is_file()]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(missing) + "."]
    passed = sum(1 for r in rows if r.get("report", {}).get("ok") or r.get("ok"))
    lines += ["", f"{passed} of {len(rows)} pass."]
    notes = doc.with_name("zoo_notes.md")  # hand-written explanations of failures, kept across reruns
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    text = "\n".join(lines) + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    root = catalog.REPO_ROOT or Path.cwd()
    p = argparse.ArgumentParser(prog="zoo_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", help="check only this model (repeatable)")
    p.add_argument("--force", action="store_true", help="recheck models that already have a result")
    p.add_argument("--results", default=str(root / ".cache" / "zoo"), help="per-model results (default .cache/zoo)")
    p.add_argument("--doc", default=str(root / "docs" / "zoo.md"), help="the table (default docs/zoo.md)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per model (1800)")
    p.add_argument("--render-only", action="store_true", help="write the table from existing results")
    args = p.parse_args(argv)
    names = [n for n, s in catalog.CATALOG.items() if s.source == "model_zoo"]
    todo = names
    if args.only:
        for n in args.only:
            catalog.get(n)
        todo = [catalog.get(n).name for n in args.only]
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    failures = 0
    if not args.render_only:
        images = photos()
        keys = {n: model_key(n) for n in names}
        todo = order(todo)
        for i, name in enumerate(todo, 1):
            pause = results / "PAUSE"  # touch it to hold the run between two models (e.g. to run tests)
            while pause.exists():
                time.sleep(5)
            if _result_path(results, name).is_file() and not args.force:
                print(f"[{i}/{len(todo)}] {name}: kept", flush=True)
                continue
            twin = next(
                (
                    n
                    for n in order(names)
                    if n != name
                    and keys[n] == keys[name]
                    and _result_path(results, n).is_file()
                    and not json.loads(_result_path(results, n).read_text()).get("same_as")
                ),
                None,
            )
            if twin is not None:
                done = json.loads(_result_path(results, twin).read_text())
                row = {"model": name, "same_as": twin, "ok": bool(done.get("report", {}).get("ok"))}
                _result_path(results, name).write_text(json.dumps(row, indent=1))
                print(f"[{i}/{len(todo)}] {name}: the same model as {twin}", flush=True)
                render(names, results, Path(args.doc))
                continue
            row = run_one(name, results, args.timeout, images)
            verdict = "pass" if row.get("report", {}).get("ok") else "FAIL " + row.get("reason", "")
            print(f"[{i}/{len(todo)}] {name}: {verdict} ({row['seconds']:.0f} s)", flush=True)
            failures += not row.get("report", {}).get("ok")
            render(names, results, Path(args.doc))
    render(names, results, Path(args.doc))
    print(f"wrote {args.doc}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
