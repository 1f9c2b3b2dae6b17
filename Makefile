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
# `make help` lists the targets and variables from the `## ` comments below (no venv needed).

## CONFIG: the run's config; its file name is the run's name (runs/<name>/)
CONFIG ?= configs/demo.yaml
## ARGS: key=value overrides for distil, e.g. ARGS="student.epochs=3"
ARGS   ?=
## FORCE: FORCE=1 starts the stage named on the command line over
FORCE  ?=
## KAGGLE: KAGGLE=1 uploads the submission (credentials are checked before any training)
KAGGLE ?=
## COMPETITION: the Kaggle competition to upload to (default: the config's submit.competition)
COMPETITION ?=
## PYTHON: the Python that creates .venv
PYTHON ?= python3
NAME   := $(basename $(notdir $(CONFIG)))
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

.PHONY: all setup test test-slow help $(STAGES) demo-data clean-run benchmarks food11-data food11-unpack mnist-data seeds

all: submit  ## (the default) every stage of CONFIG up to submit, then the run's table
	@if [ -f submissions/$(NAME).csv ]; then echo "submission: submissions/$(NAME).csv"; fi
	@$(DISTIL) compare $(RUN)

setup: $(STAMP)  ## create .venv and install distil with its test extra

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

help:  ## this list (make's targets and variables; `.venv/bin/distil --help` lists distil's commands)
	@echo "usage: make [TARGET] [VARIABLE=value ...]"
	@echo
	@echo "targets:"
	@grep -E '^[A-Za-z0-9_%. -]+:([^=]|$$).*## ' $(firstword $(MAKEFILE_LIST)) | \
	  awk -F':.*## ' '{ sub(/%/, "<stage>", $$1); printf "  %-26s %s\n", $$1, $$2 }'
	@echo
	@echo "variables:"
	@awk '/^## [A-Z_]+: / { v = $$2; sub(/:$$/, "", v); d = $$0; sub(/^## [A-Z_]+: /, "", d); doc[v] = d; \
	                         order[++n] = v; next } \
	     /^[A-Z_]+ *[?:]?=/ { split($$0, kv, / *[?:]?= */); if (kv[1] in doc) def[kv[1]] = kv[2] } \
	     END { for (i = 1; i <= n; i++) { v = order[i]; \
	           printf "  %-26s %s\n", v (def[v] == "" ? "" : "=" def[v]), doc[v] } }' $(firstword $(MAKEFILE_LIST))

$(FMNIST):
	$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist

data/demo-fmnist/sample_submission.csv: | $(STAMP) $(FMNIST)
	$(DISTIL) demo-data --out data/demo-fmnist

demo-data: data/demo-fmnist/sample_submission.csv  ## build the Fashion-MNIST demo set in data/demo-fmnist

# the demo config needs the demo data; other configs point at their own data
DATA_DEP := $(if $(filter demo,$(NAME)),data/demo-fmnist/sample_submission.csv,)

# Every stage target calls distil, which decides: a stage finished with the same config and the same
# inputs (images, teacher) is reused; one whose inputs changed is refused with the command that re-runs it.
teacher: | $(STAMP) $(DATA_DEP)  ## fine-tune the teacher (runs/<name>/teacher)
	$(DISTIL) teacher --config $(CONFIG) $(FORCED) $(ARGS) $(UPLOAD)
cache: teacher  ## the teacher's outputs on the recorded views (runs/<name>/cache)
	$(DISTIL) cache --config $(CONFIG) $(FORCED) $(ARGS) $(UPLOAD)
student: cache  ## distil the budgeted student (runs/<name>/student)
	$(DISTIL) student --config $(CONFIG) $(FORCED) $(ARGS) $(UPLOAD)
submit: student  ## predict the test images: submissions/<name>.csv (KAGGLE=1 uploads it)
	$(DISTIL) submit --config $(CONFIG) $(ARGS) $(UPLOAD)
report: | $(STAMP)  ## runs/<name>/report.html: curves, confusion matrices, mistakes
	$(DISTIL) $@ --config $(CONFIG) $(ARGS)
params: | $(STAMP)  ## every student's parameter count against the budget (exit 2 if over)
	$(DISTIL) $@ --config $(CONFIG) $(ARGS)
export: | $(STAMP)  ## the student as ONNX (+ int8) with a parity check
	$(DISTIL) $@ --config $(CONFIG) $(ARGS)

# the folders a stage writes under runs/<name>/; clean-<folder> also takes any folder the run has (student.dir)
CLEAN_STAGES := teacher cache student submit report
clean-%:  ## delete one stage's folder of the run: clean-teacher, clean-cache, clean-student, ...
	@if [ -z "$(filter $*,$(CLEAN_STAGES))" ] && [ ! -d "$(RUN)/$*" ]; then \
	  echo "make: no target clean-$*: neither a stage nor a folder of $(RUN). Valid:" \
	       "$(addprefix clean-,$(CLEAN_STAGES)) clean-run" \
	       "$$(ls -d $(RUN)/*/ 2>/dev/null | xargs -r -n1 basename | grep -v -x -e _pixels $(addprefix -e ,$(CLEAN_STAGES)) | sed 's/^/clean-/' | tr '\n' ' ')" >&2; \
	  exit 2; fi
	rm -rf $(RUN)/$*

test: $(STAMP)  ## the test suite on two cores, without the slow end-to-end tests (make test-slow)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP)  ## the slow end-to-end tests: make-driven runs, the wheel, DDP processes, signals (CI runs both)
	$(PY) -m pytest -q -n 2 -m slow

benchmarks: $(STAMP)  ## the methods and recipe benchmarks on food10-mini (hours on a CPU)
	$(PY) benchmarks/methods.py --data ../shared/datasets/food10-mini
	$(PY) benchmarks/recipe.py --data ../shared/datasets/food10-mini

# the tutorials' experiments beside their published numbers (configs/seeds/): hours on a 2-core CPU
mnist-data: | $(STAMP)  ## MNIST's IDX files as class folders in data/mnist
	$(DISTIL) idx-data --source ../shared/datasets/mnist --out data/mnist

seeds: mnist-data  ## the tutorials' experiments beside their published numbers
	$(PY) benchmarks/seeds.py

clean-run:  ## delete the whole run (runs/<name>/) and its submission
	rm -rf $(RUN) submissions/$(NAME).csv

# Food-11 for HW13 from Kaggle (needs credentials and network): data/food11, with or without the archive's
# top-level Food-11/ folder (distil follows a data folder that holds a single folder with the layout inside)
FOOD11 := data/food11
food11-data: | $(STAMP)  ## download HW13's Food-11 from Kaggle into data/food11 (credentials needed)
	mkdir -p $(FOOD11)
	$(VENV)/bin/kaggle competitions download -c ml2023spring-hw13 -p $(FOOD11)
	@$(MAKE) --no-print-directory food11-unpack

food11-unpack:  ## unpack the archive(s) that food11-data downloaded into data/food11
	cd $(FOOD11) && unzip -q -o '*.zip' && rm -f *.zip
	@ls $(FOOD11)
