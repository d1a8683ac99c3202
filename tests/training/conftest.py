"""Fixtures of the training tests; the toy model and data live in `training_toys.py`."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
from training_toys import toy_csr


@pytest.fixture
def csr() -> sp.csr_matrix:
    return toy_csr()
