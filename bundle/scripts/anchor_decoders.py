"""Checkpoints of a ``DCFBNet`` with anchor decoders (``anchor_pet_emphasis``), assembled from checkpoints of
networks that share its encoders and blocks: the conditioned decoder of a base network, and for each anchor the
decoder of a network trained at that lambda (or the base's decoder, as a starting point for that training).

    cd bundle && python -m scripts.anchor_decoders --base models/model.pt \\
        --anchors "{0.3: 'runs/dec03/model.pt', 0.5: 'runs/dec05/model.pt', 0.7: None}" --output anchored.pt

Checkpoints written before the decoder was a module of its own (bundle 0.6.0 and older: ``deepest_film.*``,
``decoders.*``, ``head.*``, ... at the top level) are read as well.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

import torch

from .dcfb_net import _legacy_decoder_names

__all__ = ["decoder_state", "assemble"]


def _load(path: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, with the decoder's weights named as DCFBNet names them now (the network's own
    load-state-dict pre-hook renames those of bundle 0.6.0 and older)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = dict(state.get("model", state))
    _legacy_decoder_names(None, state, "")
    return state


def decoder_state(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The conditioned decoder's weights of a network's state dict, named as inside ``FusionDecoder``."""
    found = {k[len("decoder.") :]: v for k, v in state.items() if k.startswith("decoder.")}
    if not found:
        raise ValueError(f"{source}: no decoder weights")
    return found


def _shared_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoders and blocks: everything but the decoders."""
    return {k: v for k, v in state.items() if not k.startswith(("decoder.", "anchor_decoders."))}


def assemble(base: str, anchors: dict[float, str | None], output: str, atol: float = 0.0) -> str:
    """Write ``output``: ``base``'s encoders, blocks and conditioned decoder, and for each anchor lambda (ascending
    order) the decoder of ``anchors[lambda]`` (``None``: the base's decoder). An anchor checkpoint's encoders and
    blocks must equal the base's (within ``atol``): a decoder is only valid on the features it was trained on.
    """
    base_state = _load(base)
    shared = _shared_state(base_state)
    state = dict(shared)
    state.update({"decoder." + k: v for k, v in decoder_state(base_state, base).items()})
    for index, (_, path) in enumerate(sorted(anchors.items(), key=lambda item: float(item[0]))):
        if path is None:
            decoder = decoder_state(base_state, base)
        else:
            anchor_state = _load(path)
            for k, v in _shared_state(anchor_state).items():
                if k not in shared or shared[k].shape != v.shape or (shared[k] - v).abs().max() > atol:
                    raise ValueError(f"{path}: its {k} differs from the base's {base}: not trained on the same encoder")
            decoder = decoder_state(anchor_state, path)
        state.update({f"anchor_decoders.{index}.{k}": v.clone() for k, v in decoder.items()})
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch.save(state, output)
    return output


def main(argv: list[str] | None = None) -> int:
    # argparse, not fire: the bundle's scripts ship inside the Deploy app, whose requirements do not carry fire
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="checkpoint of the network whose encoders the decoders share")
    parser.add_argument("--anchors", required=True, help="{lambda: checkpoint or None, ...} as a Python literal")
    parser.add_argument("--output", required=True)
    parser.add_argument("--atol", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        anchors = ast.literal_eval(args.anchors)
        if not isinstance(anchors, dict):
            raise ValueError("not a dict")
    except (ValueError, SyntaxError) as err:
        parser.error(f"--anchors {args.anchors!r}: give {{lambda: 'file.pt' or None, ...}} ({err})")
    print(assemble(args.base, anchors, args.output, args.atol))
    return 0


if __name__ == "__main__":
    sys.exit(main())
