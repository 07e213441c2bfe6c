"""The README and the documentation site (`make docs` builds it with mkdocs --strict; these are the
checks that need no mkdocs): the README stays a front door, its links and commands are real, every
page is in the nav, and the performance tables come from `tools/bench_all.sh`'s output."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re

import pytest
import yaml

from ..conftest import ROOT

DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _hooks():
    spec = importlib.util.spec_from_file_location("d2ov_docs_hooks", DOCS / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mkdocs() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _nav_files(nav) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_nav_files(x) for x in nav)) if nav else set()
    if isinstance(nav, dict):
        return set().union(*(_nav_files(x) for x in nav.values()))
    return set()


def _matches(rel: str, patterns: str | None) -> bool:
    return any(fnmatch.fnmatch("/" + rel, p.strip()) for p in (patterns or "").splitlines() if p.strip())


def test_readme_is_a_front_door_of_at_most_200_lines():
    n = len(README.splitlines())
    assert n <= 200, f"README.md has {n} lines; move the detail to a page under docs/"


def test_every_relative_link_in_the_readme_points_to_a_file():
    links = [t for t in LINK.findall(README) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert links, "the README links to no page at all"
    missing = [t for t in links if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_docs_page_is_in_the_nav():
    cfg = _mkdocs()
    nav = _nav_files(cfg["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    left_out = [
        p
        for p in pages
        if p not in nav and not _matches(p, cfg.get("not_in_nav")) and not _matches(p, cfg.get("exclude_docs"))
    ]
    assert not left_out, f"docs pages neither in mkdocs.yml's nav nor in not_in_nav/exclude_docs: {left_out}"
    assert not [p for p in nav if not (DOCS / p).is_file()], "the nav names a page that does not exist"


def test_the_site_build_is_strict():
    cfg = _mkdocs()
    assert cfg["strict"] is True
    assert cfg["validation"]["links"]["not_found"] == "warn" and cfg["validation"]["links"]["anchors"] == "warn"
    assert cfg["validation"]["nav"]["omitted_files"] == "warn"
    assert "mkdocs build --strict" in (ROOT / "Makefile").read_text()
    assert "make docs" in (ROOT / ".ci" / "run").read_text()


def test_the_make_commands_the_readme_quotes_are_makefile_targets():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    quoted = set(re.findall(r"`make ([\w-]+)`|^make ([\w-]+)", README, re.M))
    quoted = {a or b for a, b in quoted}
    assert {"app", "test", "docs"} <= quoted, quoted
    assert quoted <= targets, f"the README quotes make targets the Makefile lacks: {sorted(quoted - targets)}"


BENCH = sorted(p.parent.name for p in DOCS.glob("bench/*/bench.json"))


def test_there_is_bench_output():
    assert BENCH, "no docs/bench/*/bench.json: run tools/bench_all.sh"


@pytest.mark.parametrize("model", BENCH)
def test_each_bench_table_is_d2ov_bench_output_and_on_the_performance_page(model):
    """bench.md is what `d2ov bench` wrote from that bench.json (so the table the page pastes is the
    measurement's own), and the performance page pastes it under an anchor of the model's name."""
    from d2ov_core.measure.bench import markdown

    report = json.loads((DOCS / "bench" / model / "bench.json").read_text())
    assert (DOCS / "bench" / model / "bench.md").read_text() == markdown(report)
    page = (DOCS / "performance.md").read_text()
    assert f"<!-- include bench/{model}/bench.md -->" in page
    assert f"{{ #{model} }}" in page
    assert f"(#{model})" in _hooks().render_summary()


def test_the_performance_page_types_no_table_by_hand():
    typed = [ln for ln in (DOCS / "performance.md").read_text().splitlines() if ln.lstrip().startswith("|")]
    assert not typed, f"docs/performance.md has table rows typed by hand: {typed[:3]}"


def test_the_summary_row_of_a_model_is_its_bench_json(tmp_path):
    rep = {
        "model": "demo/x",
        "weights": "catalog",
        "images": ["a.jpg"],
        "runs": 3,
        "model_gflops": 7.06,
        "rows": [
            {"variant": "detectron2", "e2e_ms": 119.4, "speedup_vs_detectron2": 1.0},
            {"variant": "ov-int8", "e2e_ms": 35.0, "speedup_vs_detectron2": 3.416},
        ],
        "failed": [{"variant": "ov-bf16", "exit_code": 1, "error": "no bf16"}],
    }
    (tmp_path / "bench" / "x").mkdir(parents=True)
    (tmp_path / "bench" / "x" / "bench.json").write_text(json.dumps(rep))
    table = _hooks().render_summary(tmp_path)
    assert table.splitlines()[2] == (
        "| [`demo/x`](#x) | catalog | 1 x 3 | 7.1 | 119 | - | - | failed | - | 3.42x | - | - | - | - | - | - |"
    )


def test_include_markers_name_files_that_exist():
    hooks = _hooks()
    for page in DOCS.rglob("*.md"):
        for m in hooks.MARKER.finditer(page.read_text()):
            if m.group(2):
                assert (DOCS / m.group(2)).is_file(), f"{page}: {m.group(0)}"
