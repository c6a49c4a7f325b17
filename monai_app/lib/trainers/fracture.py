"""``fracture`` training: fine-tune the GAN from the current weights on the labels annotators saved.

MONAI Label's ``BundleTrainTask`` runs the bundle's ``train.json`` (on CPU with the ``train_cpu.json``
overlay, the recipe of the shipped weights) on the datastore's ``final`` labels, starting from the
current ``models/model.pt`` of the app's bundle copy. The bundle's best-metric saver replaces that file
atomically; the infer tasks reload a model file whose modification time changed, so the next inference
uses the new weights without a restart. The shipped ``bundle/`` is never written to (the app works on
its own copy, :func:`lib.bundle_copy.copy_bundle`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import monai.bundle
from monai.data import partition_dataset
from monailabel.tasks.train.bundle import BundleTrainTask

from fracseg.inference.bundle import inference_config
from fracseg.io import file_sha256, write_json_atomic
from lib.errors import UNPROCESSABLE, RequestRejected

logger = logging.getLogger(__name__)

#: What the last finished run reports through ``/info`` (``train_stats``), beside the bundle copy.
STATS_FILE = "train_stats.json"


class Fracture(BundleTrainTask):
    """Fine-tune the bundle's generator (and critic) on ``final`` labels.

    Request keys (MONAI Label's): ``max_epochs``, ``val_split`` (at least one image is validated; with a
    single label it is trained and validated on), ``device``, ``pretrained`` (default true).

    Args:
        path: the app's bundle copy.
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, load_strict=True)
        self.description = "Fine-tune the fracture generator on the final labels"

    def config(self) -> dict[str, Any]:
        options = super().config()
        options.update(max_epochs=10, val_split=0.2, multi_gpu=False)
        return options

    def stats(self) -> dict[str, Any]:
        path = Path(self.bundle_path) / STATS_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _partition_datalist(self, datalist: list[dict], request: dict, shuffle: bool = False) -> tuple:
        if not datalist:
            raise RequestRejected(UNPROCESSABLE, "train: no image has a 'final' label yet")
        if len(datalist) == 1:
            logger.info("one final label: trained and validated on the same image")
            return datalist, datalist
        split = float(request.get("val_split", 0.2))
        val_count = min(len(datalist) - 1, max(1, round(len(datalist) * split)))
        train, val = partition_dataset(
            datalist, ratios=[len(datalist) - val_count, val_count], shuffle=shuffle, seed=0
        )
        return train, val

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # The network must stay the one inference.json builds, so the fine-tuned weights load there.
        net = inference_config(self.bundle_path)
        overrides.update(
            prepare_dataset=False,  # the datastore gives train#dataset#data and validate#dataset#data
            resume=False,  # every request fine-tunes from model.pt, not from an earlier run's trainer state
            epochs=overrides[self.const.key_train_trainer_max_epochs()],
            generator_channels=net.get_parsed_content("generator_channels"),
            generator_strides=net.get_parsed_content("generator_strides"),
            generator_res_units=net.get_parsed_content("generator_res_units"),
            spatial_size=net.get_parsed_content("spatial_size"),
            num_workers=0,
            val_interval=1,  # the best-metric saver writes model.pt after a validation: validate every epoch
        )
        return overrides

    def run_single_gpu(self, request: dict, overrides: dict[str, Any]) -> None:
        configs = [self.bundle_config_path]
        overlay = Path(self.bundle_path) / "configs" / "train_cpu.json"
        if str(overrides.get(self.const.key_device(), "cpu")).startswith("cpu") and overlay.is_file():
            configs.append(str(overlay))
        started = time.time()
        monai.bundle.run(
            run_id=request.get("run_id") or "run",
            init_id=None,
            final_id=None,
            meta_file=self.bundle_metadata_path,
            config_file=configs,
            **overrides,
        )
        model = Path(self.bundle_path) / "models" / self.const.model_pytorch()
        write_json_atomic(
            Path(self.bundle_path) / STATS_FILE,
            {
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "seconds": round(time.time() - started, 1),
                "max_epochs": overrides[self.const.key_train_trainer_max_epochs()],
                "train_images": len(overrides[self.const.key_train_dataset_data()]),
                "val_images": len(overrides.get(self.const.key_validate_dataset_data()) or []),
                "model_sha256": file_sha256(model) if model.is_file() else None,
            },
        )
