"""Marks the GGUF export tests of the families in SLOW_EXPORT as slow (run with --run-slow)."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before tests/conftest.py turns "slow" into a skip
def pytest_collection_modifyitems(config, items):
    from tests.families.test_family_matrix import EXPORT_TESTS, SLOW_EXPORT

    for item in items:
        callspec = getattr(item, "callspec", None)
        family = callspec.params.get("kit") if callspec else None
        if family in SLOW_EXPORT and item.originalname in EXPORT_TESTS:
            item.add_marker(pytest.mark.slow(reason=SLOW_EXPORT[family]))


@pytest.fixture(scope="session")
def gotemplate():
    """The built tests/gotemplate helper (tests/families/golang.py); fails when Go cannot be had."""
    from tests.families.golang import GoError, build_helper

    try:
        return build_helper()
    except GoError as err:
        pytest.fail(f"Go's text/template helper could not be built: {err}")
