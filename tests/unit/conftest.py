"""The unit tier: no database, no CLI. ``deploy``: a program under Pulumi's mocks (tests.helpers.mocks)."""
import pytest

from tests.helpers.mocks import deploy_fixture

deploy = pytest.fixture(deploy_fixture)
