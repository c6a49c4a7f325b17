"""Ray worker pieces that need no Ray: a worker refuses a model that would answer differently."""

from __future__ import annotations

import pytest

from fracseg.errors import FracsegError
from fracseg.inference import Predictor
from fracseg.inference.ray_batch import InferenceWorker, RayOptions, predict_on_ray


def test_worker_refuses_other_model_settings(tmp_path) -> None:
    kwargs = {"weights": None, "precision": "fp32"}  # an untrained generator: no weights file needed
    settings = {**Predictor(**kwargs).settings(), "dicom_seg": False}
    worker = InferenceWorker(kwargs, str(tmp_path), settings)  # the driver's settings: accepted
    assert worker.describe()["threads"] >= 1
    with pytest.raises(FracsegError, match=r"model settings differ \(\['threshold'\]\)"):
        InferenceWorker(kwargs, str(tmp_path), {**settings, "threshold": settings["threshold"] + 0.1})


def test_nothing_to_do_starts_no_ray(tmp_path) -> None:
    assert predict_on_ray([], tmp_path, {}, RayOptions(address="127.0.0.1:1")) == {}
