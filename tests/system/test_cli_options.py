"""Every CLI command with each of its options, on a small model of each task: no traceback, and the exit
code each case should have (0, or 2 with one line for a combination the command refuses).

The cases are built from the argparse parsers themselves (:func:`d2ov_core.cli.build_parser`): a
choice option runs with each of its choices, a flag switched on, an option that takes its own code
path with the value(s) in :data:`VALUES`, and the options that only set a number, a name or a place
all together in one case per command (:data:`PARAMS`). An option that appears in a parser without a
case here fails :func:`test_every_option_has_a_case` (and its command's test), so a new option is
exercised the day it is added. ``predict --backend pytorch`` printed a traceback for every model
for weeks because nothing ran it: this is the guard for that class of bug.

Options whose code path differs by task (:data:`PER_TASK`) run on the demo model of each of the four
tasks, as does every command as it is; the others run on one model, to keep the file's cost at a few
minutes. Everything runs in this process through ``main(argv)`` (what
``d2ov`` runs), so an exception escaping a command is caught here with its traceback; ``serve``
runs as a subprocess because it does not return.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import traceback
import urllib.request
from pathlib import Path

import huggingface_hub.constants
import pytest

from d2ov_core.cli import build_parser, main
from d2ov_core.runtime.ir import bf16_available
from d2ov_core.store import catalog
from d2ov_core.store.lookup import bundled_ir

from ..conftest import ROOT, SAMPLES
from ..fake_v2 import FakeV2Server
from ..helpers import free_port, make_clip, stop, wait_until_up

MODELS = {
    "detection": "demo/faster_rcnn_shapes",
    "instance_segmentation": "demo/mask_rcnn_shapes",
    "keypoints": "demo/keypoint_rcnn_figures",
    "panoptic_segmentation": "demo/panoptic_fpn_shapes",
}
IMAGE = {
    "detection": "shapes_1.jpg",
    "instance_segmentation": "shapes_2.jpg",
    "keypoints": "figures_1.jpg",
    "panoptic_segmentation": "panoptic_1.jpg",
}
GENERATOR = {
    "detection": "make_shapes",
    "instance_segmentation": "make_shapes",
    "keypoints": "make_figures",
    "panoptic_segmentation": "make_panoptic",
}

#: positional arguments (and what a command always needs) before the option under test
BASE = {
    "list": [],
    "convert": ["{model}"],
    "predict": ["{model}", "{image}"],
    "verify": ["{model}", "{image}"],
    "eval": ["{model}", "--annotations", "{ann}", "--images", "{images}", "--limit", "2"],
    "bench": ["{model}", "--images", "{image}", "--runs", "1", "--warmup", "0", "--variants", "ov-fp16w"],
    "profile": ["{model}", "{image}"],
    "push": ["{model}", "--repo-id", "someone/models", "--dry-run", "{tmp}/push"],
    "export": ["{model}", "--ovms", "{tmp}/ovms"],
    "space": ["--dry-run", "{tmp}/space"],
    "serve": ["--port", "{port}"],
}
#: commands whose cases do not depend on a model
NO_MODEL = {"list", "space", "serve"}

_INT8 = ["--precision", "INT8", "--calibration", "{cal}", "--calibration-size", "1"]
_VIDEO_BENCH = [
    "!", "{model}", "--video", "{video}", "--runs", "1", "--warmup", "0", "--every", "3", "--max-frames", "2",
    "--precision", "INT8", "--renderer", "plain", "--out", "{tmp}/bv",
]  # fmt: skip
_SET = ["--annotations", "{ann}", "--images", "{images}"]
_PT = ["--backend", "pytorch"]
_OWN = ["{config}", "--weights", "{pth}", "--classes", "{classes}"]  # a user's own model: config + weights + names

#: options that only set a number, a name or a place (no other code path): all of a command's in one case
PARAMS: dict[str, list[str]] = {
    "convert": [
        "--calibration-size",
        "1",
        "--eval-limit",
        "1",
        "--max-ap-drop",
        "100",
        *_INT8,
        *_SET,
        "--recipe",
        "d2ov-3",
        "--out",
        "{tmp}/out",
        "--sample",
        "{image}",
    ],
    "predict": ["--threshold", "0.9", "--device", "CPU", "--json", "{tmp}/p.json", "--render", "{tmp}/r"],
    "verify": [
        "--device",
        "CPU",
        "--min-score",
        "0.5",
        "--box-tol",
        "1",
        "--score-tol",
        "0.01",
        "--mask-iou",
        "0.9",
        "--keypoint-tol",
        "1.5",
        "--segment-iou",
        "0.9",
        "--json",
        "{tmp}/v.json",
    ],
    "eval": ["--device", "CPU", "--limit", "1", "--json", "{tmp}/e.json"],
    "bench": [
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--calibration",
        "{cal}",
        "--out",
        "{tmp}/bench",
        "--images",
        "{image}",
        "{image}",
    ],
    "profile": ["--device", "CPU", "--threads", "1", "--top", "3", "--json", "{tmp}/prof.json"],
    "push": ["--revision", "v1"],
    "export": ["--name", "shapes", "--nireq", "1"],
    "space": ["--model", "{model}", "--examples", "{image}", "--title", "My detector", "--private"],
}

#: code paths of non-choice options: argv tails after the command's BASE (``["!", args...]`` replaces
#: BASE). Choice options run each choice; flags run switched on.
VALUES: dict[tuple[str, str], list[list[str]]] = {
    ("convert", "--weights"): [["--weights", "{pth}"]],
    ("convert", "--classes"): [["!", *_OWN, "--out", "{tmp}/own"]],
    ("convert", "--calibration"): [_INT8],
    # the recipes differ only in NNCF's arguments (export/quantize.py RECIPES): the default one (d2ov-3)
    # runs in PARAMS, NNCF's own defaults here
    ("convert", "--recipe"): [[*_INT8, "--recipe", "nncf-default"]],
    ("convert", "--annotations"): [_SET],
    ("convert", "--images"): [_SET],
    ("convert", "--panoptic"): [_SET + ["--panoptic", "{panoptic}"]],
    ("predict", "--weights"): [["--weights", "{pth}", *_PT]],
    ("predict", "--classes"): [["!", *_OWN, "{image}", *_PT], ["!", *_OWN, "{image}", "--precision", "FP32"]],
    ("predict", "--device"): [["--device", "AUTO"]],
    ("predict", "--static-shape"): [["--static-shape", "512x512"]],
    ("predict", "--server"): [
        ["!", "{image}", "{image}", "--server", "{server}", "--json", "{tmp}/remote.json", "--render", "{tmp}/remote"]
    ],
    ("predict", "--remote-model"): [["!", "{image}", "--server", "{server}", "--remote-model", "fake"]],
    ("predict", "--timeout"): [["!", "{image}", "--server", "{server}", "--timeout", "30"]],
    ("predict", "--json"): [["--json", "{tmp}/p.json"]],
    ("predict", "--every"): [
        ["!", "{model}", "{video}", "--every", "4", "--render", "{tmp}/v", "--json", "{tmp}/v.json"]
    ],
    ("predict", "--max-frames"): [["!", "{model}", "{video}", "--max-frames", "2"]],
    ("predict", "--track"): [
        ["!", "{model}", "{video}", "--track", "--every", "4", "--render", "{tmp}/t", "--json", "{tmp}/t.json"],
        ["!", "{model}", "{image}", "--track"],
    ],
    ("predict", "--render"): [["--render", "{tmp}/r"]],
    ("verify", "--weights"): [["--weights", "{pth}"]],
    ("verify", "--classes"): [["!", *_OWN, "{image}", "--precision", "FP32"]],
    ("verify", "--stage-tol"): [["--stages", "--stage-tol", "0.01"]],
    ("eval", "--panoptic"): [["--panoptic", "{panoptic}"]],
    ("eval", "--panoptic-pngs"): [["--panoptic", "{panoptic}", "--panoptic-pngs", "{panoptic_pngs}"]],
    ("eval", "--weights"): [["--weights", "{pth}", *_PT]],
    ("eval", "--classes"): [["!", *_OWN, *_PT, *_SET, "--limit", "1"]],
    ("eval", "--static-shape"): [["--static-shape", "512x512"]],
    ("bench", "--weights"): [["--weights", "{pth}"]],
    # the video bench: one run takes every video option's code path (identical cases run once)
    ("bench", "--video"): [_VIDEO_BENCH],
    ("bench", "--every"): [_VIDEO_BENCH],
    ("bench", "--max-frames"): [_VIDEO_BENCH],
    ("bench", "--renderer"): [_VIDEO_BENCH],
    ("bench", "--precision"): [_VIDEO_BENCH, ["--precision", "INT8"]],  # the second: not without a video
    ("bench", "--frames"): [["!", "{model}", "--frames", "2", "--runs", "1", "--warmup", "0", "--renderer", "plain"]],
    ("bench", "--static-shape"): [["--static-shape", "512x512", "--variants", "ov-static"]],
    ("profile", "--weights"): [["--weights", "{pth}"]],
    ("profile", "--static-shape"): [["--static-shape", "512x512"]],
    ("push", "--dry-run"): [["!", "{model}", "--repo-id", "someone/models"]],  # no dry run: the Hub, offline here
    ("export", "--name"): [["--name", "bad/name"]],
    ("space", "--repo-id"): [["!", "--repo-id", "someone/space"]],  # the Hub, offline here
    ("space", "--model"): [["--model", "{model}"]],
    ("space", "--weights"): [["--model", *_OWN]],
    ("space", "--classes"): [["--model", *_OWN]],
    ("space", "--precision"): [["--model", "{model}", "--precision", "FP16,INT8", "--calibration", "{cal}"]],
    ("space", "--calibration"): [["--model", "{model}", "--precision", "FP16,INT8", "--calibration", "{cal}"]],
    ("space", "--annotations"): [["--model", "{model}", *_SET]],
    ("space", "--images"): [["--model", "{model}", *_SET]],
    ("space", "--only"): [["--model", "{model}", "--only"]],
    ("space", "--ir-repo"): [["--model", "{model}", "--ir-repo", "someone/irs"]],
    ("serve", "--host"): [["--host", "127.0.0.1"]],
    ("serve", "--server"): [["--server", "{server}"]],
    ("serve", "--model"): [["--model", "{model}", "--examples", "{cal}", "--title", "My detector"]],
    ("serve", "--examples"): [["--model", "{model}", "--examples", "{cal}", "--title", "My detector"]],
    ("serve", "--title"): [["--model", "{model}", "--examples", "{cal}", "--title", "My detector"]],
}
#: what a choice needs beside it to take its code path: (command, option, choice or None for all)
CHOICE_EXTRA: dict[tuple[str, str, str | None], list[str]] = {
    ("convert", "--precision", "INT8"): ["--calibration", "{cal}", "--calibration-size", "1"],
    ("bench", "--variants", None): ["--static-shape", "512x512"],
}
#: options whose code path differs by task: run on the demo model of every task (with the command as
#: it is); every other option runs on one model (OWN_TASK's, else the detection demo)
PER_TASK = {
    "convert": {"--precision"},
    "predict": {"--backend", "--precision", "--static-shape", "--render", "--json", "--track"},
    "verify": {"--stages"},
    "eval": {"--backend", "--static-shape"},
    "profile": {"--static-shape"},
    "space": {"--model"},
}
OWN_TASK = {"--panoptic": "panoptic_segmentation", "--panoptic-pngs": "panoptic_segmentation"}
#: choice options taking several values (nargs="+"): every choice in one run, but the hardware-bound ones
#: alone (they may be refused on this CPU)
HARDWARE_CHOICES = {"ov-bf16", "BF16"}
#: cases that must fail in one line (exit 2): (command, predicate on the argv, words the message must hold);
#: every other case must exit 0
REFUSED = [
    (
        "predict",
        lambda a: "pytorch" in a and ("--precision" in a or "--static-shape" in a or "AUTO" in a or "THROUGHPUT" in a),
        "not with --backend pytorch",
    ),
    ("predict", lambda a: "--track" in a and not any(x.endswith(".mp4") for x in a), "no video among the inputs"),
    (
        "bench",
        lambda a: "--video" not in a and "--frames" not in a and "--precision" in a,
        "only with --video or --frames",
    ),
    ("push", lambda a: "--dry-run" not in a, "offline"),  # the Hub, offline here
    ("space", lambda a: "--dry-run" not in a, ""),
    ("export", lambda a: "bad/name" in a, "name"),
    ("space", lambda a: "--ir-repo" in a and "--dry-run" in a, "--ir-repo uploads"),
]
#: not run, and why
NOT_RUN = {("serve", "--share"): "opens a public gradio.live tunnel: needs the internet, and tests stay on 127.0.0.1"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _name(action: argparse.Action) -> str:
    return next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])


def _tails(command: str, action: argparse.Action) -> list[list[str]]:
    """The argv tails that exercise one option of ``command``."""
    opt = _name(action)
    if (command, opt) in VALUES:
        return VALUES[(command, opt)]
    if action.choices is not None:
        choices = [str(c) for c in action.choices]
        extra = [CHOICE_EXTRA.get((command, opt, c), CHOICE_EXTRA.get((command, opt, None), [])) for c in choices]
        if action.nargs == "+":  # all at once, but what this CPU may refuse
            common = [c for c in choices if c not in HARDWARE_CHOICES]
            return [[opt, *common, *extra[0]]] + [[opt, c, *extra[0]] for c in choices if c in HARDWARE_CHOICES]
        return [[opt, c, *e] for c, e in zip(choices, extra)]
    if action.nargs == 0:
        return [[opt]]
    if opt in PARAMS.get(command, ()) or opt in BASE[command]:
        return []  # in the command's parameter case, or always given
    raise KeyError(
        f"d2ov {command} {opt}: no case in tests/system/test_cli_options.py (VALUES or PARAMS); add the "
        "value(s) that take its code path"
    )


def _cases(command: str, p: argparse.ArgumentParser) -> list[tuple[str, str, list[str]]]:
    """``(task, option, argv)`` for every option of ``command``; argv still holds ``{placeholders}``."""
    base = BASE[command]
    out = [("detection", "(parameters)", [command, *base, *PARAMS[command]])] if command in PARAMS else []
    for action in _options(p):
        opt = _name(action)
        if (command, opt) in NOT_RUN:
            continue
        tasks = (
            list(MODELS)
            if opt in PER_TASK.get(command, ())
            else ["detection"]
            if command in NO_MODEL
            else [OWN_TASK.get(opt, "detection")]
        )
        for tail in _tails(command, action):
            argv = tail[1:] if tail[:1] == ["!"] else [*base, *tail]
            out += [(task, opt, [command, *argv]) for task in tasks]
    if command not in NO_MODEL:  # and the command as it is, on every task
        out += [(task, "", [command, *base]) for task in MODELS]
    seen, unique = set(), []
    for case in out:
        key = (case[0], tuple(case[2]))
        if key not in seen:
            seen.add(key)
            unique.append(case)
    return unique


def test_every_option_has_a_case():
    """Fails the day an option is added without a way to exercise it here."""
    missing = []
    for command, p in _commands().items():
        assert command in BASE, f"new command d2ov {command}: add it to BASE in {__file__}"
        try:
            _cases(command, p)
        except KeyError as e:
            missing.append(str(e))
    assert not missing, missing


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Placeholders' values: generated 2-image COCO sets per task (other seeds than the test splits),
    the demo models' configs and weights, a model server on 127.0.0.1 serving the detection demo."""
    root = tmp_path_factory.mktemp("cli_options")
    sets = {}
    for gen in sorted(set(GENERATOR.values())):
        out = root / gen
        subprocess.run(
            [
                sys.executable,
                "-m",
                f"tools.{gen}",
                "--out",
                str(out),
                "--split",
                "test",
                "--num",
                "2",
                "--seed",
                "4242",
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        sets[gen] = out
    cal = root / "calibration"
    cal.mkdir()
    for f in SAMPLES.glob("*.jpg"):
        shutil.copy(f, cal / f.name)
    video = make_clip(root / "clip.mp4", frames=8, fps=10)
    server = FakeV2Server(bundled_ir(MODELS["detection"], "FP16"), name="fake").start()
    yield {"root": root, "sets": sets, "cal": cal, "server": server.url, "video": str(video)}
    server.stop()


def _values(inputs: dict, task: str, tmp: Path) -> dict[str, str]:
    name = MODELS[task]
    folder = ROOT / "models" / name
    data = inputs["sets"][GENERATOR[task]]
    spec = catalog.get(name)
    return {
        "model": name,
        "image": str(SAMPLES / IMAGE[task]),
        "ann": str(data / "test.json"),
        "images": str(data),
        "panoptic": str(data / "test_panoptic.json"),
        "panoptic_pngs": str(data / "test_panoptic"),
        "cal": str(inputs["cal"]),
        "tmp": str(tmp),
        "pth": str(folder / "model_final.pth"),
        "config": str(folder / "config.yaml"),
        "classes": ",".join(spec.classes),
        "server": inputs["server"],
        "video": inputs["video"],
        "port": str(free_port()),
    }


def _expected(command: str, argv: list[str], task: str) -> tuple[int, str]:
    """``(exit code, words of the message)``; code -1: 0 or 1 (verify's verdict)."""
    if command in ("convert", "eval") and "--panoptic" in argv:
        return (0, "") if task == "panoptic_segmentation" else (2, "panoptic")
    for cmd, refused, message in REFUSED:
        if cmd == command and refused(argv):
            return 2, message
    if ("BF16" in argv or "ov-bf16" in argv) and not bf16_available():
        return 2, "bfloat16"  # this CPU has none: refused in one line
    if command == "verify" and "FP32" not in argv:
        # 0 or 1: verify's "differs past the tolerances"; every precision but FP32 may (the bundled FP16
        # IR of the detection demo moves one score by 1.4e-3 against a tolerance of 1e-3)
        return -1, ""
    return 0, ""


def _run(argv: list[str]) -> tuple[int | str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str = main(["-q", *argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:
            code = "traceback"
            err.write(traceback.format_exc())
    return code, out.getvalue(), err.getvalue()


COMMANDS = [c for c in BASE if c != "serve"]
#: cases per test: a command's cases are split into tests of at most this many, so that no test comes
#: near the per-test timeout when another worker shares the cores (convert's 22 cases took 10 minutes)
CHUNK = 8


def _parts() -> list:
    parts = []
    for command in COMMANDS:
        n = -(-len(_cases(command, _commands()[command])) // CHUNK)
        parts += [pytest.param(command, k, id=f"{command}-{k + 1}of{n}") for k in range(n)]
    return parts


@pytest.mark.slow
@pytest.mark.parametrize(("command", "part"), _parts())
def test_every_option_of_every_command(command, part, inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HUB_OFFLINE when first imported; an earlier test may have imported it
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    failures = []
    cases = _cases(command, _commands()[command])[part * CHUNK : (part + 1) * CHUNK]
    for i, (task, _opt, argv) in enumerate(cases, start=part * CHUNK):
        tmp = tmp_path / f"case{i}"
        tmp.mkdir()
        values = _values(inputs, task, tmp)
        argv = [a.format(**values) for a in argv]
        code, out, err = _run(argv)
        want, message = _expected(command, argv, task)
        shown = f"d2ov {' '.join(argv)} [{task}] -> {code}: {(err or out).strip()[-1500:]}"
        if code == "traceback" or "Traceback" in err:
            failures.append("TRACEBACK " + shown)
        elif code not in (0, 2) and not (want == -1 and code == 1):
            failures.append("EXIT CODE " + shown)
        elif code == 2 and len(err.strip().splitlines()) != 1:
            failures.append("NOT ONE LINE " + shown)
        elif want >= 0 and code != want:
            failures.append(f"EXPECTED {want} " + shown)
        elif want == 2 and message and message not in err:
            failures.append(f"EXPECTED {message!r} " + shown)
        elif want == -1 and code not in (0, 1):
            failures.append("EXPECTED 0 or 1 " + shown)
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


def _serve_cases() -> list[list[str]]:
    return [argv[1:] for _, _, argv in _cases("serve", _commands()["serve"])]


@pytest.mark.slow
@pytest.mark.parametrize("argv", _serve_cases(), ids=lambda a: " ".join(a[2:]) or "plain")
def test_serve_with_each_option_starts_and_answers(argv, inputs, tmp_path):
    """``d2ov serve`` with each option: it comes up on 127.0.0.1 and its page answers."""
    port = free_port()
    values = {**_values(inputs, "detection", tmp_path), "port": str(port)}
    argv = [a.format(**values) for a in argv]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "d2ov_core", "serve", *argv], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/", log_path, timeout=180)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "d2ov" in page or "gradio" in page.lower(), page[:500]
        assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        stop(proc)
