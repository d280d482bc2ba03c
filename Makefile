# Set-up is idempotent and cache-friendly: the virtual environment and the Delta jars live outside the
# clone, keyed by what they contain, so a fresh clone reuses them and only a changed lock rebuilds.
SHELL := /bin/bash
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/towerssl
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-12)
VENV ?= $(CACHE_DIR)/venv-$(LOCK_HASH)
PYTHON := $(VENV)/bin/python
# The Delta connector's jars match the delta-spark that the lock pins (one source: requirements.lock).
DELTA_VERSION := $(shell sed -n 's/^delta-spark==//p' requirements.lock)
export TOWERSSL_JARS_DIR ?= $(CACHE_DIR)/jars/delta-$(DELTA_VERSION)
export PYTHONHASHSEED := 0
DEMO_DIR ?= out/demo

.PHONY: setup airflow-setup test demo experiment clean python

setup: $(VENV)/.installed $(TOWERSSL_JARS_DIR)/.fetched
	@$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e . > $(VENV)/editable.log 2>&1 || { cat $(VENV)/editable.log; exit 1; }

$(VENV)/.installed: requirements.lock
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip>=24"
	$(VENV)/bin/pip install -r requirements.lock
	touch $@

# Delta's Spark connector is not in the delta-spark wheel: fetch it (and delta-storage) from Maven Central
# (Scala 2.13: the only Scala of Spark 4).
$(TOWERSSL_JARS_DIR)/.fetched:
	mkdir -p $(TOWERSSL_JARS_DIR)
	for a in delta-spark_2.13 delta-storage; do \
	  mvn -q dependency:copy -Dartifact=io.delta:$$a:$(DELTA_VERSION) -DoutputDirectory=$(TOWERSSL_JARS_DIR) || exit 1; \
	done
	touch $@

# Airflow lives in its own virtual environment (airflow/setup.sh, idempotent, cached like the main one).
airflow-setup:
	@PYTHON=python3 airflow/setup.sh >/dev/null

test: setup airflow-setup
	$(PYTHON) -m pytest -q tests

demo: setup
	$(VENV)/bin/towerssl demo --out $(DEMO_DIR) $(DEMO_ARGS)

# The MovieLens SSL experiment (docs/experiments.md); rerun to resume. One torch thread per process: on a small
# CPU machine shared with Spark, torch's intra-op threads slow training many times over.
EXPERIMENT_DIR ?= out/experiment
experiment: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/towerssl experiment --out $(EXPERIMENT_DIR) $(EXPERIMENT_ARGS)

clean:
	rm -rf out spark-warehouse metastore_db derby.log .pytest_cache

# Prints the interpreter of the project's environment (for scripts and editors).
python:
	@echo $(PYTHON)
