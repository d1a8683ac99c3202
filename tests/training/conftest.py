"""Fixtures of the training tests; the toy model and data live in `training_toys.py`."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch
from training_toys import toy_csr


@pytest.fixture(autouse=True)
def _one_thread():
    # the test machine's cores are shared; one thread also keeps CPU results easy to reason about
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def csr() -> sp.csr_matrix:
    return toy_csr()
