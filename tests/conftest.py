"""
Shared fixtures for the tcbridge tests.

Unit tests (C{tests/unit}, whose conftest refuses sockets, processes and
sleeping) use task.Clock and treq.testing.StubTreq and never the global
reactor; integration tests (C{tests/integration}) use pytest-twisted's real
reactor (L{tests.helpers.real_reactor}).  Shared helpers: L{tests.helpers}
(Deferred results, terminals), L{tests.helpers_tc} (the ThreatConnect fake),
L{tests.helpers_config} (configs by flat option names), L{tests.helpers_tls},
L{tests.cbmock} (a Carbon Black server).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

#: Verbatim copies of the example files users of the 2015 bridge and the v2
#: connector have (shared/reference/configs).
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str], str]:
    """
    Write a text file under the test's temporary folder; return its path.
    """

    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
