"""OpenVINO at run time: reads IRs (``.xml`` + ``.bin``) and their d2ov metadata from ``rt_info``,
compiles them for a device, and runs inference. It knows nothing about images or Detectron2, and
imports neither torch nor detectron2 (the conversion side writes IRs: :mod:`d2ov_core.export.convert`).

IR contract (written by :mod:`d2ov_core.convert`, checked by :func:`load_ir`):
  input ``image``: float32 ``(3, H, W)``, the resized image in the model's channel order
  (``input_format``, BGR for the model zoo), pixel values 0-255, any H and W.
  outputs, named and ordered as ``rt_info model_info/outputs``:
    ``boxes`` float32 ``(N, 4)`` xyxy in the RESIZED input frame, N <= max_detections;
    ``classes`` int64 ``(N,)``; ``scores`` float32 ``(N,)`` (>= graph_score_threshold, after NMS);
    ``masks`` float32 ``(N, 1, M, M)`` mask probabilities in box frame (instance segmentation);
    ``keypoint_heatmaps`` float32 ``(N, K, S, S)`` keypoint logits over each box (keypoint models);
    ``sem_seg`` float32 ``(C, Hp / s, Wp / s)`` semantic logits over the padded input at stride
    ``s = sem_seg_stride`` (Hp, Wp the input padded to ``size_divisibility``; its labels: the task's
    module in :mod:`d2ov_core.runtime.tasks`);
    ``image_size`` int64 ``(2,)`` = (H, W) of the input.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceError, InputError, IRError, first_line
from . import settings as S

__all__ = [
    "openvino_version",
    "available_devices",
    "check_device",
    "load_ir",
    "CompiledIR",
    "read_metadata",
    "exec_precision",
    "bf16_available",
    "COMPUTE",
    "usable_cpus",
]

#: floating-point compute precision on CPU: exact f32 (default) or bf16 (CPUs with native bfloat16)
COMPUTE = ("f32", "bf16")

_core = None
_core_lock = threading.Lock()


def _ov():
    import openvino as ov

    return ov


def core():
    """The process-wide ``openvino.Core`` (created once)."""
    global _core
    with _core_lock:
        if _core is None:
            _core = _ov().Core()
        return _core


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a container's cpuset, a test
    worker pinned to its share), not the machine's count. The default for every thread count d2ov
    picks (PyTorch's, the benchmark's; OpenVINO's CPU plugin follows the mask by itself): more
    threads than usable CPUs fight over them (measured: PyTorch Keypoint R-CNN 3.8x slower with two
    such processes at 2 threads each on 2 CPUs than pinned at 1 each)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def openvino_version() -> str:
    return _ov().__version__.split("-")[0]


def available_devices() -> list[str]:
    return list(core().available_devices)


def check_device(device: str) -> None:
    avail = available_devices()
    base = device.split(":")[0].split(".")[0]
    if base in ("AUTO", "MULTI", "HETERO", "BATCH"):
        return
    if device not in avail and base not in [d.split(".")[0] for d in avail]:
        raise DeviceError(f"unknown device {device!r}: expected one of {', '.join(avail + ['AUTO'])}")


# ----------------------------------------------------------------------------- metadata


def _get_metadata(model, where: str) -> S.IRMetadata:
    texts = {
        key: model.get_rt_info([S.RT_INFO_SECTION, key]).astype(str)
        for key in S.SETTINGS
        if model.has_rt_info([S.RT_INFO_SECTION, key])
    }
    try:
        return S.decode_all(texts)
    except KeyError as e:
        raise IRError(
            f"{where}: not a d2ov IR (rt_info {S.RT_INFO_SECTION}/{e.args[0]} is missing); "
            "convert the model with `d2ov convert`"
        ) from None
    except ValueError as e:
        raise IRError(f"{where}: {e}") from None


def read_metadata(xml_path: str | os.PathLike) -> S.IRMetadata:
    """The d2ov metadata of an IR, without compiling it."""
    return _get_metadata(_read_model(Path(xml_path)), str(xml_path))


def write_metadata(xml_path: str | os.PathLike, key: str, value: Any) -> None:
    """Set one metadata ``key`` of the IR at ``xml_path`` in place (``model.xml`` is rewritten
    through a temporary name; the weights are written back unchanged)."""
    xml = Path(xml_path)
    model = _read_model(xml)
    model.set_rt_info(S.encode(key, value), [S.RT_INFO_SECTION, key])
    tmp = xml.with_name(f"{key}.xml")
    _ov().save_model(model, str(tmp), compress_to_fp16=False)
    os.replace(tmp, xml)
    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))


# ----------------------------------------------------------------------------- reading / compiling


def _read_model(xml: Path):
    if xml.suffix != ".xml":
        raise IRError(f"expected an OpenVINO IR .xml file, found {xml}")
    bin_path = xml.with_suffix(".bin")
    if not xml.is_file():
        raise IRError(f"IR file not found: {xml}")
    if not bin_path.is_file():
        raise IRError(f"IR weights not found: {bin_path} (the .bin must sit beside the .xml)")
    try:
        return core().read_model(str(xml))
    except Exception as e:  # openvino raises RuntimeError with multi-line C++ text
        first = first_line(e)
        raise IRError(f"cannot read IR {xml}: {first}") from None


class CompiledIR:
    """A compiled d2ov IR, safe to call from several threads at once.

    Each call borrows an infer request from a small pool (one per concurrent caller), so the
    compiled model is shared and requests are never used by two threads at once.
    """

    def __init__(
        self,
        xml: Path,
        device: str = "CPU",
        hint: str = "LATENCY",
        threads: int | None = None,
        static_shape: tuple[int, int] | None = None,
        profile: bool = False,
        compute: str = "f32",
    ):
        check_device(device)
        if hint not in ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"):
            raise InputError(f"unknown performance hint {hint!r}: expected LATENCY or THROUGHPUT")
        if compute not in COMPUTE:
            raise InputError(f"unknown compute precision {compute!r}: expected one of {', '.join(COMPUTE)}")
        if not compute_runs_on(compute, device):
            raise DeviceError(f"bf16 compute needs a CPU with native bfloat16 (AVX512_BF16 or AMX); {device} has none")
        self.xml = Path(xml)
        model = _read_model(self.xml)
        self.metadata = _get_metadata(model, str(self.xml))
        names = self.metadata.outputs
        if len(names) != len(model.outputs):
            raise IRError(
                f"{self.xml}: rt_info lists {len(names)} outputs ({', '.join(names)}) but the graph has "
                f"{len(model.outputs)}"
            )
        self.output_names = list(names)
        self.static_shape = None
        if static_shape is not None:
            sh, sw = (int(v) for v in static_shape)
            if sh < 32 or sw < 32 or sh % 32 or sw % 32:
                raise IRError(f"static input shape must be multiples of 32 and at least 32, got {sh}x{sw}")
            try:
                model.reshape({model.inputs[0]: _ov().PartialShape([3, sh, sw])})
            except Exception as e:
                raise IRError(f"cannot reshape {self.xml} to a static {sh}x{sw} input: {first_line(e)}") from None
            self.static_shape = (sh, sw)
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if device == "CPU":
            # OpenVINO's CPU plugin silently computes FP32 graphs in bf16 on CPUs with AVX512_BF16/AMX
            # (measured here: 2.8x faster, but scores off by ~1e-2): d2ov computes in f32 unless asked
            config["INFERENCE_PRECISION_HINT"] = compute
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if profile:
            config["PERF_COUNT"] = True
        self.device = device
        self.hint = hint
        self.compute = compute if device == "CPU" else "device default"
        try:
            self._compiled = core().compile_model(model, device, config)
        except Exception as e:
            first = first_line(e)
            raise IRError(f"cannot compile {self.xml} for {device}: {first}") from None
        self._pool: queue.SimpleQueue = queue.SimpleQueue()

    def infer(self, image_chw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the graph on one preprocessed image; returns copies of the named outputs."""
        try:
            request = self._pool.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            request.infer({0: np.ascontiguousarray(image_chw, dtype=np.float32)})
            return {name: request.get_output_tensor(i).data.copy() for i, name in enumerate(self.output_names)}
        finally:
            self._pool.put(request)

    def infer_stream(
        self, inputs: Iterable[tuple[Any, np.ndarray]], jobs: int | None = None
    ) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
        """Throughput path: run ``(key, image_chw)`` pairs through an ``AsyncInferQueue`` of ``jobs``
        requests (default: the device's optimal number) and yield ``(key, outputs)`` IN INPUT ORDER.

        Inputs are pulled lazily, so the caller's preprocessing of the next image overlaps with
        inference of the previous ones; at most ``2 * jobs`` results wait in memory.
        """
        ov = _ov()
        jobs = max(1, int(jobs or self.optimal_requests))
        queue_ = ov.AsyncInferQueue(self._compiled, jobs)
        done: dict[int, dict[str, np.ndarray]] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def on_done(request, index):
            try:
                out = {name: request.get_output_tensor(i).data.copy() for i, name in enumerate(self.output_names)}
            except BaseException as e:  # surfaced in the caller's thread
                errors.append(e)
                out = {}
            with lock:
                done[index] = out

        queue_.set_callback(on_done)
        keys: list[Any] = []
        next_out = 0

        def ready():
            nonlocal next_out
            while True:
                with lock:
                    if next_out not in done:
                        return
                    out = done.pop(next_out)
                if errors:
                    raise IRError(f"inference failed on {self.device}: {first_line(errors[0])}")
                yield keys[next_out], out
                keys[next_out] = None
                next_out += 1

        for index, (key, chw) in enumerate(inputs):
            keys.append(key)
            queue_.start_async({0: np.ascontiguousarray(chw, dtype=np.float32)}, userdata=index)
            yield from ready()
            if index - next_out >= 2 * jobs:  # bound memory: wait for the oldest
                queue_.wait_all()
                yield from ready()
        queue_.wait_all()
        yield from ready()

    def profile(self, image_chw: np.ndarray) -> list[dict[str, Any]]:
        """Per-op timings of one inference (the IR must be compiled with ``profile=True``):
        ``[{"name", "type", "exec_type", "ms"}]`` for every executed op."""
        request = self._compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(image_chw, dtype=np.float32)})
        rows = []
        for p in request.profiling_info:
            if str(p.status).endswith("EXECUTED"):
                rows.append(
                    {
                        "name": p.node_name,
                        "type": p.node_type,
                        "exec_type": p.exec_type,
                        "ms": p.real_time.total_seconds() * 1e3,
                    }
                )
        return rows

    @property
    def optimal_requests(self) -> int:
        return int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))


def load_ir(
    xml: str | os.PathLike,
    device: str = "CPU",
    hint: str = "LATENCY",
    threads: int | None = None,
    static_shape: tuple[int, int] | None = None,
    profile: bool = False,
    compute: str = "f32",
) -> CompiledIR:
    return CompiledIR(
        Path(xml),
        device=device,
        hint=hint,
        threads=threads,
        static_shape=static_shape,
        profile=profile,
        compute=compute,
    )


def exec_precision(exec_type: str) -> str:
    """The precision an executed CPU op ran in, from OpenVINO's per-op ``exec_type``, normalised to
    lower case (``"i8"``, ``"f32"``, ``"bf16"``, ``"f16"``, ...); ``""`` when the name carries none.

    The CPU plugin names a kernel ``<implementation>_<precision of its first input>``: the
    implementation says the ISA (``jit_avx2``, ``jit_avx512``, ``brgconv_avx512`` on AVX-512/VNNI,
    ``brgconv_avx512_amx`` on Intel AMX, ``gemm_...``, ``ref_any``), and the suffix is ``I8`` for an
    unsigned 8-bit input (its placeholder for "runs in INT8") but the element type's own name
    otherwise (``i8`` for a signed 8-bit input, as AMX kernels often take; ``f32``; ``bf16``; older
    releases spell it ``FP32``/``BF16``). So ``brgconv_avx512_I8``, ``jit_avx2_I8`` and
    ``brgconv_avx512_amx_i8`` all ran in INT8."""
    tail = exec_type.rsplit("_", 1)[-1].lower() if "_" in exec_type else ""
    return {"u8": "i8", "fp32": "f32", "fp16": "f16", "i8": "i8"}.get(tail, tail)


def bf16_available() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (what ``compute="bf16"`` needs)."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compute_runs_on(compute: str, device: str) -> bool:
    """Whether ``compute`` (``f32`` | ``bf16``) runs on ``device`` here: f32 anywhere, bf16 only on a
    CPU with native bfloat16."""
    return compute != "bf16" or (str(device) == "CPU" and bf16_available())
