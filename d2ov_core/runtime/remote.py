"""Inference on a remote model server over the KServe v2 REST protocol (the Open Inference Protocol):
d2ov's KServe predictor (:mod:`d2ov_core.serve.kserve`) or OpenVINO Model Server serving a d2ov IR
(``d2ov export --ovms``). Plain ``urllib``: no dependency beyond the runtime's own.

What runs where: decoding, preprocessing and postprocessing run in the caller's process, exactly as
with a local IR (:class:`~d2ov_core.runtime.predictor.Predictor`); only the graph runs on the server,
which returns the IR's raw outputs (``boxes``, ``classes``, ``scores``, ``masks``, ``keypoint_heatmaps``,
``image_size``).

Protocol (every request has a timeout: ``timeout=`` or ``D2OV_SERVER_TIMEOUT``, default 60 s; it
bounds connecting and each read, so a server that accepts and then says nothing is given up on):
  ``GET  {server}/v2/models/{model}``: model metadata. d2ov's metadata (labels, resize rule, channel
      order, thresholds, output names, ...) is read from its ``"rt_info": {"model_info": {key: JSON
      string}}``: the IR's ``rt_info`` as OpenVINO Model Server returns it (2025.0 and later), and
      as d2ov's KServe predictor returns it.
  ``POST {server}/v2/models/{model}/infer``: one input ``image`` FP32 ``[3, H, W]`` sent with the
      binary tensor extension (JSON header, then the raw little-endian bytes;
      ``Inference-Header-Content-Length``); outputs asked for in binary (``binary_data_output``),
      plain JSON ``data`` accepted as well.
  ``GET  {server}/v2/models`` (KServe's list) or ``/v1/config`` (OVMS): the served models, to pick
      the only one when none is named.

Failures are one :class:`~d2ov_core.errors.ServerError` line: server down, no answer in time, an
HTTP error, a model that is not a d2ov IR, or outputs of the wrong name, dtype or shape.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InputError, ServerError, first_line
from . import settings as S

__all__ = ["RemoteIR", "list_models", "fetch_metadata", "check_server_url", "DEFAULT_TIMEOUT"]

#: seconds allowed for connecting to the server and for each read (``D2OV_SERVER_TIMEOUT``)
DEFAULT_TIMEOUT = float(os.environ.get("D2OV_SERVER_TIMEOUT", 60))

#: v2 datatype -> numpy dtype (little-endian, as the binary tensor extension sends it)
DTYPES = {
    "FP32": "<f4",
    "FP16": "<f2",
    "FP64": "<f8",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT8": "u1",
    "BOOL": "?",
}
#: what a d2ov IR returns: output -> (allowed v2 datatypes, shape with None for "any size")
OUTPUTS = {
    "boxes": (("FP32",), (None, 4)),
    "classes": (("INT64", "INT32"), (None,)),
    "scores": (("FP32",), (None,)),
    "masks": (("FP32",), (None, 1, None, None)),
    "keypoint_heatmaps": (("FP32",), (None, None, None, None)),
    "sem_seg": (("FP32",), (None, None, None)),
    "image_size": (("INT64", "INT32"), (2,)),
}


def check_server_url(server: Any) -> str:
    """``server`` without a trailing slash; :class:`InputError` unless it is an http(s) URL."""
    text = str(server or "").strip().rstrip("/")
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(f"a model server is an http(s) URL such as http://127.0.0.1:8080, got {server!r}")
    return text


def _request(
    server: str,
    method: str,
    path: str,
    what: str,
    timeout: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """One HTTP request; ``(body, headers)`` of a 2xx answer, else one :class:`ServerError` line."""
    req = urllib.request.Request(server + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        detail = _error_text(e)
        raise ServerError(
            f"model server {server}: {what} failed with HTTP {e.code}{': ' + detail if detail else ''}"
        ) from None
    except TimeoutError:
        raise ServerError(
            f"model server {server} did not answer {what} within {timeout:g} s "
            "(overloaded or stuck? D2OV_SERVER_TIMEOUT sets the limit)"
        ) from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise ServerError(
                f"model server {server} did not answer {what} within {timeout:g} s "
                "(overloaded or stuck? D2OV_SERVER_TIMEOUT sets the limit)"
            ) from None
        if isinstance(reason, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            raise ServerError(
                f"model server {server} closed the connection during {what} "
                f"({getattr(reason, 'strerror', None) or type(reason).__name__})"
            ) from None
        if isinstance(reason, BaseException):
            text = getattr(reason, "strerror", None) or first_line(reason)
        else:
            text = str(reason)
        raise ServerError(
            f"model server {server} is unreachable ({text}): is it running, and is the URL right?"
        ) from None
    except (ConnectionError, OSError) as e:  # reset mid-answer, ...
        raise ServerError(
            f"model server {server} closed the connection during {what} ({type(e).__name__}: {first_line(e)})"
        ) from None
    except http.client.HTTPException as e:  # a reply that is not HTTP
        raise ServerError(f"model server {server}: {what} got a malformed HTTP answer ({type(e).__name__})") from None


def _error_text(e: urllib.error.HTTPError) -> str:
    """The server's error sentence: ``{"error": ...}`` (KServe v2, OVMS) or ``{"detail": ...}`` (FastAPI)."""
    try:
        raw = e.read(4096).decode("utf-8", "replace")
    except Exception:
        return ""
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            raw = str(doc.get("error") or doc.get("detail") or raw)
    except ValueError:
        pass
    return " ".join(raw.split())[:300]


def _json(server: str, raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ServerError(f"model server {server}: {what} is not JSON ({raw[:60]!r}...)") from None


def list_models(server: str, timeout: float | None = None) -> list[str]:
    """Names of the models ``server`` serves: KServe's ``GET /v2/models``, else OVMS's ``GET /v1/config``."""
    server = check_server_url(server)
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    try:
        doc = _json(server, _request(server, "GET", "/v2/models", "listing models", timeout)[0], "the model list")
        if isinstance(doc, dict) and isinstance(doc.get("models"), list):
            return [str(m) for m in doc["models"]]
    except ServerError as e:
        if "HTTP 404" not in str(e) and "HTTP 405" not in str(e):
            raise
    doc = _json(server, _request(server, "GET", "/v1/config", "listing models", timeout)[0], "the model list")
    if isinstance(doc, dict):
        return sorted(str(m) for m in doc)
    raise ServerError(f"model server {server}: cannot list its models; name one (--remote-model)")


def fetch_metadata(server: str, model: str, timeout: float | None = None) -> tuple[S.IRMetadata, dict[str, Any]]:
    """``(d2ov metadata, v2 model metadata)`` of ``model`` on ``server``."""
    server = check_server_url(server)
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    try:
        raw, _ = _request(server, "GET", path, f"the metadata of model {model!r}", timeout)
    except ServerError as e:
        if "HTTP 404" in str(e):
            try:
                have = ", ".join(list_models(server, timeout)) or "none"
            except ServerError:
                have = "unknown"
            raise ServerError(f"model server {server} has no model {model!r} (it serves: {have})") from None
        raise
    doc = _json(server, raw, f"the metadata of model {model!r}")
    info = doc.get("rt_info", {}).get(S.RT_INFO_SECTION) if isinstance(doc, dict) else None
    if not isinstance(info, dict):
        raise ServerError(
            f"model server {server}: model {model!r} is not a d2ov model (its metadata has no "
            f"rt_info {S.RT_INFO_SECTION}); serve an IR written by d2ov (d2ov export --ovms, or "
            "python -m d2ov_core.serve.kserve)"
        )
    try:
        meta = S.decode_all({k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()})
    except KeyError as e:
        raise ServerError(
            f"model server {server}: model {model!r} is not a d2ov model (rt_info "
            f"{S.RT_INFO_SECTION}/{e.args[0]} is missing)"
        ) from None
    except ValueError as e:
        raise ServerError(f"model server {server}: model {model!r}: {e}") from None
    return meta, doc


def _decode_outputs(server: str, body: bytes, headers: dict[str, str]) -> dict[str, tuple[str, np.ndarray]]:
    """``{name: (datatype, array)}`` of a v2 infer response, binary or JSON."""
    header_len = headers.get("inference-header-content-length")
    try:
        n = int(header_len) if header_len is not None else len(body)
    except ValueError:
        raise ServerError(f"model server {server}: bad Inference-Header-Content-Length {header_len!r}") from None
    doc = _json(server, body[:n], "the inference answer")
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise ServerError(f"model server {server}: the inference answer has no outputs")
    found: dict[str, tuple[str, np.ndarray]] = {}
    offset = n
    for out in outputs:
        try:
            name, datatype, shape = str(out["name"]), str(out["datatype"]).upper(), [int(d) for d in out["shape"]]
            dtype = np.dtype(DTYPES[datatype])
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                chunk = body[offset : offset + int(size)]
                offset += int(size)
                arr = np.frombuffer(chunk, dtype=dtype).reshape(shape)
            else:
                arr = np.asarray(out["data"], dtype=dtype).reshape(shape)
        except KeyError as e:
            raise ServerError(
                f"model server {server}: an output of the inference answer lacks {e} (or has an unknown datatype)"
            ) from None
        except (TypeError, ValueError) as e:
            raise ServerError(
                f"model server {server}: output {out.get('name')!r} does not match its shape "
                f"{out.get('shape')} ({first_line(e)})"
            ) from None
        found[name] = (datatype, arr)
    return found


def _shape_text(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


class RemoteIR:
    """A d2ov IR served by a KServe-v2 model server, with :class:`~d2ov_core.runtime.ir.CompiledIR`'s
    interface (``metadata``, ``output_names``, ``infer``, ``infer_stream``); safe to call from several
    threads at once (one HTTP request per call).

    Args:
        server: ``http(s)://host:port`` of the server.
        model: the model's name on the server; ``None``: the server's only model.
        timeout: seconds for connecting and for each read (default ``D2OV_SERVER_TIMEOUT``, 60).
    """

    static_shape = None
    compute = "server"

    def __init__(self, server: str, model: str | None = None, timeout: float | None = None):
        self.server = check_server_url(server)
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if not model:
            names = list_models(self.server, self.timeout)
            if len(names) != 1:
                raise ServerError(
                    f"model server {self.server} serves {len(names)} models "
                    f"({', '.join(names) or 'none'}): name one (--remote-model)"
                )
            model = names[0]
        self.model = str(model)
        self.metadata, self.server_metadata = fetch_metadata(self.server, self.model, self.timeout)
        self.output_names = list(self.metadata.outputs)
        self.location = f"{self.server}/v2/models/{urllib.parse.quote(self.model, safe='')}"
        self._infer_path = f"/v2/models/{urllib.parse.quote(self.model, safe='')}/infer"

    @property
    def device(self) -> str:
        return self.server

    def infer(self, image_chw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on the server; the named raw outputs, checked against the IR contract."""
        chw = np.ascontiguousarray(image_chw, dtype="<f4")
        if chw.ndim != 3 or chw.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image, got {chw.shape}")  # a bug: preprocess makes these
        data = chw.tobytes()
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": list(chw.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(data)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        body, headers = _request(
            self.server,
            "POST",
            self._infer_path,
            f"inference on {self.model!r}",
            self.timeout,
            body=header + data,
            headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
        )
        return self._check(_decode_outputs(self.server, body, headers))

    def _check(self, found: dict[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
        raw: dict[str, np.ndarray] = {}
        for name in self.output_names:
            if name not in found:
                raise ServerError(
                    f"model server {self.server}: model {self.model!r} returned no output {name!r} "
                    f"(it returned {', '.join(found) or 'nothing'})"
                )
            datatype, arr = found[name]
            types, shape = OUTPUTS.get(name, ((datatype,), tuple(None for _ in arr.shape)))
            fits = len(arr.shape) == len(shape) and all(e is None or e == d for e, d in zip(shape, arr.shape))
            if datatype not in types or not fits:
                raise ServerError(
                    f"model server {self.server}: output {name!r} of {self.model!r} is {datatype} "
                    f"{list(arr.shape)}; a d2ov model returns {'/'.join(types)} {_shape_text(shape)}"
                )
            raw[name] = arr
        counts = {n: raw[n].shape[0] for n in ("boxes", "classes", "scores", "masks", "keypoint_heatmaps") if n in raw}
        if len(set(counts.values())) > 1:
            raise ServerError(
                f"model server {self.server}: outputs of {self.model!r} disagree on the number of "
                f"detections ({', '.join(f'{k} {v}' for k, v in counts.items())})"
            )
        return raw

    def infer_stream(
        self, inputs: Iterable[tuple[Any, np.ndarray]], jobs: int | None = None
    ) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
        """``(key, outputs)`` in input order, with ``jobs`` requests in flight (default 2)."""
        jobs = max(1, int(jobs or self.optimal_requests))
        pending: collections.deque = collections.deque()
        with ThreadPoolExecutor(jobs, thread_name_prefix="d2ov-remote") as pool:
            for key, chw in inputs:
                pending.append((key, pool.submit(self.infer, chw)))
                if len(pending) >= 2 * jobs:
                    k, fut = pending.popleft()
                    yield k, fut.result()
            while pending:
                k, fut = pending.popleft()
                yield k, fut.result()

    def profile(self, image_chw: np.ndarray) -> list[dict[str, Any]]:
        raise InputError("per-op profiling needs a local IR, not a model server")

    @property
    def optimal_requests(self) -> int:
        return 2
