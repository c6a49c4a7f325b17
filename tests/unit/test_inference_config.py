"""One assembly: the Predictor's parts are the bundle's inference.json components, its arguments overrides."""

from __future__ import annotations

import json

import pytest
from monai.transforms import Compose

from fracseg.inference.bundle import DEFAULT_BUNDLE, INFERENCE_CONFIG, inference_config
from fracseg.inference.decision import DecisionRule
from fracseg.inference.inferer import GuidedInferer
from fracseg.inference.predictor import Predictor, split_preprocessing
from fracseg.inference.transforms import FractureDecisiond
from fracseg.transforms import letterbox_transforms, loading_transforms, preprocessing_transforms

RAW = json.loads((DEFAULT_BUNDLE / INFERENCE_CONFIG).read_text())


def test_the_config_builds_one_rule_that_the_post_processing_applies() -> None:
    parser = inference_config()
    rule = parser.get_parsed_content("decision_rule")
    assert rule == DecisionRule.from_config(RAW["decision_rule"])
    assert not set(rule.to_dict()) & set(RAW)  # its values live in it, not in loose top-level keys
    deciders = [
        t for t in parser.get_parsed_content("postprocessing").transforms if isinstance(t, FractureDecisiond)
    ]
    assert len(deciders) == 1 and deciders[0].rule is rule
    assert parser.get_parsed_content("inferer").rule is rule  # the inferer's fp32 re-check uses the same one


def test_predictor_parts_are_the_configs_and_arguments_override_it() -> None:
    predictor = Predictor(weights=None)
    parser = inference_config()
    assert predictor.rule == parser.get_parsed_content("decision_rule")
    assert isinstance(predictor.inferer, GuidedInferer)
    assert predictor.inferer.precision == parser.get_parsed_content("inferer").precision == RAW["precision"]
    assert predictor.spatial_size == RAW["spatial_size"] and predictor.mirror is RAW["mirror"]
    changed = Predictor(weights=None, threshold=0.33, mirror=False, precision="bf16")
    assert changed.rule.threshold == 0.33
    assert changed.mirror is False and changed.precision.name == "bf16"
    rule = DecisionRule(threshold=0.4, score_threshold=0.1, score_top_pixels=16)
    own = Predictor(weights=None, rule=rule, threshold=0.9)  # the whole rule wins over threshold
    assert own.rule == rule
    assert own.inferer.score_threshold == 0.1 and own.inferer.score_top_pixels == 16


def test_preprocessing_must_start_by_loading() -> None:
    load, letterbox = split_preprocessing(Compose([*loading_transforms(), *letterbox_transforms()]))
    assert len(load.transforms) == 2 and len(letterbox.transforms) == 3
    with pytest.raises(ValueError, match="must start with"):
        split_preprocessing(Compose(letterbox_transforms()))
    # the bundle's copy of the displayed-size X-ray (its overlay's background) belongs to loading
    shipped = inference_config().get_parsed_content("preprocessing")
    load, letterbox = split_preprocessing(shipped)
    assert len(load.transforms) == 3 and len(letterbox.transforms) == 3
    assert Compose(preprocessing_transforms(keep_original="original")).transforms[2].names == ("original",)


def test_an_app_copy_of_an_older_config_still_builds_its_inferer() -> None:
    """A MONAI Label app keeps its bundle copy when its weights were fine-tuned; configs before 0.10.3 give
    the inferer the rule's thresholds as loose arguments (and the image head's, now ignored): the same fp32
    re-check results; a rule of 0.10.x with the head's settings builds without them."""
    old = GuidedInferer(
        score_threshold=0.07, score_top_pixels=256, image_head_threshold=0.42, fp32_margin=0.02
    )
    rule = DecisionRule(score_threshold=0.07, score_top_pixels=256, image_head_threshold=0.42)
    assert rule == DecisionRule(score_threshold=0.07, score_top_pixels=256)
    assert DecisionRule.from_config({"score_threshold": 0.07, "head_decides": True}).score_threshold == 0.07
    assert old.recheck == GuidedInferer(rule=rule, fp32_margin=0.02).recheck
    with pytest.raises(TypeError, match="unexpected arguments"):
        GuidedInferer(rule=rule, score_threshold=0.1)
    with pytest.raises(TypeError, match="unexpected arguments"):
        GuidedInferer(thresold=0.1)
