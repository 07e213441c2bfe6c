# d2ov. The README's Quick start is `make app` and `make test`.
PY := .venv/bin/python
SAMPLES := $(wildcard d2ov_core/data/samples/shapes_*.jpg)
DEMOS := demo/faster_rcnn_shapes demo/mask_rcnn_shapes
KEYPOINT_DEMO := demo/keypoint_rcnn_figures
PANOPTIC_DEMO := demo/panoptic_fpn_shapes
#: pytest-xdist workers for make test (each takes whole test files, so a module's fixtures are built once)
WORKERS ?= 2
#: system tests that take seconds each (make check): the bundled models through the library and the CLI
QUICK_SYSTEM := tests/system/test_shapes_data.py tests/system/test_predictor.py

.PHONY: setup app demo test test-fast check lint bundle clean docs

setup:            ## create/update .venv (idempotent: seconds when up to date)
	@bash tools/setup.sh

app: setup        ## the web app on http://127.0.0.1:7860
	$(PY) app.py

demo: setup       ## the CLI on the bundled samples with the bundled demo model
	$(PY) -m d2ov_core predict $(SAMPLES) --render out/demo --json out/demo/predictions.json

test:             ## the full suite, browser test included (what CI runs)
	@D2OV_BROWSER=1 D2OV_SERVE=1 bash tools/setup.sh
	$(PY) -m pytest -q --timeout=600 --durations=25 -rs -p no:cacheprovider -n $(WORKERS) --dist loadfile --no-loadscope-reorder

check: lint       ## the edit loop, under 5 minutes: lint, the unit tests, the quick system tests
	$(PY) -m pytest -q -x -p no:cacheprovider --timeout=600 tests/unit $(QUICK_SYSTEM)

lint: setup       ## Ruff (lint + format check) over the repo, mypy on the runtime and the store
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test-fast: setup  ## unit tests only (numpy, the torch boundary, settings, service): under a minute
	$(PY) -m pytest -q tests/unit -p no:cacheprovider

bundle: setup     ## re-convert the four demo models into d2ov_core/data/ir/ (FP16 + INT8, AP/PQ measured on the test splits)
	$(PY) -m tools.make_shapes --out .cache/shapes --split train --num 64
	$(PY) -m tools.make_shapes --out .cache/shapes --split test
	for m in $(DEMOS); do d=d2ov_core/data/ir/$$(echo $$m | sed 's|/|__|'); rm -rf $$d; \
	  $(PY) -m d2ov_core convert $$m --out $$d/FP16 --annotations .cache/shapes/test.json --images .cache/shapes || exit 1; \
	  $(PY) -m d2ov_core convert $$m --precision INT8 --calibration .cache/shapes/train --calibration-size 64 \
	    --recipe d2ov-3 --annotations .cache/shapes/test.json --images .cache/shapes --out $$d/INT8 || exit 1; \
	done
	$(PY) -m tools.make_figures --out .cache/figures-bundle --split train --num 64
	$(PY) -m tools.make_figures --out .cache/figures-bundle --split test
	d=d2ov_core/data/ir/demo__keypoint_rcnn_figures; rm -rf $$d; \
	  $(PY) -m d2ov_core convert $(KEYPOINT_DEMO) --out $$d/FP16 --annotations .cache/figures-bundle/test.json \
	    --images .cache/figures-bundle && \
	  $(PY) -m d2ov_core convert $(KEYPOINT_DEMO) --precision INT8 --calibration .cache/figures-bundle/train \
	    --calibration-size 64 --recipe d2ov-3 --annotations .cache/figures-bundle/test.json \
	    --images .cache/figures-bundle --out $$d/INT8
	$(PY) -m tools.make_panoptic --out .cache/panoptic-bundle --split train --num 64
	$(PY) -m tools.make_panoptic --out .cache/panoptic-bundle --split test
	d=d2ov_core/data/ir/demo__panoptic_fpn_shapes; rm -rf $$d; \
	  $(PY) -m d2ov_core convert $(PANOPTIC_DEMO) --out $$d/FP16 --annotations .cache/panoptic-bundle/test.json \
	    --images .cache/panoptic-bundle --panoptic .cache/panoptic-bundle/test_panoptic.json && \
	  $(PY) -m d2ov_core convert $(PANOPTIC_DEMO) --precision INT8 --calibration .cache/panoptic-bundle/train \
	    --calibration-size 64 --recipe d2ov-3 --annotations .cache/panoptic-bundle/test.json \
	    --images .cache/panoptic-bundle --panoptic .cache/panoptic-bundle/test_panoptic.json --out $$d/INT8

clean:
	rm -rf out .pytest_cache tests/_artifacts

docs: setup       ## the documentation site into out/site (mkdocs --strict: a broken link, anchor or nav entry fails)
	@$(PY) -c "import sys, importlib.metadata as m; sys.exit(any(m.version(n) != v.strip() for n, v in (l.split('==') for l in open('requirements-docs.txt') if '==' in l and not l.startswith('#'))))" 2>/dev/null \
	  || $(PY) -m pip install -q -r requirements-docs.txt
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d out/site
