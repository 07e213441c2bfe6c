"""Compare the IRs under two folders, file by file: weights (``model.bin``) byte for byte, the graph
(``model.xml`` without its ``rt_info``, OpenVINO's generated node numbers left out) byte for byte, and which d2ov metadata keys differ (those hold
measurements: accuracy with its timings, the check against Detectron2, conversion time):

    .venv/bin/python -m tools.compare_ir d2ov_core/data/ir /tmp/rebundle/ir

Used to show that ``make bundle`` on the same inputs rebuilds the same models. Exit code 1 when a
weights file or a graph differs, or an IR is missing on one side.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from d2ov_core.runtime.settings import RT_INFO_SECTION

#: OpenVINO's generated node names (``Constant_1240728``): numbered by a counter of the converting
#: process, so the same graph converted after other work gets other numbers
_GENERATED = re.compile(rb'name="([A-Za-z]+)_\d+"')
#: the model-level rt_info (one tab in; layers have their own, deeper)
_RT_INFO = re.compile(rb"\n\t<rt_info>.*?\n\t</rt_info>", re.DOTALL)


def _graph(xml: bytes) -> bytes:
    """The XML without the model's rt_info, generated node names' numbers dropped."""
    return _GENERATED.sub(rb'name="\1_#"', _RT_INFO.sub(b"", xml))


def _meta(xml: bytes) -> dict[str, bytes]:
    """The d2ov metadata values of an IR's XML, by key (as written, unparsed)."""
    section = re.search(rb"<" + RT_INFO_SECTION.encode() + rb">(.*?)</" + RT_INFO_SECTION.encode() + rb">", xml, re.S)
    if section is None:
        return {}
    return {k.decode(): v for k, v in re.findall(rb'<(\w+) value="(.*?)"\s*/>', section.group(1), re.S)}


def compare(a: Path, b: Path) -> tuple[list[str], bool]:
    """Lines saying how the IRs under ``a`` and ``b`` compare, and whether every weights file and
    graph is the same."""
    lines, same = [], True
    names = sorted(
        {p.parent.relative_to(a) for p in a.rglob("model.xml")}
        | {p.parent.relative_to(b) for p in b.rglob("model.xml")}
    )
    for rel in names:
        xa, xb = a / rel / "model.xml", b / rel / "model.xml"
        if not (xa.is_file() and xb.is_file()):
            lines.append(f"{rel}: only under {a if xa.is_file() else b}")
            same = False
            continue
        bin_same = (a / rel / "model.bin").read_bytes() == (b / rel / "model.bin").read_bytes()
        ta, tb = xa.read_bytes(), xb.read_bytes()
        graph_same = _graph(ta) == _graph(tb)
        ma, mb = _meta(ta), _meta(tb)
        keys = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
        same &= bin_same and graph_same
        lines.append(
            f"{rel}: weights {'identical' if bin_same else 'DIFFER'}, graph {'identical' if graph_same else 'DIFFERS'}, "
            f"metadata keys that differ: {', '.join(keys) or 'none'}"
        )
    return lines, same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    lines, same = compare(args.a, args.b)
    print("\n".join(lines))
    return 0 if same and lines else 1


if __name__ == "__main__":
    sys.exit(main())
