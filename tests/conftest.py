"""Shared fixtures. Everything runs for real: detectron2 on CPU, OpenVINO, files on disk."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Hermetic before anything imports huggingface_hub or gradio (they read these at import): no usage
# telemetry, and the Hub endpoint is a closed local port, so a Hub call no test asked for (gradio_client
# and huggingface_hub fetch an "agent harnesses" registry from the endpoint) fails at once on
# 127.0.0.1; the tests that talk to a Hub point HF_ENDPOINT at their own local stand-in.
os.environ.update(HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False", HF_ENDPOINT="http://127.0.0.1:9")
SAMPLES = ROOT / "d2ov_core" / "data" / "samples"


def _pin_worker() -> None:
    """Under pytest-xdist, each worker (and every process it starts: CLIs, app servers, inherit it)
    runs on its own share of the CPUs. Unpinned, two workers' PyTorch and OpenVINO thread pools (each
    sized to every core) fight over the same cores: measured on 2 CPUs, the PyTorch keypoint
    evaluation of ``test_keypoint_demo`` ran 3.8x slower than pinned (and past the 600 s timeout in
    CI), OpenVINO's 1.4x. d2ov sizes its pools to the affinity mask (``runtime.ir.usable_cpus``)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = len(cpus) // count
    if share:
        index = int(worker[2:]) % count
        os.sched_setaffinity(0, cpus[index * share : (index + 1) * share])


_pin_worker()


#: the Detectron2 sdist `tools/setup.sh` downloaded (d2ov space puts it in Spaces): seeded into the
#: session's cache so no test downloads it
_SETUP_CACHE = Path(os.environ.get("D2OV_CACHE") or Path.home() / ".cache" / "d2ov")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Each test session gets its own d2ov cache (no cross-talk with a user's ~/.cache/d2ov), and is
    hermetic: ``D2OV_OFFLINE=1`` (inherited by every subprocess) makes any download that is not a
    test's own fail at once, whether or not this machine reaches the Model Zoo; tests that serve a
    download from 127.0.0.1 lift it for themselves."""
    from d2ov_core.store import detectron2_source, weights

    if "D2OV_TEST_CACHE" in os.environ:
        os.environ["D2OV_CACHE"] = os.environ["D2OV_TEST_CACHE"]
    else:
        os.environ["D2OV_CACHE"] = str(tmp_path_factory.mktemp("d2ov_cache"))
    os.environ["D2OV_OFFLINE"] = "1"
    os.environ.pop("D2OV_ZOO_URL", None)
    sdist = weights._cache_path(detectron2_source.SDIST_URL)
    seeded = _SETUP_CACHE / sdist.relative_to(weights.cache_dir())
    if seeded.is_file() and Path(str(seeded) + ".sha256").is_file() and not sdist.is_file():
        sdist.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(seeded, sdist)
        shutil.copy(str(seeded) + ".sha256", str(sdist) + ".sha256")
    yield


NETGUARD_DIR = Path(__file__).resolve().parent / "netguard"
#: what the tests that build a venv with pip may reach besides 127.0.0.1: the package registries
REGISTRIES = "pypi.org,files.pythonhosted.org,download.pytorch.org"


def netguard_env(registries: bool = False) -> dict[str, str]:
    """Environment that puts a started Python process under the network guard (for tests that build a
    subprocess's environment from scratch); ``registries``: pip may reach the package registries."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(NETGUARD_DIR), os.environ.get("PYTHONPATH_BEFORE_GUARD")])),
        "D2OV_NET_GUARD_LOG": os.environ["D2OV_NET_GUARD_LOG"],
    }
    return dict(env, D2OV_NET_GUARD_ALLOW=REGISTRIES) if registries else env


@pytest.fixture(scope="session", autouse=True)
def _network_guard(tmp_path_factory):
    """Hermetic by force: this process and every Python process the tests start (``PYTHONPATH`` carries
    ``tests/netguard/sitecustomize.py``) may connect to loopback only; see :func:`_no_outbound`."""
    from tests.netguard import sitecustomize as guard

    folder = tmp_path_factory.mktemp("netguard")
    folder.chmod(0o777)  # the Space test's app runs as nobody
    log = folder / "refused.log"
    log.touch()
    log.chmod(0o666)
    os.environ["PYTHONPATH_BEFORE_GUARD"] = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD_DIR), os.environ.get("PYTHONPATH")]))
    os.environ["D2OV_NET_GUARD_LOG"] = str(log)
    guard.install(str(log))
    yield log


#: refused like everything else, but not a test failure, because the answer is the same with or without
#: network and the attempt is a library's, not d2ov's:
#: - OpenVINO's usage telemetry (``import openvino`` loads ovc, which posts a Google Analytics event unless
#:   the user opted out or ``CI=true``);
#: - Gradio's SSRF check (safehttpx): a file URL whose host resolves to a private address (the security
#:   tests send ``http://127.0.0.1:.../config``) is looked up again with Google's DNS-over-HTTPS; refused
#:   or answered, the URL is rejected.
TOLERATED = ("www.google-analytics.com:", "dns.google:")
#: ``strict`` (the default): a test during which an attempt was logged fails; ``report`` (to survey a
#: new dependency's habits): attempts are refused all the same, and listed with their test at the end
#: of the run
GUARD_MODE = os.environ.get("D2OV_NET_GUARD", "strict")
_REPORTED: list[str] = []


@pytest.fixture(autouse=True)
def _no_outbound(_network_guard, request):
    """Every attempt of any process of the suite to reach beyond 127.0.0.1 is refused (the guard) and
    logged; here it is tied to the test during which it happened, even when the code under test caught
    the refusal: that test fails (or, with ``D2OV_NET_GUARD=report``, is listed in the run's summary)."""
    start = _network_guard.stat().st_size
    yield
    with open(_network_guard) as f:
        f.seek(start)
        refused = "".join(line for line in f if not any(f" {t}" in line for t in TOLERATED))
    if refused and GUARD_MODE == "strict":
        pytest.fail("outbound connection(s) beyond 127.0.0.1 (pid host:port program):\n" + refused, pytrace=False)
    _REPORTED.extend(f"{request.node.nodeid}: {line}" for line in refused.splitlines())


def pytest_terminal_summary(terminalreporter):
    if _REPORTED:
        terminalreporter.section("network guard: refused attempts beyond 127.0.0.1")
        for line in _REPORTED:
            terminalreporter.line(line)


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Tests that call the CLI's ``main()`` in this process let it configure logging as a command
    does (``-q``: the root logger at ERROR); that must not silence the next test's warnings."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for h in list(root.handlers):
        if type(h) is logging.StreamHandler and h not in handlers:  # basicConfig's, not pytest's own
            root.removeHandler(h)


@pytest.fixture
def local_downloads(monkeypatch):
    """For a test whose downloads come from its own server on 127.0.0.1: lifts ``D2OV_OFFLINE``
    (in this process and the subprocesses it starts)."""
    monkeypatch.delenv("D2OV_OFFLINE", raising=False)


def real_photo() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def other_photo() -> Path:
    """A second real photo (scikit-learn's china.jpg, 427x640; scikit-learn comes with NNCF)."""
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"


TINY_OVERRIDES = [
    "MODEL.RESNETS.DEPTH",
    50,
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    8,
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    16,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    32,
    "MODEL.RESNETS.NORM",
    "BN",
    "MODEL.FPN.OUT_CHANNELS",
    32,
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    16,
    "MODEL.ROI_HEADS.NUM_CLASSES",
    3,
    "INPUT.MIN_SIZE_TEST",
    320,
    "INPUT.MAX_SIZE_TEST",
    512,
]


def write_tiny_config(path: Path, mask: bool = True) -> Path:
    """A small Mask R-CNN / Faster R-CNN FPN config (3 classes) written as a full config dump."""
    import d2ov_core.export.compat as compat

    compat.apply()
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    name = (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
        if mask
        else "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"
    )
    cfg.merge_from_file(model_zoo.get_config_file(name))
    cfg.merge_from_list([str(v) if not isinstance(v, str) else v for v in TINY_OVERRIDES])
    cfg.MODEL.DEVICE = "cpu"
    path.write_text(cfg.dump())
    return path


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory):
    from d2ov_core.store import catalog

    cfg = write_tiny_config(tmp_path_factory.mktemp("tiny") / "tiny_mask_rcnn.yaml")
    return catalog.custom(cfg, "random", ["circle", "square", "triangle"])


@pytest.fixture(scope="session")
def tiny_ir(tiny_spec, tmp_path_factory) -> Path:
    """A converted random-weights tiny Mask R-CNN IR (FP32), converted once per session."""
    from d2ov_core.export.convert import convert

    return convert(
        tiny_spec,
        weights="random",
        out=tmp_path_factory.mktemp("tiny_ir"),
        fp16=False,
        sample=real_photo(),
        progress=False,
    )


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m d2ov_core ARGS`` in a subprocess (as a user runs it)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "d2ov_core", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


#: the test files that take longest (``--durations`` of the last runs), longest first: ``make test``
#: runs files on two workers in collection order (``--dist loadfile --no-loadscope-reorder``), so
#: starting the long ones first keeps one worker from being left with a long file at the end
LONGEST_FIRST = (
    "system/test_cli_options",
    "system/test_stages",
    "system/test_app_reliability",
    "system/test_convert",
    "system/test_space",
    "system/test_app",
    "system/test_panoptic_demo",
    "system/test_keypoint_demo",
    "system/test_demo_models",
    "system/test_wheel",
    "system/test_faults",
    "system/test_bench_video",
    "system/test_bench",
    "system/test_zoo_mirror",
    "system/test_peers",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(f"{item.path.parent.name}/{item.path.stem}", len(rank)))


#: the only reasons a test may skip when ``CI=true``: hardware a CI machine may lack (the same test runs
#: on the other CPU kind). Any other skip fails the run there: CI must not pass by not testing.
CI_ALLOWED_SKIPS = ("this CPU has no native bfloat16",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI", "").lower() in ("true", "1") and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = str(rep.longrepr[2]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if not any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
            rep.outcome = "failed"
            rep.longrepr = f"skipped under CI=true, where only {list(CI_ALLOWED_SKIPS)} may skip: {reason}"
