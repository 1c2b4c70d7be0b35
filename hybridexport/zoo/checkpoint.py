"""Safe checkpoint loading: safetensors or ``torch.load(weights_only=True)``, never full unpickling."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from hybridexport.errors import CheckpointError

SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
WRAPPER_KEYS = ("state_dict", "model", "model_ema", "state_dict_ema", "module", "net")
PREFIXES = ("module.", "_orig_mod.", "model.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``path`` without executing code; unwrap the usual layouts."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' does not exist; pass the path of a local .pth/.pt/.safetensors file")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            raw: object = load_file(str(p), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"checkpoint '{p}' is not a readable safetensors file ({exc}); re-save it") from None
    else:
        try:
            with p.open("rb") as fh:
                head = fh.read(4)
        except OSError as exc:
            raise CheckpointError(f"checkpoint '{p}' is not readable ({exc.strerror or type(exc).__name__})") from None
        # A torch.save file is a zip archive (PK\x03\x04) or, in the legacy format, a pickle (\x80 proto).
        if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":
            raise CheckpointError(f"checkpoint '{p}' is corrupt or not a PyTorch/safetensors file; re-download or re-save it")
        try:
            raw = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = _first_line(exc)
            raise CheckpointError(
                f"refused to load '{p}': it holds objects that safe (weights_only) loading does not allow "
                f"({first[:160]}); save a plain state_dict (torch.save(model.state_dict(), ...)) or .safetensors"
            ) from None
        except Exception as exc:  # noqa: BLE001 - weights_only loading runs no code; on a damaged file it
            # raises whatever its reader tripped on (zip, struct, KeyError, IndexError, AssertionError, ...)
            msg = _first_line(exc)
            kind = "" if isinstance(exc, RuntimeError | EOFError | zipfile.BadZipFile | ValueError | OSError) else (
                f"{type(exc).__name__}: ")
            raise CheckpointError(f"checkpoint '{p}' is corrupt or not a PyTorch file ({kind}{msg[:160]}); "
                                  "re-download or re-save it") from None
    return unwrap(raw, p)


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def unwrap(raw: object, path: Path | str = "<memory>") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common wrappers and strip ``module.``-style prefixes."""
    obj = raw
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise CheckpointError(
            f"checkpoint '{path}' holds no state_dict (looked under {', '.join(WRAPPER_KEYS)}); save model.state_dict()"
        )
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    odd = [k for k in sd if not isinstance(k, str)]
    if odd:
        raise CheckpointError(f"checkpoint '{path}' names tensors by {type(odd[0]).__name__} keys ({odd[0]!r}), not "
                              "parameter names; save model.state_dict()")
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _is_tensor_dict(obj: Mapping) -> bool:
    return bool(obj) and sum(isinstance(v, torch.Tensor) for v in obj.values()) >= max(1, len(obj) // 2)


def resize_attention_biases(sd: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit per-position attention bias tables (``attention_biases``, heads × r², as in EfficientFormer and
    LeViT) trained at one input size to a model built for another: bicubic interpolation of each head's
    r × r grid, as for position embeddings. Returns the new dict and the keys resized."""
    import math

    import torch.nn.functional as F

    out, resized = dict(sd), []
    for k, v in sd.items():
        tgt = own.get(k)
        if not k.endswith("attention_biases") or tgt is None or v.dim() != 2 or tgt.dim() != 2:
            continue
        (h, n), (h2, m) = v.shape, tgt.shape
        a, b = math.isqrt(n), math.isqrt(m)
        if h != h2 or n == m or a * a != n or b * b != m:
            continue
        grid = v.reshape(1, h, a, a).float()
        out[k] = F.interpolate(grid, size=(b, b), mode="bicubic", align_corners=False).reshape(h, m).to(v.dtype)
        resized.append(f"{k} {a}×{a}→{b}×{b}")
    return out, resized


def load_into(
    model: nn.Module,
    path: str | Path,
    *,
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    strict: bool = True,
) -> dict[str, list[str]]:
    """Load ``path`` into ``model``; returns missing/unexpected keys. Mismatch is an error when ``strict``."""
    sd = read_state_dict(path)
    if rename is not None:
        sd = rename(sd)
    own = model.state_dict()
    sd, resized = resize_attention_biases(sd, own)
    shape_bad = [
        f"{k} {tuple(v.shape)}≠{tuple(own[k].shape)}" for k, v in sd.items() if k in own and own[k].shape != v.shape
    ]
    missing = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in sd if k not in own)
    report = {"missing": missing, "unexpected": unexpected, "shape_mismatch": shape_bad, "resized": resized}
    if shape_bad or (strict and (missing or unexpected)):
        parts = []
        if shape_bad:
            parts.append(f"{len(shape_bad)} shape mismatches (e.g. {shape_bad[0]})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        hint = "it is probably for another architecture or variant" if shape_bad or len(missing) > len(own) // 4 else (
            "pass --allow-mismatch to load the matching keys anyway"
        )
        raise CheckpointError(f"checkpoint '{path}' does not fit {type(model).__name__}: {'; '.join(parts)}; {hint}")
    matching = {k: v for k, v in sd.items() if k in own}
    if not matching:
        raise CheckpointError(f"checkpoint '{path}' shares no key with {type(model).__name__} (0 of {len(own)} "
                              "loaded); it is for another architecture")
    model.load_state_dict(matching, strict=False)
    report["loaded"] = sorted(matching)
    return report
