#!/bin/bash
# Prints the Python that vmtest is installed in: $PYTHON if set, else the active virtual
# environment, else vmtest's own (made by setup-host.sh), else python3.
VMTEST_VENV=${VMTEST_VENV:-$HOME/.local/share/vmtest/venv}
if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    echo "$VIRTUAL_ENV/bin/python3"
elif [ -x "$VMTEST_VENV/bin/python3" ]; then
    echo "$VMTEST_VENV/bin/python3"
else
    echo python3
fi
