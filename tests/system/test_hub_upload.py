"""The two uploads to the Hugging Face Hub, end to end: ``d2ov space --repo-id`` and ``d2ov push``
run as a user runs them (a subprocess with ``HF_ENDPOINT``/``HF_TOKEN`` set) against a stand-in Hub on
127.0.0.1 (:mod:`tests.fake_hub`), which stores what arrives: the create_repo request, each commit, and
the LFS objects (checked against their sha256 and size). What arrived is compared byte for byte with
what the dry runs write. The client takes huggingface_hub's LFS path (``HF_HUB_DISABLE_XET=1``; the Xet
path needs Xet's storage service, which the stand-in does not offer)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, run_cli
from ..fake_hub import FakeHub, hub_env
from ..fake_v2 import closed_port_url

TOKEN = "hf_d2ov_test_token"
IR_MODEL = "demo/mask_rcnn_shapes"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture()
def hub():
    with FakeHub(token=TOKEN) as h:
        yield h


@pytest.fixture()
def env(hub, tmp_path):
    return hub_env(hub.url, TOKEN, tmp_path / "hf_home")


def _d2ov_commits(hub: FakeHub, repo_type: str, repo_id: str) -> list[dict]:
    """The commits after the Hub's own initial one (which only holds .gitattributes)."""
    commits = hub.repos[(repo_type, repo_id)]["commits"]
    assert commits[0]["summary"] == "initial commit"
    return commits[1:]


def _one_error_line(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-1000:], res.stderr[-3000:])
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("d2ov: error: "), lines
    assert "Traceback" not in res.stderr
    return lines[0]


# -- d2ov space ---------------------------------------------------------------------------------


def test_space_is_created_and_uploaded_as_the_dry_run_writes_it(hub, env, tmp_path):
    res = run_cli("space", "--repo-id", "me/d2ov-space", "--private", env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"published {hub.url}/spaces/me/d2ov-space" in res.stdout, res.stdout

    assert list(hub.repos) == [("space", "me/d2ov-space")]
    created = hub.repos[("space", "me/d2ov-space")]["created"]
    assert created == {
        "name": "d2ov-space",
        "organization": "me",
        "type": "space",
        "sdk": "gradio",
        "visibility": "private",
    }

    dry = tmp_path / "dry" / "space"
    res = run_cli("space", "--dry-run", str(dry), env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = _folder_hashes(dry)
    assert len(expected) > 100 and "d2ov_core/data/ir/demo__mask_rcnn_shapes/FP16/model.bin" in expected

    commits = _d2ov_commits(hub, "space", "me/d2ov-space")
    assert len(commits) == 1 and commits[0]["branch"] == "main"
    assert commits[0]["summary"].startswith("d2ov space ")
    committed = commits[0]["regular"] + commits[0]["lfs"]
    assert sorted(committed) == sorted(expected)  # exactly the files build_space writes, once each
    tree = hub.tree("space", "me/d2ov-space")
    assert tree.pop(".gitattributes")  # the Hub's own, from the initial commit
    assert {p: _sha(b) for p, b in tree.items()} == expected  # byte for byte

    front = tree["README.md"].decode().split("---")[1]
    assert "sdk: gradio" in front.splitlines() and "app_file: app.py" in front.splitlines()
    assert any(v["content"] == tree["README.md"].decode() and v["repoType"] == "space" for v in hub.validated)

    # the large binaries went through LFS: referenced as LFS pointers in the commit, their bytes
    # arrived by the LFS PUT (the stand-in checked sha256 and size) and were verified
    bins = sorted(p for p in expected if p.endswith("model.bin"))
    assert bins == sorted(
        f"d2ov_core/{p.relative_to(ROOT / 'd2ov_core').as_posix()}"
        for p in (ROOT / "d2ov_core" / "data" / "ir").glob("*/*/model.bin")
    )
    for p in bins:
        assert p in commits[0]["lfs"] and p not in commits[0]["regular"]
        assert hub.lfs_objects[expected[p]] == tree[p]
        assert expected[p] in hub.lfs_verified
    assert {o["oid"] for b in hub.lfs_batches for o in b["objects"]} == {expected[p] for p in commits[0]["lfs"]}


# -- d2ov push ----------------------------------------------------------------------------------


def test_push_uploads_the_dry_run_layout(hub, env, tmp_path):
    res = run_cli("push", IR_MODEL, "--repo-id", "me/d2ov-irs", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"to {hub.url}/me/d2ov-irs as demo__mask_rcnn_shapes/FP16/" in res.stdout, res.stdout

    assert list(hub.repos) == [("model", "me/d2ov-irs")]
    created = hub.repos[("model", "me/d2ov-irs")]["created"]
    assert created == {"name": "d2ov-irs", "organization": "me"}  # a model repo (no type), public

    dry = tmp_path / "dry"
    res = run_cli("push", IR_MODEL, "--repo-id", "me/d2ov-irs", "--dry-run", str(dry), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = _folder_hashes(dry)
    assert sorted(expected) == [
        "README.md",
        "demo__mask_rcnn_shapes/FP16/d2ov.json",
        "demo__mask_rcnn_shapes/FP16/model.bin",
        "demo__mask_rcnn_shapes/FP16/model.xml",
    ]

    commits = _d2ov_commits(hub, "model", "me/d2ov-irs")
    assert [c["summary"] for c in commits] == ["d2ov push demo/mask_rcnn_shapes FP16"]
    assert commits[0]["lfs"] == ["demo__mask_rcnn_shapes/FP16/model.bin"]
    tree = hub.tree("model", "me/d2ov-irs")
    tree.pop(".gitattributes")
    assert {p: _sha(b) for p, b in tree.items()} == expected
    assert (
        hub.lfs_objects[expected["demo__mask_rcnn_shapes/FP16/model.bin"]]
        == tree["demo__mask_rcnn_shapes/FP16/model.bin"]
    )


def test_push_to_a_new_branch_creates_it_and_leaves_main_alone(hub, env, tmp_path):
    res = run_cli("push", IR_MODEL, "--repo-id", "me/d2ov-irs", "--revision", "ir-v1", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    repo = hub.repos[("model", "me/d2ov-irs")]
    assert sorted(repo["branches"]) == ["ir-v1", "main"]
    assert sorted(repo["branches"]["main"]) == [".gitattributes"]
    assert [c["summary"] for c in repo["commits"] if c["branch"] == "ir-v1"][
        -1
    ] == "d2ov push demo/mask_rcnn_shapes FP16"
    assert "demo__mask_rcnn_shapes/FP16/model.bin" in repo["branches"]["ir-v1"]

    # pushing again to the branch that now exists is fine too (no second branch creation needed)
    res = run_cli("push", IR_MODEL, "--repo-id", "me/d2ov-irs", "--revision", "ir-v1", env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


# -- failures: one line, exit 2 -----------------------------------------------------------------

COMMANDS = {"push": ["push", IR_MODEL, "--repo-id", "me/d2ov-irs"], "space": ["space", "--repo-id", "me/d2ov-space"]}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_token_is_one_error_line(command, hub, env):
    res = run_cli("-q", *COMMANDS[command], env=dict(env, HF_TOKEN="hf_wrong"), timeout=600)
    line = _one_error_line(res)
    assert "401" in line and "me/d2ov-" in line and "Invalid credentials in Authorization header" in line, line
    assert "--weights" not in line  # not a download: no hint about weights files
    assert hub.repos == {} and hub.lfs_objects == {}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unreachable_hub_is_one_error_line(command, tmp_path):
    env = hub_env(closed_port_url(), TOKEN, tmp_path / "hf_home")
    res = run_cli("-q", *COMMANDS[command], env=env, timeout=600)
    line = _one_error_line(res)
    assert "me/d2ov-" in line and ("onnect" in line or "refused" in line), line
    assert "--weights" not in line


# -- d2ov space --ir-repo -----------------------------------------------------------------------


def test_space_with_ir_repo_pushes_the_irs_and_pins_the_space_to_that_commit(hub, env, tmp_path):
    """The catalog model's IRs go to the model repository (``d2ov push``'s layout), not into the Space;
    the Space's variables name that repository and the commit the push made; ``--only``: no demo IRs.
    The Space's app, started from what arrived with those variables, fetches the IR from the stand-in
    Hub at that commit at start and answers ``/detect`` with it."""
    res = run_cli(
        "space",
        "--repo-id",
        "me/my-space",
        "--model",
        "demo/faster_rcnn_shapes",
        "--ir-repo",
        "me/my-irs",
        "--only",
        "--title",
        "Shapes",
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    irs = hub.tree("model", "me/my-irs")
    assert {
        "demo__faster_rcnn_shapes/FP16/model.xml",
        "demo__faster_rcnn_shapes/FP16/model.bin",
        "demo__faster_rcnn_shapes/FP16/d2ov.json",
    } <= set(irs)
    bundled = ROOT / "d2ov_core" / "data" / "ir" / "demo__faster_rcnn_shapes" / "FP16" / "model.bin"
    assert irs["demo__faster_rcnn_shapes/FP16/model.bin"] == bundled.read_bytes()
    pushed = _d2ov_commits(hub, "model", "me/my-irs")[-1]
    space = hub.repos[("space", "me/my-space")]
    assert space["variables"] == {
        "D2OV_HUB_REPO": {"value": "me/my-irs", "description": "d2ov: the IR repository"},
        "D2OV_HUB_REVISION": {"value": pushed["oid"], "description": "d2ov: its pinned commit"},
    }
    tree = hub.tree("space", "me/my-space")
    assert not [p for p in tree if p.endswith("model.bin")]  # no IR in the Space: neither the model's nor the demos'
    doc = json.loads(tree["space.json"])
    assert doc["env"]["D2OV_DEFAULT_MODEL"] == "demo/faster_rcnn_shapes" and doc["env"]["D2OV_TITLE"] == "Shapes"
    assert doc["env"]["D2OV_HUB_REPO"] == "me/my-irs" and doc["env"]["D2OV_HUB_REVISION"] == pushed["oid"]
    assert "demo/faster_rcnn_shapes" in tree["README.md"].decode()

    # the Space as it arrived, started with its variables (a Space passes them as environment variables)
    from gradio_client import Client, handle_file

    from ..helpers import start_app, stop

    folder = tmp_path / "space"
    for rel, data in tree.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    variables = {k: v["value"] for k, v in space["variables"].items()}
    run_env = {k: v for k, v in env.items() if k != "HF_TOKEN"}  # a public repository: no token needed
    # D2OV_CONVERT=0: as on a Space, this server does not convert, so it offers what the IR repository lists
    run_env.update(
        variables, PYTHONPATH="", D2OV_CACHE=str(tmp_path / "empty_cache"), HF_HUB_OFFLINE="0", D2OV_CONVERT="0"
    )
    proc, url = start_app(run_env, tmp_path / "app.log", cwd=folder)
    try:
        sample = sorted((ROOT / "d2ov_core" / "data" / "samples").glob("shapes_*.jpg"))[0]
        for _ in range(120):  # the IR is fetched in the background at start
            if any(d.endswith("FP16/model.bin") for d in hub.downloads):
                break
            time.sleep(0.5)
        for _ in range(60):
            try:
                _, table, _, _, card = Client(url, verbose=False).predict(handle_file(str(sample)), api_name="/detect")
                break
            except Exception as e:  # "being prepared; try again in a moment"
                assert "being prepared" in str(e), str(e)
                time.sleep(1)
        assert table["data"] and {row[0] for row in table["data"]} <= {"circle", "square", "triangle"}
        assert card.startswith("**demo/faster_rcnn_shapes**") and "status: ready" in card
        api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        model = next(p for p in api["named_endpoints"]["/detect"]["parameters"] if p["parameter_name"] == "model")
        assert model["type"]["enum"] == ["demo/faster_rcnn_shapes"]  # --only, and what the IR repository holds
    finally:
        stop(proc)
    assert f"GET model:me/my-irs@{pushed['oid']}/demo__faster_rcnn_shapes/FP16/model.bin" in hub.downloads
    assert f"GET /api/models/me/my-irs/tree/{pushed['oid']}" in hub.requests  # the offer: the repository's file list
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def test_space_ir_repo_of_a_config_only_model_is_one_error_line(hub, env):
    cfg = ROOT / "models" / "demo" / "faster_rcnn_shapes"
    res = run_cli(
        "-q",
        "space",
        "--repo-id",
        "me/my-space",
        "--model",
        str(cfg / "config.yaml"),
        "--weights",
        str(cfg / "model_final.pth"),
        "--classes",
        "round,box,wedge",
        "--ir-repo",
        "me/my-irs",
        env=env,
        timeout=600,
    )
    line = _one_error_line(res)
    assert "--ir-repo" in line and "catalog" in line, line
    assert hub.repos == {}
