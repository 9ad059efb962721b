"""Child processes that vmtest owns together with everything they start.

make forks sub-makes and compilers; a plain subprocess.run() kills only make itself when
vmtest is interrupted or terminated, and the rest runs on as orphans. run_group() starts
the child in a session of its own and, if vmtest is stopped while it runs, stops that
whole process group (SIGTERM, then SIGKILL) before passing the interruption on.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

GRACE_S = 5.0


def stop_group(proc: subprocess.Popen[Any], grace_s: float = GRACE_S) -> None:
    """Stop proc's process group (proc leads it: started with start_new_session)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            # The leader is gone; members may still be finishing their SIGTERM.
            if sig is signal.SIGTERM:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        except subprocess.TimeoutExpired:
            continue


def run_group(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(argv, **kwargs) in a new session; its group dies with us."""
    check = kwargs.pop("check", False)
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate()
    except BaseException:
        stop_group(proc)
        raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
