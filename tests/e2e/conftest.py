"""The end-to-end tier: every test here drives the real Pulumi CLI (marked e2e, left out of make test-fast)."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
