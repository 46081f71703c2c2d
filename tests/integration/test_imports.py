"""
Write mode imports only what write mode needs: starting the console
command loads neither numpy (loaded when a build needs it, after the pull)
nor Klein and the web pages (the daemon's).
"""

from __future__ import annotations

import subprocess
import sys


def test_the_console_command_starts_without_numpy_or_the_web() -> None:
    probe = (
        "import sys, tcbridge.cli\n"
        "print(' '.join(m for m in ('numpy', 'klein', 'tcbridge.web.app') if m in sys.modules))"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""
