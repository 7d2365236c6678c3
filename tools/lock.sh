#!/usr/bin/env bash
# Regenerates requirements.lock, the exact set of packages `make demo` and `make test` install.
#
# Resolution is uv's universal mode (Python 3.10–3.12, Linux x86-64, from [tool.uv] in pyproject.toml)
# over the ranges in pyproject.toml with the extras the Make targets need. torch is the one exception:
# the project must use the CPU wheel torch==2.13.0+cpu, which is not on PyPI, so the resolver is told
# to leave torch out (lock-overrides.txt) and to lock the CPU wheel's own requirements instead
# (lock-torch-cpu.in); the torch line is then appended with the sha256 of the wheel pip finds.
# Needs the package index (run it by hand, never in CI): `make lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
TORCH=2.13.0
UV_VERSION=0.13.9
tool=.venv-lock
[ -x "$tool/bin/uv" ] || { "$PY" -m venv "$tool" && "$tool/bin/pip" install -q "uv==$UV_VERSION"; }
extras=(--extra dev --extra bench)
"$tool/bin/uv" pip compile pyproject.toml tools/lock-torch-cpu.in "${extras[@]}" \
  --universal --python-version 3.10 --override tools/lock-overrides.txt \
  --generate-hashes --no-header --custom-compile-command "make lock" -o requirements.lock.new
# The CPU wheel of torch, hashed from the file pip resolves torch==$TORCH to on this machine.
wheels=$(mktemp -d)
"$tool/bin/pip" download -q --no-deps --only-binary=:all: "torch==$TORCH" -d "$wheels" 2>/dev/null
wheel=$(ls "$wheels"/torch-*.whl)
case "$wheel" in
  *+cpu*) ;;
  *) echo "lock: torch==$TORCH resolved to $(basename "$wheel"), not the CPU wheel; refusing to lock a CUDA build" >&2; exit 1 ;;
esac
version=$(basename "$wheel" | cut -d- -f2)
hash=$(sha256sum "$wheel" | cut -d' ' -f1)
rm -rf "$wheels"
{
  echo "# requirements.lock: every package make demo / make test install, exact versions and hashes."
  echo "# Regenerate with: make lock (tools/lock.sh). Do not edit by hand."
  echo "# torch is the CPU wheel (cp311 here; on other Pythons install torch==$version from the CPU index)."
  echo "torch==$version \\"
  echo "    --hash=sha256:$hash"
  cat requirements.lock.new
} > requirements.lock
rm requirements.lock.new
echo "wrote requirements.lock ($(grep -c '^[A-Za-z0-9]' requirements.lock) packages)"
