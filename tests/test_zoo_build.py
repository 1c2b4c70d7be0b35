"""Every variant of the three reference families builds with real weights and maps an image to 1×1000 logits."""

from __future__ import annotations

import pytest
import torch

from hybridexport.zoo import build_model, list_specs, resolve

# iFormer-H (99 M params, 15.5 GMACs at 224²) runs its forward at 64² to stay cheap: the network is
# fully convolutional up to its global pool, so the logits keep their shape.
SMALL_INPUT = {"iformer-h": 64}


@pytest.mark.parametrize("name", [spec.name for spec in list_specs()])
def test_variant_builds_and_runs(name):
    torch.set_num_threads(1)
    loaded = build_model(name, resolution=SMALL_INPUT.get(name))
    assert not loaded.module.training
    with torch.no_grad():
        logits = loaded.module(loaded.example_input())
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()
    assert loaded.input_shape == (1, 3, loaded.resolution, loaded.resolution)


def test_family_alias_resolves_to_flagship():
    assert resolve("iformer").name == "iformer-m"
    assert resolve("MobileViT-XXS").name == "mobilevit-xxs"
    assert resolve("mobile-former-294m").name == "mobileformer-294m"
