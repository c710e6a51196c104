#!/usr/bin/env bash
# Issue 19 on a rented GPU machine, run from the repository root: benchmarks/gpu.py with its log.
#
# Carried with the working tree: .whl/ (pydantic and its dependencies, as wheels; torch,
# torchvision, pyyaml, numpy, pillow are installed there) and .data/train.tar.gz (the
# CIFAR-10 training images as JPEG folders in ImageFolder layout, tarred). Writes $OUT/gpu.json and
# $OUT/gpu.log. Extra arguments go to gpu.py, e.g. --quick.
#
# Usage: bash benchmarks/gpu_run.sh [--quick]
# Back here: python benchmarks/gpu.py --render PATH/gpu.json   (BENCHMARKS.md and benchmarks/results/gpu.json)
set -euo pipefail

OUT="${OUT:-/tmp/gpu-out}"
mkdir -p "$OUT"
echo "[$(date +%T)] gpu_run.sh: $(nproc) cores, $(python3 --version 2>&1)" | tee -a "$OUT/gpu.log"

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD"

if [ ! -d /tmp/cifar/train ]; then
    mkdir -p /tmp/cifar
    tar -xzf .data/train.tar.gz -C /tmp/cifar
fi
echo "[$(date +%T)] gpu_run.sh: $(find /tmp/cifar/train -type f | wc -l) images in /tmp/cifar/train" | tee -a "$OUT/gpu.log"

export PYTHONUNBUFFERED=1
python3 benchmarks/gpu.py /tmp/cifar/train "$@" --out "$OUT/gpu.json" 2>&1 | tee -a "$OUT/gpu.log"
