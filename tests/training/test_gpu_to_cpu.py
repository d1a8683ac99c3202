"""A model trained on a GPU machine is served on a CPU one (README: "Serving a model trained on a
GPU on a CPU machine"). There is no GPU here: the checkpoint's storages are tagged `cuda:0` through
torch.serialization's public `register_package` tagger hook, which writes exactly the location
string a CUDA tensor gets, so loading it without `map_location` fails as on a CPU-only machine."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.serialization

from recforge.data.interactions import InteractionData
from recforge.training.device import resolve_device
from recforge.training.recommender import Recommender

N_USERS, N_ITEMS = 20, 15


def _train() -> InteractionData:
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(N_USERS), 4)
    i = ((u % 3) * 5 + rng.integers(0, 5, size=len(u))) % N_ITEMS
    frame = pd.DataFrame({"user_idx": u, "item_idx": i, "value": 1.0, "timestamp": np.arange(len(u))})
    return InteractionData.from_frame(frame.drop_duplicates(["user_idx", "item_idx"]), N_USERS, N_ITEMS)


def _locations(path: Path) -> list[str]:
    """The device tag of every storage in a checkpoint, read without restoring to it."""
    seen: list[str] = []
    torch.load(path, weights_only=True, map_location=lambda storage, location: seen.append(location) or storage)
    return seen


def _save_as_if_on_cuda(state: dict, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`torch.save(state)` with every storage tagged `cuda:0`, as a GPU machine writes it."""
    monkeypatch.setattr(torch.serialization, "_package_registry", list(torch.serialization._package_registry))
    torch.serialization.register_package(0, lambda storage: "cuda:0", lambda storage, location: None)
    torch.save(state, path)
    monkeypatch.undo()


@pytest.fixture(scope="module")
def trained() -> Recommender:
    rec = Recommender("bpr", {"dim": 8}, {"epochs": 2, "batch_size": 32, "device": "auto"})
    rec.fit(_train())
    return rec


def test_device_auto_trains_on_cpu_here_and_saves_cpu_tensors(trained, tmp_path):
    assert resolve_device("auto") == torch.device("cpu") or torch.cuda.is_available()
    trained.save(tmp_path / "bpr")
    locations = _locations(tmp_path / "bpr" / "model.pt")
    assert locations and set(locations) == {"cpu"}
    # Recommender.save moves to CPU itself: the same on a GPU machine
    state = torch.load(tmp_path / "bpr" / "model.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))


def test_a_cuda_tagged_checkpoint_loads_and_recommends_identically_on_cpu(trained, tmp_path, monkeypatch):
    folder = tmp_path / "bpr"
    trained.save(folder)
    state = torch.load(folder / "model.pt", weights_only=True)
    _save_as_if_on_cuda(state, folder / "model.pt", monkeypatch)
    with zipfile.ZipFile(folder / "model.pt") as archive:
        pickle = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"cuda:0" in pickle and b"'cpu'" not in pickle
    assert set(_locations(folder / "model.pt")) == {"cuda:0"}
    if not torch.cuda.is_available():  # what a CPU machine says without map_location
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(folder / "model.pt", weights_only=True)

    loaded = Recommender.load(folder, map_location="cpu")
    assert all(p.device.type == "cpu" for p in loaded.network.state_dict().values())
    users = np.arange(N_USERS)
    for a, b in zip(trained.recommend(users, k=5), loaded.recommend(users, k=5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(trained.similar_items(np.arange(N_ITEMS), k=3)[0],
                                  loaded.similar_items(np.arange(N_ITEMS), k=3)[0])  # fmt: skip


def test_load_refuses_pickled_objects(trained, tmp_path):
    """weights_only=True: a checkpoint holding an arbitrary object is not unpickled."""
    folder = tmp_path / "bpr"
    trained.save(folder)
    torch.save({"evil": _Evil()}, folder / "model.pt")
    with pytest.raises(Exception, match="weights_only|Unsupported global"):
        Recommender.load(folder, map_location="cpu")


class _Evil:
    pass
