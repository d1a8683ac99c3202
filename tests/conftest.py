"""Fixtures every test shares."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The test machine's two cores are shared; small models on two OpenMP threads crawl while
    # they wait for each other, and one thread keeps CPU results easy to reason about. Session
    # scope: module-scoped fixtures that train models run under it too.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
