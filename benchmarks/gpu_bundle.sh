#!/usr/bin/env bash
# What the lent GPU machine lacks to run `cnnsearch run`, as one xz archive small enough to travel with a call:
# Ray with Tune, Optuna, MLflow's client with its sqlite store (mlflow-skinny: the full mlflow adds the web UI and
# its server), pydantic, and what they import at run time, at the versions constraints.txt pins, as manylinux
# x86-64 wheels for one CPython. Nothing that benchmarks/gpu_packages.txt lists is carried, and cnnsearch itself
# travels with the work tree. Parts of Ray that a study never imports are stripped (see STRIPPED below).
#
# Usage: benchmarks/gpu_bundle.sh [PYTHON_VERSION [ARCHIVE]]   (default: 3.12, .bundle/deps-py3.12.tar.xz;
#        a relative ARCHIVE is under the repository's root)
# There: mkdir -p /tmp/site && tar -xJf .bundle/deps-py3.12.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
# Needs a package index here (PyPI); PYTHON names the interpreter whose pip resolves and downloads (default python3),
# XZ_LEVEL the compression (default 9: its 64 MiB window finds the code that Ray's three binaries share).
# Fails when the archive is over 60 MiB, or when the pinned versions need a package that neither list below names.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${1:-3.12}"
ARCHIVE="${2:-.bundle/deps-py$PY.tar.xz}"
PYTHON="${PYTHON:-python3}"
LIMIT_MIB=60  # 64 MiB travel with a call, the work tree included

# Imported by `cnnsearch run` (its driver, Ray's own processes and the trials) and missing on the GPU machine.
CARRY=(
    ray optuna mlflow-skinny pydantic
    pydantic-core annotated-types typing-inspection                  # pydantic's
    sqlalchemy alembic mako colorlog                                  # Optuna's; MLflow's sqlite store
    jsonschema jsonschema-specifications referencing rpds-py          # Ray's runtime environments
    cachetools sqlparse importlib-metadata fastapi starlette          # `import mlflow` imports them all
    opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
    databricks-sdk  # its namespace package: `import mlflow` asks find_spec("databricks.agents"), which needs it
    cryptography cffi  # MLflow's model registry tables, created in every sqlite store, import cryptography.fernet
)
# Required by those, never imported by `cnnsearch run`: left behind.
LEFT_OUT=(
    gitpython gitdb smmap              # MLflow's git tags of a fluent run; cnnsearch writes through MlflowClient
    python-dotenv uvicorn python-multipart  # the mlflow command and its server
    google-auth pyasn1 pyasn1-modules  # databricks-sdk's Google Cloud login
    pycparser                          # cffi's parser of C declarations; cryptography's bindings come compiled
    tzdata                             # time zones for systems without their own
    tensorboardx                       # Tune's TensorBoard logger: off, and with --verbose Tune warns once instead
)
# Never imported by a study: Ray's RLlib, Serve, LLM serving, Java workers and dashboard web client; tests, examples.
STRIPPED=(bin ray/rllib ray/serve ray/llm ray/jars ray/dashboard/client)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PIP=("$PYTHON" -m pip --disable-pip-version-check)
WHEELS=(--only-binary=:all: --python-version "$PY" --implementation cp
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)

# The versions: what pip's resolver makes of the pins, for the target Python (a dry run: nothing is installed).
MLFLOW="$(sed -n 's/^mlflow==//p' constraints.txt)"
"${PIP[@]}" install --quiet --dry-run --ignore-installed --target "$WORK/resolved" --report "$WORK/report.json" \
    "${WHEELS[@]}" -c constraints.txt "ray[tune]" optuna "mlflow-skinny==$MLFLOW" pydantic
"$PYTHON" - "$WORK/report.json" benchmarks/gpu_packages.txt "${CARRY[*]}" "${LEFT_OUT[*]}" > "$WORK/pins.txt" <<'EOF'
import json, re, sys
report, listed, carry, left_out = sys.argv[1:]
name = lambda text: re.sub(r"[-_.]+", "-", text).lower()
there = {name(line) for line in open(listed).read().splitlines() if line.strip() and not line.startswith("#")}
carry, left_out = set(carry.split()), set(left_out.split())
needed = {name(item["metadata"]["name"]): item["metadata"]["version"] for item in json.load(open(report))["install"]}
for unknown in sorted(set(needed) - carry - left_out - there):
    sys.exit(f"gpu_bundle.sh: the pins need {unknown} {needed[unknown]}; add it to CARRY or LEFT_OUT")
for stale in sorted(carry - set(needed)):
    sys.exit(f"gpu_bundle.sh: CARRY names {stale}, which the pins no longer need: take it out")
for stale in sorted(carry & there):
    sys.exit(f"gpu_bundle.sh: CARRY names {stale}, which the GPU machine has: take it out")
print("\n".join(f"{package}=={needed[package]}" for package in sorted(carry)))
EOF

"${PIP[@]}" install --quiet --no-deps --no-compile --target "$WORK/site" "${WHEELS[@]}" -r "$WORK/pins.txt"
(cd "$WORK/site" && rm -rf "${STRIPPED[@]}" \
    && find . -depth -type d \( -name tests -o -name examples -o -name __pycache__ \) -exec rm -rf {} + \
    && find . -name '*.pyc' -delete)
{ echo "# cnnsearch's GPU bundle for CPython $PY (benchmarks/gpu_bundle.sh): carried"; cat "$WORK/pins.txt"
  echo "# left behind: ${LEFT_OUT[*]}"
  echo "# stripped: ${STRIPPED[*]}, tests/, examples/"; } > "$WORK/site/gpu-bundle.txt"

mkdir -p "$(dirname "$ARCHIVE")"
tar -C "$WORK/site" --sort=name --owner=0 --group=0 --numeric-owner -cf - . \
    | xz -"${XZ_LEVEL:-9}" -T0 > "$ARCHIVE.partial"
mv "$ARCHIVE.partial" "$ARCHIVE"
size=$(stat -c %s "$ARCHIVE")
echo "$ARCHIVE: $(awk -v b="$size" 'BEGIN {printf "%.1f", b / 1048576}') MiB," \
     "$(du -sm "$WORK/site" | cut -f1) MiB unpacked; $(wc -l < "$WORK/pins.txt") packages for CPython $PY"
if (( size > LIMIT_MIB * 1048576 )); then
    echo "gpu_bundle.sh: $ARCHIVE is over $LIMIT_MIB MiB" >&2
    exit 1
fi
