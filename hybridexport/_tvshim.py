"""Make torchvision (a CUDA build on PyPI) importable with the CPU-only torch pin.

torchvision 0.28.0's registry wheel registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms``, which fails when its C++ extension cannot load under CPU torch.
Defining the two schemas first lets the import succeed; timm needs none of the C++ ops.
Import this module before anything that imports torchvision (timm does).
"""

from __future__ import annotations

import torch

_LIB: torch.library.Library | None = None


def install() -> None:
    """Define the torchvision op schemas once, if torchvision's own extension did not."""
    global _LIB
    if _LIB is not None:
        return
    try:
        torch.ops.torchvision.nms  # noqa: B018 - probe: exists when the extension loaded
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB = lib


install()
