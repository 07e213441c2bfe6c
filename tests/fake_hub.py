"""A stand-in Hugging Face Hub for tests (``http.server`` in a thread on 127.0.0.1): just enough of
the Hub's HTTP API for what ``huggingface_hub`` (2.4.0) sends in ``HfApi.create_repo`` +
``HfApi.upload_folder`` on its LFS path, for model and Space repositories:

  * ``POST /api/repos/create``: records the request body (type, sdk, visibility), 409 if it exists;
  * ``GET  /api/{type}s/{repo_id}[/revision/{rev}]``: repo info (``create_repo(exist_ok=True)``
    asks for it after a 401/403);
  * ``POST /api/validate-yaml``: the README front matter check;
  * ``POST /api/{type}s/{repo_id}/preupload/{rev}``: which files go as LFS (binary content, size over
    10 MB, or a ``.gitattributes`` LFS pattern, as the Hub decides) and which as regular git blobs;
  * ``POST /{prefix}{repo_id}.git/info/lfs/objects/batch``: LFS batch API, offering only the ``basic``
    transfer (a single PUT) plus a verify action;
  * ``PUT  /_lfs/{oid}``: the object's bytes (checked against its sha256 and size before stored);
  * ``POST /{prefix}{repo_id}.git/info/lfs/objects/verify``;
  * ``POST /api/{type}s/{repo_id}/branch/{branch}``: create a branch;
  * ``POST /api/spaces/{repo_id}/variables``: a Space variable (``HfApi.add_space_variable``), kept in
    the repository's ``variables`` (``{key: {"value", "description"}}``), all of them answered back;
  * ``POST /api/{type}s/{repo_id}/commit/{rev}``: the ndjson commit: regular files (base64; binary
    content refused, as the Hub refuses it) and LFS pointers (the object must have been uploaded, with
    that size). A revision that is not a branch answers 404 ``RevisionNotFound``, as the Hub does.

Downloads (what ``snapshot_download`` sends, at a branch or a commit):

  * ``GET  /api/{type}s/{repo_id}/revision/{rev}`` also for a commit id;
  * ``GET  /api/{type}s/{repo_id}/tree/{rev}[/{path}]``: the files at that revision (one page), with
    their git blob id, size and (LFS files) sha256;
  * ``HEAD``/``GET /{prefix}{repo_id}/resolve/{rev}/{path}``: a file, with the Hub's headers
    (``X-Repo-Commit``, ``ETag``, and ``X-Linked-Etag``/``X-Linked-Size`` for LFS files); no token needed
    for a public repository.

Every other ``/api/`` and ``.git/info/lfs`` request (and reading a private repository) needs ``Authorization: Bearer <token>`` (401 otherwise).
Anything else answers 404 with a JSON error, so a protocol gap fails a test instead of hanging it.

Whether ``huggingface_hub`` uploads large files with Xet or LFS is decided on the client, not by the
server's answers: ``upload_folder`` takes the Xet pipeline (``_upload_pipeline.pipelined_upload``,
which sends every LFS-mode file to Xet unconditionally) whenever ``utils.is_xet_available()`` is true,
i.e. whenever ``hf_xet`` is installed and ``HF_HUB_DISABLE_XET`` is not set. So the client must run
with ``HF_HUB_DISABLE_XET=1`` (read at import time into ``constants.HF_HUB_DISABLE_XET``): then
``upload_folder`` makes one ``create_commit`` whose LFS files go through the batch API above.
:func:`hub_env` sets it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from .local_server import LocalServer

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
TYPE_OF_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
#: LFS patterns of the .gitattributes the Hub writes into a new repository (a subset)
LFS_PATTERNS = (
    "*.bin",
    "*.pt",
    "*.pth",
    "*.onnx",
    "*.safetensors",
    "*.h5",
    "*.npy",
    "*.npz",
    "*.pkl",
    "*.zip",
    "*.tar.*",
    "*.tar",
    "*.gz",
    "*.ckpt",
    "*.model",
    "*.tflite",
    "*.ot",
    "*.msgpack",
)
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
REGULAR_MAX = 10 * 1024 * 1024


def _is_lfs_path(path: str) -> bool:
    from fnmatch import fnmatch

    name = path.rsplit("/", 1)[-1]
    return any(fnmatch(name, p) for p in LFS_PATTERNS)


def _new_oid() -> str:
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()


def _blob_id(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_binary(sample: bytes) -> bool:
    return b"\x00" in sample


class FakeHub(LocalServer):
    """``with FakeHub(token="hf_good") as hub: env = hub_env(hub.url, "hf_good") ...``

    After an upload: ``hub.repos[("space", "me/x")]`` holds ``created`` (the create_repo body),
    ``branches`` (``{branch: {path: bytes}}``, the tree of each branch) and ``commits`` (each with
    ``branch``, ``summary``, ``regular`` and ``lfs``: the paths committed each way);
    ``hub.lfs_objects`` maps sha256 -> bytes received through the LFS PUT; ``hub.requests`` lists
    ``"METHOD /path"`` of every request."""

    def __init__(self, token: str = "hf_fake_token"):
        self.token = token
        self.repos: dict[tuple[str, str], dict] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.lfs_verified: list[str] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            # -- plumbing ------------------------------------------------------------------------
            def _send(self, code: int, doc=None, headers: dict | None = None):
                body = json.dumps(doc if doc is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            def _error(self, code: int, message: str, error_code: str | None = None):
                headers = {"X-Error-Message": message}
                if error_code:
                    headers["X-Error-Code"] = error_code
                self._send(code, {"error": message}, headers)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                # what the Hub says for a token it does not know
                self._error(401, "Invalid credentials in Authorization header")
                return False

            def _route(self):
                path = unquote(urlsplit(self.path).path)
                body = self._body() if self.command in ("POST", "PUT") else b""
                with hub.lock:
                    hub.requests.append(f"{self.command} {path}")
                if self.command == "PUT" and path.startswith("/_lfs/"):  # presigned: no token
                    return self._lfs_put(path[len("/_lfs/") :], body)
                m = re.fullmatch(r"/(spaces/|datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m and self.command in ("GET", "HEAD"):
                    repo_type = {"spaces/": "space", "datasets/": "dataset"}.get(m.group(1) or "", "model")
                    return self._resolve(repo_type, m.group(2), m.group(3), m.group(4))
                m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/(revision|tree)/.+", path)
                public = (
                    m is not None
                    and self.command == "GET"
                    and (TYPE_OF_PLURAL[m.group(1)], m.group(2)) in hub.repos
                    and hub.repos[(TYPE_OF_PLURAL[m.group(1)], m.group(2))]["created"].get("visibility") != "private"
                )
                if not public and not self._authorized():  # reading a public repository needs no token
                    return
                m = re.fullmatch(r"/(spaces/|datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)", path)
                if m and self.command == "POST":
                    repo_type = {"spaces/": "space", "datasets/": "dataset"}.get(m.group(1) or "", "model")
                    return (
                        self._lfs_batch(repo_type, m.group(2), json.loads(body))
                        if m.group(3) == "batch"
                        else self._lfs_verify(json.loads(body))
                    )
                if path == "/api/repos/create" and self.command == "POST":
                    return self._create_repo(json.loads(body))
                if path == "/api/validate-yaml" and self.command == "POST":
                    doc = json.loads(body)
                    hub.validated.append(doc)
                    return self._send(200, {"errors": [], "warnings": []})
                m = re.fullmatch(r"/api/spaces/([^/]+/[^/]+)/variables", path)
                if m and self.command == "POST":
                    return self._add_variable(m.group(1), json.loads(body))
                m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/revision/(.+))?", path)
                if m and self.command == "GET":
                    return self._repo_info(TYPE_OF_PLURAL[m.group(1)], m.group(2), m.group(3) or "main")
                m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
                if m and self.command == "GET":
                    return self._list_tree(TYPE_OF_PLURAL[m.group(1)], m.group(2), m.group(3), m.group(4) or "")
                m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
                if m and self.command == "POST":
                    repo_type, repo_id, what, rev = TYPE_OF_PLURAL[m.group(1)], m.group(2), m.group(3), m.group(4)
                    repo = hub.repos.get((repo_type, repo_id))
                    if repo is None:
                        return self._error(404, "Repository not found", "RepoNotFound")
                    if what == "branch":
                        return self._create_branch(repo, rev, json.loads(body or b"{}"))
                    if rev not in repo["branches"]:
                        return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                    if what == "preupload":
                        return self._preupload(json.loads(body))
                    return self._commit(repo_type, repo_id, repo, rev, body)
                self._error(404, f"fake hub: no endpoint for {self.command} {path}")

            do_GET = do_POST = do_PUT = do_HEAD = _route

            # -- endpoints -----------------------------------------------------------------------
            def _create_repo(self, doc: dict):
                repo_type = doc.get("type", "model")
                repo_id = f"{doc['organization']}/{doc['name']}" if doc.get("organization") else f"me/{doc['name']}"
                url = f"{hub.url}/{PREFIX[repo_type]}{repo_id}"
                with hub.lock:
                    if (repo_type, repo_id) in hub.repos:
                        return self._send(409, {"error": "You already created this repo", "url": url})
                    hub.repos[(repo_type, repo_id)] = {
                        "created": doc,
                        "branches": {"main": {".gitattributes": GITATTRIBUTES}},
                        "commits": [
                            {
                                "branch": "main",
                                "summary": "initial commit",
                                "oid": _new_oid(),
                                "regular": [".gitattributes"],
                                "lfs": [],
                            }
                        ],
                    }
                self._send(200, {"url": url, "name": repo_id})

            def _at(self, repo_type: str, repo_id: str, rev: str):
                """``(repo, commit id, {path: bytes})`` at a branch or a commit; ``None`` after an error reply."""
                repo = hub.repos.get((repo_type, repo_id))
                if repo is None:
                    self._error(404, "Repository not found", "RepoNotFound")
                    return None
                if rev in repo["branches"]:
                    sha = [c for c in repo["commits"] if c["branch"] == rev][-1]["oid"]
                    return repo, sha, repo["branches"][rev]
                if rev in repo.get("snapshots", {}):
                    return repo, rev, repo["snapshots"][rev]
                self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                return None

            def _repo_info(self, repo_type: str, repo_id: str, rev: str):
                found = self._at(repo_type, repo_id, rev)
                if found is None:
                    return
                repo, sha, tree = found
                self._send(
                    200,
                    {
                        "id": repo_id,
                        "sha": sha,
                        "private": repo["created"].get("visibility") == "private",
                        "siblings": [{"rfilename": p} for p in sorted(tree)],
                    },
                )

            def _list_tree(self, repo_type: str, repo_id: str, rev: str, under: str):
                found = self._at(repo_type, repo_id, rev)
                if found is None:
                    return
                entries = []
                for p, data in sorted(found[2].items()):
                    if under and not p.startswith(under.rstrip("/") + "/"):
                        continue
                    entry = {"type": "file", "oid": _blob_id(data), "size": len(data), "path": p}
                    if _is_lfs_path(p) or _is_binary(data[:512]):
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                self._send(200, entries)

            def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str):
                repo = hub.repos.get((repo_type, repo_id))
                if repo is not None and repo["created"].get("visibility") == "private" and not self._authorized():
                    return
                found = self._at(repo_type, repo_id, rev)
                if found is None:
                    return
                _, sha, tree = found
                if path not in tree:
                    return self._error(404, f"Entry not found: {path}", "EntryNotFound")
                data = tree[path]
                lfs = _is_lfs_path(path) or _is_binary(data[:512])
                etag = hashlib.sha256(data).hexdigest() if lfs else _blob_id(data)
                with hub.lock:
                    hub.downloads.append(f"{self.command} {repo_type}:{repo_id}@{rev}/{path}")
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Repo-Commit", sha)
                self.send_header("ETag", f'"{etag}"')
                if lfs:
                    self.send_header("X-Linked-Etag", f'"{etag}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                self.end_headers()
                if self.command == "GET":
                    try:
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            def _add_variable(self, repo_id: str, doc: dict):
                repo = hub.repos.get(("space", repo_id))
                if repo is None:
                    return self._error(404, "Repository not found", "RepoNotFound")
                if not isinstance(doc.get("key"), str) or not isinstance(doc.get("value"), str):
                    return self._error(400, f"fake hub: a variable is a key and a value, got {doc}")
                with hub.lock:
                    variables = repo.setdefault("variables", {})
                    variables[doc["key"]] = {"value": doc["value"], "description": doc.get("description")}
                    answer = {k: dict(v) for k, v in variables.items()}
                self._send(200, answer)

            def _create_branch(self, repo: dict, branch: str, doc: dict):
                with hub.lock:
                    if branch in repo["branches"]:
                        return self._error(409, f"Branch {branch} already exists")
                    start = doc.get("startingPoint", "main")
                    repo["branches"][branch] = dict(repo["branches"][start])
                    repo["commits"].append(
                        {
                            "branch": branch,
                            "summary": f"branch from {start}",
                            "oid": _new_oid(),
                            "regular": [],
                            "lfs": [],
                        }
                    )
                self._send(200, {})

            def _preupload(self, doc: dict):
                files = []
                for f in doc["files"]:
                    sample = base64.b64decode(f["sample"])
                    lfs = f["size"] > REGULAR_MAX or _is_binary(sample) or _is_lfs_path(f["path"])
                    files.append(
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False,
                            "oid": None,
                        }
                    )
                self._send(200, {"files": files, "commitOid": None})

            def _lfs_batch(self, repo_type: str, repo_id: str, doc: dict):
                if (repo_type, repo_id) not in hub.repos:
                    return self._error(404, "Repository not found", "RepoNotFound")
                if doc.get("operation") != "upload" or "basic" not in doc.get("transfers", ["basic"]):
                    return self._error(422, f"fake hub: only basic LFS uploads, got {doc}")
                hub.lfs_batches.append(doc)
                objects = []
                for o in doc["objects"]:
                    if o["oid"] in hub.lfs_objects:
                        objects.append({"oid": o["oid"], "size": o["size"]})  # already there: no actions
                        continue
                    objects.append(
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "authenticated": True,
                            "actions": {
                                "upload": {"href": f"{hub.url}/_lfs/{o['oid']}?size={o['size']}"},
                                "verify": {
                                    "href": f"{hub.url}/{PREFIX[repo_type]}{repo_id}.git/info/lfs/objects/verify",
                                    "header": {"Authorization": f"Bearer {hub.token}"},
                                },
                            },
                        }
                    )
                # "basic" only: no "multipart" (no chunk_size header), no "xet"
                self._send(200, {"transfer": "basic", "objects": objects})

            def _lfs_put(self, oid: str, body: bytes):
                size = re.search(r"size=(\d+)", self.path)
                if hashlib.sha256(body).hexdigest() != oid:
                    return self._error(400, f"fake hub: LFS object {oid}: sha256 of the content does not match")
                if size is None or int(size.group(1)) != len(body):
                    return self._error(400, f"fake hub: LFS object {oid}: {len(body)} bytes, announced {size}")
                with hub.lock:
                    hub.lfs_objects[oid] = body
                self._send(200, {})

            def _lfs_verify(self, doc: dict):
                data = hub.lfs_objects.get(doc.get("oid"))
                if data is None or len(data) != doc.get("size"):
                    return self._error(404, f"fake hub: LFS object {doc.get('oid')} not uploaded (or wrong size)")
                hub.lfs_verified.append(doc["oid"])
                self._send(200, {})

            def _commit(self, repo_type: str, repo_id: str, repo: dict, branch: str, body: bytes):
                if self.headers.get("Content-Type") != "application/x-ndjson":
                    return self._error(400, "fake hub: a commit is ndjson")
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                if not lines or lines[0].get("key") != "header":
                    return self._error(400, "fake hub: a commit starts with its header")
                changes, regular, lfs = {}, [], []
                for item in lines[1:]:
                    v = item["value"]
                    if item["key"] == "file":
                        data = base64.b64decode(v["content"])
                        if _is_binary(data[:512]) or len(data) > REGULAR_MAX:
                            return self._error(
                                400, f"Your push was rejected because it contains binary files: {v['path']} (use LFS)"
                            )
                        changes[v["path"]] = data
                        regular.append(v["path"])
                    elif item["key"] == "lfsFile":
                        data = hub.lfs_objects.get(v["oid"])
                        if data is None or len(data) != v.get("size"):
                            return self._error(400, f"fake hub: {v['path']}: LFS object {v['oid']} was not uploaded")
                        changes[v["path"]] = data
                        lfs.append(v["path"])
                    elif item["key"] in ("deletedFile", "deletedFolder"):
                        changes[v["path"]] = None
                    else:
                        return self._error(400, f"fake hub: unknown commit item {item['key']}")
                oid = hashlib.sha1(body).hexdigest()
                with hub.lock:
                    tree = repo["branches"][branch]
                    for p, data in changes.items():
                        if data is None:
                            tree.pop(p, None)
                        else:
                            tree[p] = data
                    repo["commits"].append(
                        {
                            "branch": branch,
                            "summary": lines[0]["value"]["summary"],
                            "oid": oid,
                            "regular": regular,
                            "lfs": lfs,
                        }
                    )
                    repo.setdefault("snapshots", {})[oid] = dict(tree)  # what a download at this commit sees
                self._send(
                    200,
                    {
                        "commitUrl": f"{hub.url}/{PREFIX[repo_type]}{repo_id}/commit/{oid}",
                        "commitOid": oid,
                        "pullRequestUrl": None,
                    },
                )

        self.validated: list[dict] = []
        self.lfs_batches: list[dict] = []
        self.downloads: list[str] = []  # "GET model:me/x@rev/path" of every file served by resolve
        self._serve(Handler)

    def tree(self, repo_type: str, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return dict(self.repos[(repo_type, repo_id)]["branches"][branch])


def hub_env(endpoint: str, token: str, hf_home) -> dict[str, str]:
    """The environment a ``d2ov`` subprocess needs to talk to ``endpoint`` as a user with ``token``:
    ``HF_ENDPOINT`` (read by huggingface_hub at import time), ``HF_TOKEN``, a private ``HF_HOME`` (no
    stored token or cache of the machine's user), ``HF_HUB_DISABLE_XET=1`` (the LFS path; see the module
    docstring) and no progress bars."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
