"""Export a trained generator as the bundle's release ``model.pt`` and record where it came from.

Reads the best-metric checkpoint a training run wrote (``<ckpt_dir>/model.pt``: a bare state dict or
``{"model": ...}``), checks that it loads into the generator the bundle's ``inference.json`` defines,
and writes ``{"model": state_dict}`` (optionally fp16; inference casts back to fp32) atomically, loadable
with ``torch.load(..., weights_only=True)``. Prints size and sha256::

    python scripts/export_model.py runs/release_cpu/models/model.pt bundle/models/model.pt

Several sources (e.g. the epoch checkpoints of the end of a run) are averaged weight by weight before
export ("checkpoint averaging": epochs of one run, late in its cosine schedule, lie in one basin, and their
mean often generalises better than any of them; the generator has instance norm, so no running statistics
need recomputing)::

    python scripts/export_model.py runs/x/checkpoints/checkpoint_epoch={24,26,28}.pt bundle/models/model.pt
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fracseg.inference.bundle import inference_config  # noqa: E402
from fracseg.io import atomic_path  # noqa: E402
from fracseg.networks import load_generator_state  # noqa: E402


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Weight-by-weight mean of generator state dicts with the same keys (integer tensors: the first's)."""
    first = states[0]
    for other in states[1:]:
        if other.keys() != first.keys():
            raise ValueError("checkpoints to average hold different networks (state dict keys differ)")
    return {
        key: torch.stack([s[key] for s in states]).mean(0) if value.is_floating_point() else value
        for key, value in first.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source", nargs="+", help="checkpoint(s) written by training (best model; several: their mean)"
    )
    parser.add_argument("target", help="release file, e.g. bundle/models/model.pt")
    parser.add_argument("--bundle", default=str(REPO / "bundle"))
    parser.add_argument("--fp16", action="store_true", help="store half precision (half the size)")
    args = parser.parse_args()
    state = average_states([load_generator_state(source) for source in args.source])
    network = inference_config(args.bundle).get_parsed_content("network_def")
    network.load_state_dict(state)  # fails loudly when inference.json describes another network
    out = {k: (v.half() if args.fp16 and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    with atomic_path(args.target) as tmp:
        torch.save({"model": out}, tmp)
    data = Path(args.target).read_bytes()
    torch.load(args.target, map_location="cpu", weights_only=True)
    params = sum(v.numel() for v in state.values())
    print(
        f"{args.target}: {len(data) / 1e6:.2f} MB, {params / 1e6:.2f} M parameters, "
        f"sha256 {hashlib.sha256(data).hexdigest()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
