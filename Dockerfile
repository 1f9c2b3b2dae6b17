# distil: the demo pipeline in a container (CPU). Build and run:
#   docker build -t distil .
#   docker run --rm -v "$PWD/submissions:/app/submissions" distil            # make (demo)
#   docker run --rm -v /data/food11:/data distil make CONFIG=configs/food11-hw13.yaml ARGS=data.root=/data
FROM python:3.11-slim-bookworm

# Debian stable's packages get security fixes under the same name: not pinned on purpose
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends make dataset-fashion-mnist libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY pipeline/ pipeline/
RUN python -m venv .venv \
 && .venv/bin/pip install --no-cache-dir -e '.[test]' \
 && touch .venv/.installed
COPY configs/ configs/
COPY tests/ tests/
COPY benchmarks/ benchmarks/
RUN mkdir -p submissions

CMD ["make"]
