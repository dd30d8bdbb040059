"""Reuse the hand-written BEIR dataset fixture of tests/data."""

from __future__ import annotations

from tests.data.conftest import beir_dir  # noqa: F401  (a pytest fixture)
