# distil: `make` runs the whole pipeline on the embedded default (Fashion-MNIST demo);
# `make test` runs the tests. Both create .venv on first use.
#
# The pipeline's stages, in order (`.venv/bin/distil --help` lists them from the stage registry):
#   teacher -> cache -> student -> submit        tools: export, report, params
#   make submit CONFIG=configs/food10-mini.yaml  runs every stage up to submit; each one that is finished
#                                                with the same config and inputs is reused in seconds
#   make student ARGS="student.epochs=3"         key=value overrides (a changed config is refused, not ignored)
#   make student FORCE=1                         start only that stage over (same as `distil student --force`)
#   make clean-student                           delete one stage's folder (clean-teacher, clean-cache, ...)
#   make submit KAGGLE=1 COMPETITION=ml2023spring-hw13

CONFIG ?= configs/demo.yaml
NAME   := $(basename $(notdir $(CONFIG)))
ARGS   ?=
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DISTIL := $(VENV)/bin/distil
STAMP  := $(VENV)/.installed
RUN    := runs/$(NAME)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# KAGGLE=1: every stage gets submit.upload=true, so missing credentials or a bad competition name stop the
# first stage, before any training (the submit section is not part of what a stage computes)
UPLOAD := $(if $(filter 1 yes true,$(KAGGLE)),submit.upload=true,) $(if $(COMPETITION),submit.competition=$(COMPETITION),)
# --force only for the stage named on the command line, not for the stages it depends on
FORCED  = $(if $(and $(filter 1 yes true,$(FORCE)),$(filter $@,$(MAKECMDGOALS))),--force,)
STAGES := teacher cache student submit export report params

.PHONY: all setup test help $(STAGES) demo-data clean-run benchmarks food11-data mnist-data seeds

all: submit
	@echo "submission: submissions/$(NAME).csv"
	@$(DISTIL) compare $(RUN)

setup: $(STAMP)

# the venv holds torch's CUDA build (~6.5 GiB): check the disk first, not half-way through pip
NEED_GIB := 7
$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ ! -x $(PY) ] && [ "$$free" -lt $(NEED_GIB) ]; then \
	  echo "setup: $$free GiB free on the disk of $(CURDIR); .venv needs about $(NEED_GIB) GiB" \
	       "(torch's CUDA build). Free some space (another clone's .venv, /tmp/pytest-of-$$(id -un)) and run make again." >&2; \
	  df -h . >&2; exit 1; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

help: | $(STAMP)
	@$(DISTIL) --help

$(FMNIST):
	$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist

data/demo-fmnist/sample_submission.csv: | $(STAMP) $(FMNIST)
	$(DISTIL) demo-data --out data/demo-fmnist

demo-data: data/demo-fmnist/sample_submission.csv

# the demo config needs the demo data; other configs point at their own data
DATA_DEP := $(if $(filter demo,$(NAME)),data/demo-fmnist/sample_submission.csv,)

# Every stage target calls distil, which decides: a stage finished with the same config and the same
# inputs (images, teacher) is reused; one whose inputs changed is refused with the command that re-runs it.
teacher: | $(STAMP) $(DATA_DEP)
	$(DISTIL) teacher --config $(CONFIG) $(FORCED) $(ARGS) $(UPLOAD)
cache: teacher
	$(DISTIL) cache --config $(CONFIG) $(FORCED) $(ARGS) $(UPLOAD)
student: cache
	$(DISTIL) student --config $(CONFIG) $(FORCED) $(ARGS) $(UPLOAD)
submit: student
	$(DISTIL) submit --config $(CONFIG) $(ARGS) $(UPLOAD)
report params export: | $(STAMP)
	$(DISTIL) $@ --config $(CONFIG) $(ARGS)

clean-%:
	rm -rf $(RUN)/$*

test: $(STAMP)
	$(PY) -m pytest -q -n 2

benchmarks: $(STAMP)
	$(PY) benchmarks/methods.py --data ../shared/datasets/food10-mini
	$(PY) benchmarks/recipe.py --data ../shared/datasets/food10-mini

# the tutorials' experiments beside their published numbers (configs/seeds/): hours on a 2-core CPU
mnist-data: | $(STAMP)
	$(DISTIL) idx-data --source ../shared/datasets/mnist --out data/mnist

seeds: mnist-data
	$(PY) benchmarks/seeds.py

clean-run:
	rm -rf $(RUN) submissions/$(NAME).csv

# Food-11 for HW13 from Kaggle (needs credentials and network): data/food11
food11-data: | $(STAMP)
	mkdir -p data/food11
	$(VENV)/bin/kaggle competitions download -c ml2023spring-hw13 -p data/food11
	cd data/food11 && unzip -q -o '*.zip' && rm -f *.zip
	@ls data/food11
