"""Fixtures for the data tests: where the shared real data lives, skipping when absent."""

import os
import pathlib

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[2]


def shared_data_dir() -> pathlib.Path:
    """``$JAXIR_SHARED_DATA`` or ``<repo>/../shared/data``."""
    return pathlib.Path(os.environ.get("JAXIR_SHARED_DATA", _REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Return a function ``(relative path) -> Path`` that skips the test if it is missing."""

    def get(relative: str) -> pathlib.Path:
        path = shared_data_dir() / relative
        if not path.exists():
            pytest.skip(f"shared data not found: {path} (set JAXIR_SHARED_DATA)")
        return path

    return get
