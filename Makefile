# distil: `make` runs the whole pipeline on the embedded default (Fashion-MNIST demo);
# `make test` runs the tests. Both create .venv on first use.
#   make teacher student submit CONFIG=configs/food10-mini.yaml
#   make submit KAGGLE=1 COMPETITION=ml2023spring-hw13
# Stages are file targets: a finished stage is not redone (unless its config file changed).

CONFIG ?= configs/demo.yaml
NAME   := $(basename $(notdir $(CONFIG)))
ARGS   ?=
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    := runs/$(NAME)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
UPLOAD := $(if $(filter 1 yes true,$(KAGGLE)),--upload,)
COMP   := $(if $(COMPETITION),submit.competition=$(COMPETITION),)

.PHONY: all setup test teacher cache student submit params demo-data clean-run benchmarks food11-data

all: submit
	@echo "submission: submissions/$(NAME).csv"
	@$(PY) -m distil compare $(RUN)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(FMNIST):
	$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist

data/demo-fmnist/sample_submission.csv: | $(STAMP) $(FMNIST)
	$(PY) -m distil demo-data --out data/demo-fmnist

demo-data: data/demo-fmnist/sample_submission.csv

# the demo config needs the demo data; other configs point at their own data
DATA_DEP := $(if $(filter demo,$(NAME)),data/demo-fmnist/sample_submission.csv,)

$(RUN)/teacher/done.json: $(CONFIG) $(DATA_DEP) | $(STAMP)
	$(PY) -m distil teacher --config $(CONFIG) $(ARGS)

$(RUN)/cache/done.json: $(RUN)/teacher/done.json
	$(PY) -m distil cache --config $(CONFIG) $(ARGS)

$(RUN)/student/done.json: $(RUN)/cache/done.json
	$(PY) -m distil student --config $(CONFIG) $(ARGS)

submissions/$(NAME).csv: $(RUN)/student/done.json
	$(PY) -m distil submit --config $(CONFIG) $(ARGS)

teacher: $(RUN)/teacher/done.json
cache: $(RUN)/cache/done.json
student: $(RUN)/student/done.json
submit: submissions/$(NAME).csv
	@if [ -n "$(UPLOAD)" ]; then $(PY) -m distil submit --config $(CONFIG) --upload $(COMP) $(ARGS); fi

params: | $(STAMP)
	$(PY) -m distil params --config $(CONFIG) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

benchmarks: $(STAMP)
	$(PY) benchmarks/methods.py --data ../shared/datasets/food10-mini
	$(PY) benchmarks/recipe.py --data ../shared/datasets/food10-mini

clean-run:
	rm -rf $(RUN) submissions/$(NAME).csv

# Food-11 for HW13 from Kaggle (needs credentials and network): data/food11
food11-data: | $(STAMP)
	mkdir -p data/food11
	$(VENV)/bin/kaggle competitions download -c ml2023spring-hw13 -p data/food11
	cd data/food11 && unzip -q -o '*.zip' && rm -f *.zip
	@ls data/food11
