"""Fixtures for the data tests: where the shared real data (SciFact, Cranfield) lives."""

import pytest

from tests.fixtures import shared_data as _shared_data


@pytest.fixture(scope="session")
def shared_data():
    """Return a function ``(relative path) -> Path`` that skips the test if it is missing.

    The skip reason starts with ``needs shared data:``, the only skip CI allows here.
    """
    return _shared_data
