"""The bundle's ``configs/inference.json``, parsed by MONAI's ``ConfigParser``: the one definition of
inference that ``fracseg infer``/``evaluate``, the MONAI Label app and ``python -m monai.bundle run`` share.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

#: The shipped bundle (repository root ``bundle/``).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundle"
#: The inference config, relative to a bundle folder.
INFERENCE_CONFIG = Path("configs") / "inference.json"


def inference_config(
    bundle: str | os.PathLike[str] = DEFAULT_BUNDLE, overrides: dict[str, Any] | None = None
) -> ConfigParser:
    """``<bundle>/configs/inference.json`` with ``bundle_root`` set to ``bundle`` and ``overrides`` applied
    (config ids, ``#`` for nested ones, as ``python -m monai.bundle run --<id> <value>`` takes them).

    Components are built on request: ``get_parsed_content("network_def")``, ``("preprocessing")``,
    ``("inferer")``, ``("decision_rule")``; each is built once per parser.
    """
    parser = ConfigParser()
    parser.read_config(os.fspath(Path(bundle) / INFERENCE_CONFIG))
    parser.update({"bundle_root": os.fspath(bundle), **(overrides or {})})
    return parser
