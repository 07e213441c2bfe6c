"""runtime.ir: reading IRs and their metadata, compiling, and the errors users see."""

import os

import numpy as np
import pytest

from d2ov_core.errors import DeviceError, InputError, IRError
from d2ov_core.runtime import ir
from d2ov_core.store import lookup

from ..conftest import ROOT
from ..helpers import no_metadata_ir

XML = lookup.bundled_ir("demo/faster_rcnn_shapes", "FP16")


def test_metadata_is_typed():
    meta = ir.read_metadata(XML)
    assert meta.labels == ["circle", "square", "triangle"] and meta.task == "detection"
    assert isinstance(meta.min_size, int) and isinstance(meta.graph_score_threshold, float)
    assert meta.outputs[:2] == ["boxes", "classes"] and meta.graph_revision == lookup.graph_revision(
        meta.meta_architecture
    )


def test_compiled_ir_runs_and_names_outputs():
    c = ir.load_ir(XML)
    out = c.infer(np.zeros((3, 64, 96), np.float32))
    assert set(out) == set(c.output_names) and out["image_size"].tolist() == [64, 96]
    assert out["boxes"].shape[1:] == (4,)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"hint": "FAST"}, InputError, "unknown performance hint"),
        ({"compute": "fp8"}, InputError, "unknown compute precision"),
        ({"device": "TPU"}, DeviceError, "unknown device 'TPU'"),
        ({"static_shape": (100, 64)}, IRError, "multiples of 32"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        ir.load_ir(XML, **kwargs)


def test_files_that_are_not_d2ov_irs(tmp_path):
    with pytest.raises(IRError, match="expected an OpenVINO IR .xml"):
        ir.read_metadata(tmp_path / "model.bin")
    with pytest.raises(IRError, match="IR file not found"):
        ir.read_metadata(tmp_path / "nope.xml")
    with pytest.raises(IRError, match="not a d2ov IR"):
        ir.read_metadata(no_metadata_ir(tmp_path / "plain"))


def test_cpu_is_available():
    assert "CPU" in ir.available_devices()


@pytest.mark.parametrize(
    "exec_type, expected",
    [
        # AMD Zen 4 / Intel without AMX (AVX-512 + VNNI): unsigned 8-bit input, OpenVINO's "I8" placeholder
        ("brgconv_avx512_I8", "i8"),
        ("jit_avx512_1x1_I8", "i8"),
        ("brgconv_avx512_1x1_I8", "i8"),
        # Intel AMX: a signed 8-bit input is named by its element type, lower case
        ("brgconv_avx512_amx_i8", "i8"),
        ("brgconv_avx512_amx_1x1_I8", "i8"),
        ("brgemm_avx512_amx_i8", "i8"),
        # AVX2 only
        ("jit_avx2_I8", "i8"),
        ("jit_avx2_1x1_I8", "i8"),
        ("brgconv_avx2_I8", "i8"),
        # not INT8
        ("brgconv_avx512_f32", "f32"),
        ("jit_avx512_FP32", "f32"),
        ("brgconv_avx512_amx_bf16", "bf16"),
        ("jit_avx2_f16", "f16"),
        ("ref_any_f32", "f32"),
        ("undef", ""),
        ("unknown", ""),
    ],
)
def test_exec_precision_reads_every_cpu_kinds_kernel_names(exec_type, expected):
    assert ir.exec_precision(exec_type) == expected


def test_write_metadata_sets_one_key_in_place(tmp_path):
    import shutil

    src = lookup.bundled_ir("demo/faster_rcnn_shapes")
    for suffix in (".xml", ".bin"):
        shutil.copy(src.with_suffix(suffix), tmp_path / f"model{suffix}")
    xml = tmp_path / "model.xml"
    before, weights = ir.read_metadata(xml), xml.with_suffix(".bin").read_bytes()
    ir.write_metadata(xml, "verification", {"images": 3, "ok": True})
    after = ir.read_metadata(xml)
    assert after.verification == {"images": 3, "ok": True} and before.verification != after.verification
    assert after.accuracy == before.accuracy and after.labels == before.labels
    assert xml.with_suffix(".bin").read_bytes() == weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml"]  # no temporary left
    with pytest.raises(IRError, match="not found"):
        ir.write_metadata(tmp_path / "none.xml", "verification", {})


def test_thread_pools_are_sized_to_the_cpus_the_process_may_use():
    """``usable_cpus`` follows the affinity mask (taskset, a container's cpuset), not the machine's
    core count: a process pinned to one CPU gets one PyTorch/benchmark thread by default."""
    import subprocess
    import sys

    from d2ov_core.runtime.ir import usable_cpus

    assert usable_cpus() == len(os.sched_getaffinity(0))
    code = (
        "import os; os.sched_setaffinity(0, [min(os.sched_getaffinity(0))]); "
        "from d2ov_core.runtime.ir import usable_cpus; print(usable_cpus())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "1", out
