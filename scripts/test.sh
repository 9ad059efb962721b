#!/bin/bash
# The test command of the README: fast unit tests, then the integration tier (builds
# the default kernel if it is not cached, boots real QEMU guests under TCG/KVM).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=$(bash scripts/python.sh)
"$PYTHON" -m pytest -q tests/unit
"$PYTHON" -m pytest -q -m integration tests/integration "$@"
