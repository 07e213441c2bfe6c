# d2ov: the two commands of the README's Quick start are `make demo` and `make test`.
PY := .venv/bin/python
SAMPLES := $(wildcard models/demo/samples/*.jpg)

.PHONY: setup demo test test-fast clean

setup:            ## create/update .venv (idempotent: seconds when up to date)
	@bash tools/setup.sh

demo: setup       ## run the CLI on the bundled samples with the bundled demo model
	$(PY) -m d2ov_core predict $(SAMPLES) --render out/demo --json out/demo/predictions.json

test: setup       ## the full suite (what CI runs)
	$(PY) -m pytest -q --timeout=1200 -p no:cacheprovider

test-fast: setup  ## skip the slow seed-architecture conversions
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

clean:
	rm -rf out .pytest_cache
