"""
The feed bytes do not change: every golden recipe (L{tests.golden}) run
through the real programs gives the feed recorded before the performance
work, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden import GOLDEN, RECIPES, Recipe, digest, produce


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_golden_feed(recipe: Recipe, tmp_path: Path) -> None:
    """
    The same simulator data, configuration and history give the same feed
    bytes as the recorded golden feed.
    """
    expected = json.loads(GOLDEN.read_text())[recipe.name]
    assert digest(produce(recipe, tmp_path)) == expected
