"""A KServe custom predictor for d2ov IRs: kserve's ``ModelServer`` answering v2 (Open Inference
Protocol) requests with the IR's raw outputs, what OpenVINO Model Server returns for the same IR.

    python -m d2ov_core.serve.kserve --ir PATH/model.xml [--name NAME] [--http-port 8080] [--host 127.0.0.1]
    python -m d2ov_core.serve.kserve --ir A/model.xml --ir B/model.xml ...   (several models, one server)

Needs ``pip install 'd2ov[serve]'`` (kserve; see ``requirements-serve.txt``). No torch.

Contract (``GET /v2/models/NAME`` says the same):
  input ``image``: FP32 ``[3, H, W]``, the resized image as :func:`d2ov_core.runtime.preprocess.preprocess`
  makes it (the client preprocesses, :mod:`d2ov_core.runtime.remote`);
  outputs: the IR's, named and ordered as its ``rt_info`` says (``boxes`` FP32 ``[N, 4]`` in the
  resized frame, ``classes`` INT64 ``[N]``, ``masks`` FP32 ``[N, 1, 28, 28]`` for Mask R-CNN,
  ``scores`` FP32 ``[N]``, ``image_size`` INT64 ``[2]``). Binary tensor extension both ways (outputs in
  binary when the request asks, ``binary_data_output``), JSON too.

The d2ov metadata: ``GET /v2/models/NAME`` returns kserve's fields (name, versions, platform, inputs,
outputs) plus ``"rt_info": {"model_info": {key: JSON string}}``, the IR's ``rt_info`` exactly as
OpenVINO Model Server (2025.0 and later) returns it, so one client reads both servers. kserve's own
metadata handler has no place for it (its response model drops unknown fields), so this module
registers its handler for that one route on kserve's FastAPI app before kserve adds its routes;
``POST /v2/models/NAME/infer`` is d2ov's too by default, for speed: kserve 0.21 decodes binary
tensors into Python lists (0.43 s for one 416x608 image on this machine, more than the model takes);
d2ov's handler keeps them as bytes and then runs the model through kserve's ``Model.__call__`` and
answers with kserve's ``InferResponse.to_rest`` (``--kserve-decoding`` restores kserve's handler).
Health, readiness, the model list and metrics are kserve's.

Binding: kserve's REST server listens on 0.0.0.0 whatever it is told; this one listens on ``--host``
(default 127.0.0.1; a container needs ``--host 0.0.0.0``). kserve's gRPC server is off.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import D2ovError, first_line
from ..runtime import ir as runtime
from ..runtime import settings as S
from .ovms import check_name, model_name

__all__ = ["D2ovModel", "rt_info", "main"]  # noqa: F822 (D2ovModel: module __getattr__, needs kserve)

log = logging.getLogger("d2ov")


def rt_info(metadata: S.IRMetadata) -> dict[str, Any]:
    """The IR's d2ov metadata as OVMS's v2 model metadata carries it: ``{"model_info": {key: JSON string}}``."""
    return {S.RT_INFO_SECTION: {key: S.encode(key, value) for key, value in metadata.to_dict().items()}}


def _v2_type(element_type) -> str:
    return {
        "f32": "FP32",
        "f16": "FP16",
        "f64": "FP64",
        "i64": "INT64",
        "i32": "INT32",
        "u8": "UINT8",
        "i8": "INT8",
        "boolean": "BOOL",
    }.get(element_type.get_type_name(), element_type.get_type_name().upper())


def _v2_shape(partial_shape) -> list[int]:
    return [d.get_length() if d.is_static else -1 for d in partial_shape]


@functools.cache
def _model_class():
    import kserve
    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferResponse

    class D2ovModel(kserve.Model):
        """One d2ov IR behind kserve's v2 protocol (compiled once; concurrent requests share it)."""

        def __init__(self, name: str, xml: str | os.PathLike, device: str = "CPU", hint: str = "LATENCY"):
            super().__init__(name)
            self.xml, self.device, self.hint = Path(xml), device, hint
            self.ir: runtime.CompiledIR | None = None

        def load(self) -> bool:
            self.ir = runtime.load_ir(self.xml, device=self.device, hint=self.hint)
            self.ready = True
            return self.ready

        def get_input_types(self) -> list[dict[str, Any]]:
            return [{"name": "image", "datatype": "FP32", "shape": [3, -1, -1]}]

        def get_output_types(self) -> list[dict[str, Any]]:
            outs = self.ir._compiled.outputs
            return [
                {"name": name, "datatype": _v2_type(o.get_element_type()), "shape": _v2_shape(o.get_partial_shape())}
                for name, o in zip(self.ir.output_names, outs)
            ]

        def model_metadata(self) -> dict[str, Any]:
            """kserve's v2 model metadata plus the IR's ``rt_info`` (as OVMS returns it)."""
            return {
                "name": self.name,
                "versions": ["1"],
                "platform": f"openvino_{runtime.openvino_version()}",
                "inputs": self.get_input_types(),
                "outputs": self.get_output_types(),
                "rt_info": rt_info(self.ir.metadata),
            }

        async def predict(self, payload, headers=None, response_headers=None):
            if len(payload.inputs) != 1:
                raise InvalidInput(f"{self.name} takes one input, 'image' FP32 [3, H, W]; got {len(payload.inputs)}")
            inp = payload.inputs[0]
            if inp.datatype != "FP32" or len(inp.shape) != 3 or inp.shape[0] != 3 or min(inp.shape) < 1:
                raise InvalidInput(
                    f"{self.name}: input must be 'image' FP32 [3, H, W], got {inp.name!r} "
                    f"{inp.datatype} {list(inp.shape)}"
                )
            chw = inp.as_numpy()
            try:  # OpenVINO blocks: run it on a worker thread so the server keeps answering meanwhile
                raw = await asyncio.get_running_loop().run_in_executor(None, self.ir.infer, chw)
            except Exception as e:  # OpenVINO's multi-line C++ text: one line to the client
                raise InferenceError(f"{self.name}: inference failed: {first_line(e)}") from None
            binary = payload.use_binary_outputs
            outputs = []
            for name, arr in raw.items():
                arr = np.ascontiguousarray(arr)
                out = InferOutput(name=name, shape=list(arr.shape), datatype=_v2_type_of(arr))
                out.set_data_from_numpy(arr, binary_data=binary)
                outputs.append(out)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=outputs,
                use_binary_outputs=binary,
                requested_outputs=payload.request_outputs,
            )

    return D2ovModel


def _v2_type_of(arr: np.ndarray) -> str:
    from kserve.utils.numpy_codec import from_np_dtype

    return from_np_dtype(arr.dtype)


def __getattr__(name):  # D2ovModel needs kserve, imported only when the class is asked for
    if name == "D2ovModel":
        return _model_class()
    raise AttributeError(name)


def _decode_request(body: bytes, json_length: int, model_name: str):
    """A v2 REST infer request (JSON, or JSON + binary tensors) as kserve's ``InferRequest``, binary
    tensors kept as bytes (kserve 0.21's own decoder turns them into Python lists first: 0.43 s for
    one 416x608 image here)."""
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
    from kserve.utils.numpy_codec import to_np_dtype

    try:
        doc = json.loads(body[:json_length])
        inputs, offset = [], json_length
        for d in doc["inputs"]:
            params = d.get("parameters") or {}
            inp = InferInput(str(d["name"]), [int(v) for v in d["shape"]], str(d["datatype"]), parameters=params)
            if "binary_data_size" in params:
                size = int(params.pop("binary_data_size"))
                dtype = np.dtype(to_np_dtype(inp.datatype)).newbyteorder("<")  # the extension is little-endian
                arr = np.frombuffer(body[offset : offset + size], dtype=dtype).reshape(inp.shape)
                offset += size
                inp.set_data_from_numpy(arr, binary_data=True)
            else:
                inp.data = d["data"]
            inputs.append(inp)
        outputs = [RequestedOutput(str(o["name"]), o.get("parameters")) for o in doc.get("outputs") or []] or None
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(
            f"malformed v2 infer request for {model_name}: {type(e).__name__}: {first_line(e)}"
        ) from None
    return InferRequest(
        model_name, inputs, request_id=doc.get("id"), parameters=doc.get("parameters"), request_outputs=outputs
    )


def _add_routes(models: dict[str, Any], binary_fast_path: bool = True) -> None:
    """Register d2ov's handlers on kserve's app, before kserve adds its own routes (first match wins):
    ``GET /v2/models/{name}`` (kserve's metadata + ``rt_info``) and, unless ``binary_fast_path`` is
    off, ``POST /v2/models/{name}/infer`` decoding binary tensors without kserve's list detour; the
    model itself runs through kserve's ``Model.__call__`` (pre/predict/postprocess, metrics) and
    answers with kserve's ``InferResponse.to_rest``."""
    from kserve.errors import ModelNotFound
    from kserve.model_server import app
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    def model_of(name: str):
        if name not in models:
            raise ModelNotFound(name)
        return models[name]

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(model_of(request.path_params["model_name"]).model_metadata())

    async def infer(request: Request) -> Response:
        model_name = request.path_params["model_name"]
        model = model_of(model_name)
        body = await request.body()
        header = request.headers.get("inference-header-content-length")
        req = _decode_request(body, int(header) if header and header.isdigit() else len(body), model_name)
        response, _ = await model(req, headers=dict(request.headers))
        out, json_length = response.to_rest()
        if json_length is None:
            return JSONResponse(out)
        return Response(
            out, media_type="application/octet-stream", headers={"inference-header-content-length": str(json_length)}
        )

    # plain Starlette routes (the handlers take the request): kserve's exception handlers still apply
    app.add_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    if binary_fast_path:
        app.add_route("/v2/models/{model_name}/infer", infer, methods=["POST"])


def serve(
    irs: dict[str, str | os.PathLike],
    http_port: int = 8080,
    host: str = "127.0.0.1",
    device: str = "CPU",
    hint: str = "LATENCY",
    binary_fast_path: bool = True,
) -> None:
    """Load the IRs (``{name: xml}``) and run kserve's ModelServer on ``host:http_port`` until stopped
    (SIGTERM/SIGINT)."""
    import kserve

    models = {}
    for name, xml in irs.items():
        models[name] = _model_class()(name, xml, device=device, hint=hint)
        models[name].load()
        log.info(
            "serving %s (%s) as http://%s:%d/v2/models/%s",
            xml,
            models[name].ir.metadata.model_name,
            host,
            http_port,
            name,
        )

    class LoopbackModelServer(kserve.ModelServer):
        def setup_event_loop(self):  # start() has built the REST server; it binds when the loop runs
            if self._rest_server is not None:
                self._rest_server.config.host = host
            super().setup_event_loop()

    _add_routes(models, binary_fast_path)
    server = LoopbackModelServer(http_port=http_port, enable_grpc=False, workers=1)  # configures kserve's logging
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # two timing lines per request otherwise
    server.start(list(models.values()))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m d2ov_core.serve.kserve",
        description="Serve a d2ov IR with KServe's ModelServer (v2 REST protocol).",
    )
    p.add_argument(
        "--ir", required=True, action="append", help="the IR's model.xml (its .bin beside it); repeat to serve several"
    )
    p.add_argument(
        "--name",
        help="the model's name on the server (one --ir only; default: the last part of the "
        "IR's model name, e.g. mask_rcnn_shapes)",
    )
    p.add_argument("--http-port", type=int, default=int(os.environ.get("D2OV_KSERVE_PORT", 8080)))
    p.add_argument(
        "--host",
        default=os.environ.get("D2OV_KSERVE_HOST", "127.0.0.1"),
        help="bind address (default 127.0.0.1; 0.0.0.0 in a container)",
    )
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--hint", choices=["LATENCY", "THROUGHPUT"], default="LATENCY", help="OpenVINO performance hint")
    p.add_argument(
        "--kserve-decoding",
        action="store_true",
        help="decode infer requests with kserve's own handler (binary tensors become Python lists: "
        "~0.4 s per 416x608 image) instead of d2ov's; for comparison",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[d2ov] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # kserve.model_server parses sys.argv when imported: show it only what is its own (nothing)
    sys.argv = sys.argv[:1]
    try:
        if args.name and len(args.ir) > 1:
            raise D2ovError("--name names one model: with several --ir, each is named after its IR")
        irs = {check_name(args.name) if args.name else model_name(runtime.read_metadata(xml)): xml for xml in args.ir}
        if len(irs) < len(args.ir):
            raise D2ovError(f"two IRs would have the same name ({', '.join(args.ir)})")
        serve(
            irs,
            http_port=args.http_port,
            host=args.host,
            device=args.device,
            hint=args.hint,
            binary_fast_path=not args.kserve_decoding,
        )
    except D2ovError as e:
        print(f"d2ov: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(
            f"d2ov: error: {e.name or 'kserve'} is not installed: pip install 'd2ov[serve]' "
            "(or use .venv-serve, see requirements-serve.txt)",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
