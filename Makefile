# One entry point for everything; every target sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
NOTEBOOKS := 01_eda 02_preprocessing 03_train_cnn 04_evaluate

.PHONY: install test test-fast notebooks benchmarks evaluate clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## Run the test suite (tests needing the full data run when UTKFACE_DIR is set).
test: install
	$(BIN)/pytest -ra

test-fast: install
	$(BIN)/pytest -ra -m "not slow and not browser"

## Run the notebooks in order on the configured data ($$UTKFACE_DIR, data/UTKFace or data/sample),
## writing executed copies to notebooks/executed/ and the reference figures to figures/.
notebooks: install
	mkdir -p notebooks/executed
	cd notebooks && for nb in $(NOTEBOOKS); do \
	  ../$(BIN)/papermill --cwd . $$nb.ipynb executed/$$nb.ipynb -p figures_dir ../figures || exit 1; \
	done

## Print the preprocessing and training-speed figures.
benchmarks: install
	$(BIN)/python benchmarks/preprocessing.py
	$(BIN)/python benchmarks/training_speed.py

evaluate: install
	$(BIN)/agegender evaluate

clean:
	rm -rf $(VENV) data/cache runs notebooks/executed .pytest_cache
