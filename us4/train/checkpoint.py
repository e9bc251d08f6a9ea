"""Checkpoints: our weights as safetensors; foreign `.pth` files read without unpickling code.

`torch.load(weights_only=True)` only rebuilds tensors and plain containers; a file
that needs anything else (an arbitrary pickled object) is refused with TrainError.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import TrainError
from .resnet import LAYER4, USCLModel

#: heads of the reference's ResNetSimCLR that its forward never uses (a "mixup" classifier)
_REFERENCE_UNUSED = ("fc1.", "fc2.")


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Write a state dict as safetensors (tensors made contiguous and moved to the CPU).

    `metadata` is stored as one canonical JSON string under the key `us4`: safetensors
    writes a metadata map in no fixed order, and one key keeps the file's bytes
    repeatable.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta = {"us4": json.dumps(metadata, sort_keys=True)} if metadata else None
    save_file(tensors, str(path), metadata=meta)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_pickled_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt` state dict read with weights_only=True; never executes pickled code."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what the weights-only unpickler raises on anything but weights
        raise TrainError(f"{path}: refused: not a plain tensor checkpoint; only weights are loaded, "
                         f"never pickled objects ({str(exc).splitlines()[0]})") from exc
    except Exception as exc:  # a truncated or foreign file breaks the parser in many ways (KeyError, EOFError, ...)
        raise TrainError(f"{path}: unreadable as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise TrainError(f"{path}: not a state dict (a mapping of names to tensors)")
    # checkpoints saved from nn.DataParallel prefix every name
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_reference_checkpoint(path: str | Path) -> USCLModel:
    """A USCL `best_model.pth` (keys `features.*`, `l1`, `l2`, `fc`) as a USCLModel.

    The classifier size is read from `fc.weight`; the reference's unused `fc1`/`fc2`
    heads are dropped; any other missing or unexpected key is an error.
    """
    state = load_pickled_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith(_REFERENCE_UNUSED)}
    if "fc.weight" not in state:
        raise TrainError(f"{path}: no 'fc.weight'; not a USCL checkpoint (keys: {', '.join(list(state)[:5])} ...)")
    model = USCLModel(num_classes=int(state["fc.weight"].shape[0]))
    _load_strict(model, state, path)
    return model


def torchvision_to_features(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet-18 names (`conv1`, `bn1`, `layer1`..`layer4`) -> our `features` names; `fc` dropped."""
    top = {"conv1": "0", "bn1": "1", **{f"layer{i}": str(LAYER4 - 4 + i) for i in range(1, 5)}}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "fc":
            continue
        if head not in top:
            raise TrainError(f"unexpected key {key!r} in a torchvision ResNet-18 checkpoint")
        out[f"{top[head]}.{rest}"] = value
    return out


def load_backbone(path: str | Path) -> dict[str, torch.Tensor]:
    """The `features` state dict (names without the `features.` prefix) of any supported file:

    our safetensors, a USCL reference `.pth`, or torchvision-layout ImageNet weights.
    """
    p = Path(path)
    state = load_weights(p) if p.suffix == ".safetensors" else load_pickled_state_dict(p)
    if any(k.startswith("features.") for k in state):
        feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    elif "conv1.weight" in state:
        feats = torchvision_to_features(state)
    else:
        raise TrainError(f"{p}: neither USCL (`features.*`) nor torchvision ResNet-18 (`conv1.*`) layout")
    probe = USCLModel().features
    _load_strict(probe, feats, p)
    return feats


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"{what} {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
        raise TrainError(f"{path}: does not fit ResNet-18/USCL: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)
