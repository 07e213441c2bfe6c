"""The task seam: every task resolves to its module, an unknown one is refused with the valid names,
each task lays out a small hand-built result (and the empty one), and no module outside the seam
tests task names."""

from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest

from d2ov_core.errors import InputError
from d2ov_core.runtime import settings as S
from d2ov_core.runtime.detections import Detections
from d2ov_core.runtime.tasks import TASK_NAMES, Task, all_tasks, get_task, task_of
from d2ov_core.store import catalog

from ..conftest import ROOT

H, W = 8, 10
NAMES = ("head", "foot")


def result(task: str, n: int = 2) -> Detections:
    """A hand-built result of ``task`` with ``n`` detections (0: the empty one)."""
    boxes = np.array([[1, 1, 4, 5], [5, 2, 9, 7]], np.float32)[:n]
    masks = np.zeros((n, H, W), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[i, y0:y1, x0:x1] = True
    extra = {}
    if task in ("instance_segmentation", "panoptic_segmentation"):
        extra["masks"] = masks
    if task == "keypoints":
        extra.update(keypoints=np.ones((n, 2, 3), np.float32), keypoint_names=NAMES, keypoint_skeleton=[NAMES])
    if task == "panoptic_segmentation":
        seg_map = np.zeros((H, W), np.int32)
        segments = []
        for i in range(n):
            seg_map[masks[i] & (seg_map == 0)] = i + 1
            segments.append(
                {
                    "id": i + 1,
                    "label": "a",
                    "category_id": 0,
                    "isthing": True,
                    "score": 0.9,
                    "area": int((seg_map == i + 1).sum()),
                }
            )
        seg_map[seg_map == 0] = n + 1
        segments.append(
            {
                "id": n + 1,
                "label": "sky",
                "category_id": 1,
                "isthing": False,
                "score": None,
                "area": int((seg_map == n + 1).sum()),
            }
        )
        extra.update(segment_map=seg_map, segments=segments)
    return Detections(
        boxes=boxes, scores=[0.9, 0.6][:n], class_ids=[0, 1][:n], labels=["a", "b"][:n], image_size=(H, W), **extra
    )


def test_the_tasks_are_the_task_settings_choices():
    assert TASK_NAMES == S.SETTINGS["task"].choices
    assert [t.name for t in all_tasks()] == list(TASK_NAMES)


@pytest.mark.parametrize("name", sorted({s.task for s in catalog.CATALOG.values()}))
def test_every_catalog_task_resolves_to_its_module(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name and task.label
    assert type(task).__module__ == f"d2ov_core.runtime.tasks.{name}" or name == "detection"
    assert catalog.sample_images(name), f"no sample images {task.examples}_*.jpg for {name}"


def test_an_unknown_task_is_refused_with_the_valid_names():
    with pytest.raises(InputError) as e:
        get_task("semantic_segmentation")
    assert all(name in str(e.value) for name in TASK_NAMES)


@pytest.mark.parametrize("name", TASK_NAMES)
@pytest.mark.parametrize("n", [2, 0])
def test_each_task_lays_out_its_result(name, n):
    task, det = get_task(name), result(name, n)
    assert task_of(det) is task
    rows = task.table_rows(det)
    assert all(len(r) == len(task.table_columns) for r in rows)
    assert len(rows) == (n + 1 if task.segment_map else n)  # a map: one row per segment, the stuff one too
    summary = task.summary(det, {"panoptic_score_threshold": 0.5}, 0.5)
    assert summary.startswith(f"**{n + 1 if task.segment_map else n}**")
    doc = det.to_dict()
    assert ("keypoint_names" in doc) == (name == "keypoints")
    assert ("panoptic" in doc) == task.segment_map
    assert all(("mask" in i) == ("segm" in task.iou_types) for i in doc["instances"])
    back = Detections.from_dict(json.loads(json.dumps(doc)))  # each task reads back its own keys
    assert task_of(back) is task or (n == 0 and name == "instance_segmentation")  # no instance: no mask to tell
    assert back.to_dict() == doc


def test_detection_rows_and_segment_rows():
    assert get_task("detection").table_rows(result("detection", 1)) == [["a", 0.9, 1.0, 1.0, 4.0, 5.0]]
    rows = get_task("panoptic_segmentation").table_rows(result("panoptic_segmentation", 1))
    assert rows == [[1, "a", "thing", 12, 0.9], [2, "sky", "stuff", 68, None]]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_each_task_compares_a_result_with_itself(name):
    from d2ov_core.measure.verify import Tolerance, match

    det = result(name)
    c = match(det, det)
    assert c.ok(Tolerance()) and c.matched == 2
    assert (c.min_segment_iou == 1.0) if get_task(name).segment_map else c.min_segment_iou is None


@pytest.mark.parametrize("name", TASK_NAMES)
def test_each_task_draws_with_either_painter(name):
    calls = []

    class Painter:
        def instances(self, image, det, names):
            calls.append("instances")
            return image

        def segments(self, image, segment_map, segments, names):
            calls.append("segments")
            return image

    get_task(name).draw(np.zeros((H, W, 3), np.uint8), result(name), ["a", "b"], Painter())
    assert calls == (["segments"] if get_task(name).segment_map else ["instances"])


#: the modules that may test a value against a task's name: the seam itself, the catalog (which
#: describes each task's entries), and the conversion that names the task an architecture has
SEAM = {"runtime/tasks", "store/catalog.py", "export/model.py"}
#: left for the lead engineer's files (not the seam's to edit): the accuracy table's PQ set
PENDING = {"measure/accuracy.py"}


#: an expression that holds a task's name: ``task``, ``predictor.task``, ``meta["task"]``
TASKISH = re.compile(r"\btask\b['\"]?\]?$")


def _task_tests(path) -> list[str]:
    """``x == "keypoints"``, ``task in ("detection", ...)``, ``{...: ...}.get(task)`` comparisons of a
    task-ish value with a task name, as ``line: source``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [
                c
                for c in [node.left, *node.comparators]
                for c in (
                    [c]
                    if isinstance(c, ast.Constant)
                    else c.elts
                    if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                    else []
                )
            ]
            others = [c for c in [node.left, *node.comparators] if not isinstance(c, ast.Constant)]
            if any(isinstance(c, ast.Constant) and c.value in TASK_NAMES for c in consts) and any(
                TASKISH.search(ast.unparse(o)) for o in others
            ):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_the_seam_tests_task_names():
    pkg = ROOT / "d2ov_core"
    bad = []
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg).as_posix()
        if any(rel.startswith(s) for s in SEAM | PENDING):
            continue
        bad += [f"{rel}:{hit}" for hit in _task_tests(f)]
    assert not bad, "ask the task (d2ov_core.runtime.tasks) instead:\n" + "\n".join(bad)


def test_the_task_name_check_finds_a_task_test(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('def f(predictor):\n    return predictor.task == "keypoints" or iou_type == "keypoints"\n')
    assert _task_tests(f) == ["2: predictor.task == 'keypoints'"]


def test_a_config_is_the_first_task_it_is():
    from types import SimpleNamespace as N

    from d2ov_core.export.tasks import EXPORT_TASKS, export_task, for_task

    def cfg(arch="GeneralizedRCNN", keypoints=False, masks=False):
        return N(MODEL=N(META_ARCHITECTURE=arch, KEYPOINT_ON=keypoints, MASK_ON=masks))

    assert {t.name for t in EXPORT_TASKS} == set(TASK_NAMES)
    assert export_task(cfg("PanopticFPN", masks=True)).name == "panoptic_segmentation"
    assert export_task(cfg(keypoints=True)).name == "keypoints"
    assert export_task(cfg(masks=True)).name == "instance_segmentation"
    assert export_task(cfg("RetinaNet")).name == "detection"
    assert for_task("detection").eager_fields({"instances": None}, [], {}) == {}
    with pytest.raises(InputError):
        for_task("semantic_segmentation")
