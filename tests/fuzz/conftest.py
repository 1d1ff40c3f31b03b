"""Hypothesis keeps its caches with the other local tool state, not in the repository root
(where pytest's `norecursedirs` would have to know about a `.hypothesis` folder)."""

from __future__ import annotations

from hypothesis.configuration import set_hypothesis_home_dir

from giftmarket_local.stack import REPO_ROOT

set_hypothesis_home_dir(REPO_ROOT / ".local" / "hypothesis")
