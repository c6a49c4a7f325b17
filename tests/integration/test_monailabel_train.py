"""MONAI Label's own bundle train task (monailabel 0.8.5 ``BundleTrainTask``) fine-tunes this bundle.

The task overrides ``bundle_root``, ``device``, ``train#trainer#max_epochs``, ``train#dataset#data``,
``validate#dataset#data`` and ``train#handlers`` (adding a ``CheckpointLoader`` when a model exists) and
calls ``monai.bundle.run``: the same path a MONAI Label server takes when 3D Slicer/OHIF asks it to train.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fracseg.networks import build_generator

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TINY = [8, 16, 32, 64, 128]


class _Datastore:
    """The one method BundleTrainTask uses: ``datalist()`` of ``{"image", "label"}`` items."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def datalist(self) -> list[dict]:
        return self.items


def test_monailabel_bundle_train_task_runs_and_fine_tunes(tmp_path, prepared_shared) -> None:
    from monailabel.tasks.train.bundle import BundleTrainTask

    bundle = tmp_path / "fracseg_bundle"
    shutil.copytree(REPO / "bundle", bundle, ignore=shutil.ignore_patterns("runs", "model.pt"))
    entries = json.loads((prepared_shared / "datalist.json").read_text())["validation"][:8]
    store = _Datastore([{"image": e["image"], "label": e["label"]} for e in entries])

    class FracsegTrainTask(BundleTrainTask):
        def _update_overrides(self, overrides):  # what the fracseg MONAI Label app sets
            overrides.update(
                prepare_dataset=False,  # the datastore gives train#dataset#data
                resume=False,  # every request fine-tunes from model.pt, not from the last run's trainer state
                generator_channels=TINY,
                discriminator_channels=8,
                spatial_size=64,
                patch_size=[64, 64],
                num_workers=0,
                batch_size=4,
                warmup_epochs=0,
                ramp_epochs=1,
            )
            return overrides

    task = FracsegTrainTask(str(bundle), {})
    assert task.is_valid()
    request = {"model": "fracseg", "max_epochs": 1, "val_split": 0.25, "device": "cpu", "multi_gpu": False}
    task(request, store)
    model = bundle / "models" / "model.pt"
    state = torch.load(model, map_location="cpu", weights_only=True)
    # The best-metric saver holds one object, so Ignite stores its bare state dict (MONAI's
    # CheckpointLoader and fracseg's Predictor accept both that and {"model": ...}).
    build_generator(channels=TINY).load_state_dict(state.get("model", state))
    first = model.read_bytes()

    # Second round: the task finds model.pt and adds its CheckpointLoader (pretrained fine-tuning).
    task = FracsegTrainTask(str(bundle), {})
    task({**request, "max_epochs": 2}, store)
    assert model.read_bytes() != first
    assert (bundle / "runs" / "checkpoints").is_dir()
