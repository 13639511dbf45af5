"""What every test shares."""

import pytest

import model


@pytest.fixture(autouse=True)
def precision_unset(monkeypatch):
    """set_precision holds for the rest of a script's run; so that a test that runs a script's
    command line (which sets it) does not change the next, each test starts with it unset:
    fp32 on a CPU, where the fast-vs-slow checks are exact."""
    monkeypatch.setattr(model, "PRECISION", {})
