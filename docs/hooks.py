"""MkDocs hook: tables that come from measurement output, never typed by hand.

A page asks for them with an HTML comment on a line of its own:

    <!-- bench-summary -->           one row per docs/bench/<model>/bench.json (`tools/bench_all.sh`):
                                     each variant's speed against Detectron2 eager
    <!-- include bench/X/bench.md -->  a file of docs/ pasted as it is (the tables `d2ov bench` and
                                     `tools/bench_remote.py` write beside their JSON)
    <!-- readme -->                  the repository's README.md, its links into docs/ made relative
                                     to the site (the home page: one text for GitHub and the site)

A marker naming a file that does not exist stops the build. `render_summary` is also what
tests/unit/test_docs.py checks. Standard library only: the docs build needs neither numpy nor d2ov.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent
MARKER = re.compile(r"^<!-- (bench-summary|readme|include (\S+)) -->$", re.M)
README = DOCS.parent / "README.md"

# the columns of the summary: d2ov bench's variants, in its own order, then its peers
SUMMARY_VARIANTS = [
    "ov-fp32",
    "ov-fp16w",
    "ov-bf16",
    "ov-static",
    "ov-int8",
    "ov-int8-static",
    "ov-throughput",
    "ov-int8-throughput",
    "torchscript",
    "ort-fp32",
    "ort-int8",
]


def bench_reports(root: Path = DOCS) -> list[tuple[Path, dict]]:
    """Every docs/bench/*/bench.json, demo models first, then by model name."""
    reports = [(p, json.loads(p.read_text())) for p in (root / "bench").glob("*/bench.json")]
    return sorted(reports, key=lambda pr: (not pr[1]["model"].startswith("demo/"), pr[1]["model"]))


def render_summary(root: Path = DOCS) -> str:
    reports = bench_reports(root)
    if not reports:
        raise ValueError(f"no bench.json under {root / 'bench'}: run tools/bench_all.sh")
    head = ["model", "weights", "images x runs", "GFLOPs / image", "Detectron2 end-to-end ms"] + SUMMARY_VARIANTS
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for path, rep in reports:
        rows = {r["variant"]: r for r in rep["rows"]}
        failed = {f["variant"] for f in rep.get("failed", [])}
        ref = rows.get("detectron2")
        cells = [
            f"[`{rep['model']}`](#{path.parent.name})",
            rep["weights"],
            f"{len(rep['images'])} x {rep['runs']}",
            f"{rep['model_gflops']:.1f}",
            f"{ref['e2e_ms']:.0f}" if ref else "-",
        ]
        for v in SUMMARY_VARIANTS:
            x = rows.get(v, {}).get("speedup_vs_detectron2")
            cells.append("failed" if v in failed else f"{x:.2f}x" if x else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _include(rel: str, page_src: str) -> str:
    path = (DOCS / rel).resolve()
    if DOCS not in path.parents or not path.is_file():
        raise FileNotFoundError(f"{page_src}: <!-- include {rel} -->: no such file under docs/")
    return path.read_text().rstrip("\n") + "\n"


def readme_for_site(readme: Path = README) -> str:
    """README.md with `](docs/...)` links made relative to docs/ (the site's root)."""
    return re.sub(r"\]\(docs/", "](", readme.read_text())


def on_page_markdown(markdown: str, page, config, files) -> str:
    from mkdocs.exceptions import PluginError

    def replace(m: re.Match) -> str:
        try:
            if m.group(1) == "bench-summary":
                return render_summary()
            if m.group(1) == "readme":
                return readme_for_site()
            return _include(m.group(2), page.file.src_uri)
        except (OSError, ValueError, KeyError) as e:
            raise PluginError(f"docs/hooks.py: {e}") from e

    return MARKER.sub(replace, markdown)
