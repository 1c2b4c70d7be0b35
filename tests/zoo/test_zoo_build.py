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


def test_fixed_size_timm_model_is_built_for_the_resolution_asked():
    """EfficientFormerV2 sizes its attention biases for its input: asked for 320², it is built for 320²
    (a 224² build fails on that input), and the same weights shape as at 224² where they do not depend on it."""
    torch.set_num_threads(1)
    loaded = build_model("timm:efficientformerv2_s0", resolution=320)
    with torch.no_grad():
        assert loaded.module(loaded.example_input()).shape == (1, 1000)
    default = build_model("timm:efficientformerv2_s0")
    with pytest.raises(RuntimeError), torch.no_grad():
        default.module(torch.zeros(1, 3, 320, 320))
    bias = {k for k, v in loaded.module.state_dict().items() if v.shape != default.module.state_dict()[k].shape}
    assert bias and all("attention_bias" in k for k in bias)


def test_fixed_size_model_that_cannot_resize_names_its_resolution(capsys):
    from hybridexport.cli import main

    assert main(["info", "timm:efficientformer_l1", "--resolution", "320"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --resolution 224" in err[0]


def test_checkpoint_for_224_loads_into_a_model_built_for_320(tmp_path, capsys):
    """A 224² EfficientFormerV2 checkpoint loads into the 320² build: each attention-bias table (heads × 7²)
    is interpolated bicubically to the new grid (heads × 10²), every other tensor loads as it is, and
    the interpolation is said on stderr and kept in the load report."""
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    src = build_model("timm:efficientformerv2_s0", seed=1).module.state_dict()
    path = tmp_path / "ef.safetensors"
    save_file({k: v.contiguous() for k, v in src.items()}, str(path))
    loaded = build_model("timm:efficientformerv2_s0", resolution=320, checkpoint=path)
    got = loaded.module.state_dict()
    resized = loaded.load_report["resized"]
    # stage attention at 1/32 of the input (7² → 10²), the downsampling attention at 1/16 (14² → 20²)
    assert resized and all(r.endswith(("7×7→10×10", "14×14→20×20")) for r in resized)
    key = next(k for k in got if k.endswith("attention_biases") and got[k].shape[1] == 100)
    h = src[key].shape[0]
    want = F.interpolate(src[key].reshape(1, h, 7, 7), size=(10, 10), mode="bicubic", align_corners=False)
    assert torch.allclose(got[key], want.reshape(h, 100))
    same = [k for k in src if src[k].shape == got[k].shape and not k.endswith("attention_bias_idxs")]
    assert all(torch.equal(src[k], got[k]) for k in same)
    with torch.no_grad():
        assert torch.isfinite(loaded.module(loaded.example_input())).all()
    assert "interpolated" in capsys.readouterr().err
    # at the checkpoint's own size nothing is resized
    assert build_model("timm:efficientformerv2_s0", checkpoint=path).load_report["resized"] == []
