"""Rewrite passes: each applies where its pattern is, is a no-op elsewhere, keeps outputs equal, and a
deliberately broken replacement is rejected by verification."""

from __future__ import annotations

import copy

import hybridexport._tvshim  # noqa: F401

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from hybridexport.errors import HybridExportError
from hybridexport.rewrite import fuse_bn, split_heads
from hybridexport.rewrite.pipeline import DEFAULT_PASSES, resolve_passes, run_pipeline
from hybridexport.rewrite.verify import FP32_REL_TOL
from hybridexport.zoo import build_model

torch.set_num_threads(1)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that a wrong fold changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return model


def assert_close(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        ya, yb = a(x), b(x)
    scale = float(ya.abs().max())
    assert float((ya - yb).abs().max()) <= FP32_REL_TOL * scale, "rewritten model's outputs differ"


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def record(report, name):
    return next(p for p in report.passes if p.name == name)


@pytest.fixture(scope="module")
def mobilevit():
    lm = build_model("mobilevit-xxs", resolution=128)
    return randomize_bn(lm.module), lm.example_input()


@pytest.fixture(scope="module")
def iformer():
    lm = build_model("iformer-t", resolution=128)
    return randomize_bn(lm.module), lm.example_input()


# ---------------------------------------------------------------- fuse-bn
def test_fuse_bn_iformer_folds_every_batchnorm_and_keeps_input_untouched(iformer):
    model, x = iformer
    before = state(model)
    new, report = run_pipeline(model, x, passes=["fuse-bn"], count=False)
    rec = record(report, "fuse-bn")
    assert rec.applied, rec.reason
    assert "folded 74 BatchNorm2d into the preceding Conv2d" in rec.changes
    assert any("BatchNorm1d into the following Linear" in c for c in rec.changes)  # NormLinear head
    assert not any(isinstance(m, _BatchNorm) for m in new.modules())
    assert_close(model, new, x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # input never mutated
    assert sum(isinstance(m, _BatchNorm) for m in model.modules()) == 75


def test_fuse_bn_keeps_activation_of_batchnormact_and_reports_unfoldable_bn():
    from timm.layers import ConvNormAct

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cna = ConvNormAct(3, 8, 3, act_layer=nn.SiLU)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.bn_after_add = nn.BatchNorm2d(8)  # input is a residual sum: nothing to fold into
            self.bn_pre_pad = nn.BatchNorm2d(8)  # feeds a padded conv: folding forward is not exact
            self.padded = nn.Conv2d(8, 8, 3, padding=1)
            self.bn_pre_1x1 = nn.BatchNorm2d(8)  # feeds an unpadded 1x1 conv: folded forward
            self.pw = nn.Conv2d(8, 4, 1, groups=2)

        def forward(self, x):
            y = self.cna(x)
            y = self.bn_after_add(y + self.conv(y))
            y = self.padded(self.bn_pre_pad(y)).relu()
            return self.pw(self.bn_pre_1x1(y))

    model = randomize_bn(Net().eval())
    x = torch.randn(2, 3, 16, 16)
    new, report = run_pipeline(model, x, passes="fuse-bn", count=False)
    rec = record(report, "fuse-bn")
    assert rec.applied and rec.matched == 2
    assert isinstance(new.cna.bn, nn.Sequential) and isinstance(new.cna.bn.act, nn.SiLU)  # act kept
    assert isinstance(new.bn_pre_1x1, nn.Identity)
    assert isinstance(new.bn_after_add, nn.BatchNorm2d) and isinstance(new.bn_pre_pad, nn.BatchNorm2d)
    assert any("kept 2 BatchNorm2d" in n and "bn_after_add" in n for n in rec.notes)
    assert_close(model, new, x)


def test_fuse_bn_not_applicable_without_batchnorm():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    new, report = run_pipeline(model, torch.randn(2, 8), passes=["fuse-bn"], count=False)
    rec = record(report, "fuse-bn")
    assert not rec.applied and not rec.failed and rec.reason.startswith("not applicable")


def test_broken_fold_is_rejected_and_model_kept(iformer, monkeypatch):
    model, x = iformer
    real = fuse_bn.fold_into_preceding

    def perturbed(layer, bn):
        real(layer, bn)
        with torch.no_grad():
            layer.weight.mul_(1.01)

    monkeypatch.setattr(fuse_bn, "fold_into_preceding", perturbed)
    new, report = run_pipeline(model, x, passes=["fuse-bn"], count=False)
    rec = record(report, "fuse-bn")
    assert not rec.applied and rec.failed
    assert "verification failed" in rec.reason and rec.max_abs_err > FP32_REL_TOL * report.output_scale
    assert sum(isinstance(m, _BatchNorm) for m in new.modules()) == 75  # original kept
    with torch.no_grad():
        assert torch.equal(new(x), model(x))
    assert report.applied() == []


# ---------------------------------------------------------------- reparameterize
@pytest.mark.parametrize("name, method", [("timm:mobileone_s0", "reparameterize()"), ("timm:repvit_m0_9", "fuse()")])
def test_reparameterize_uses_the_models_own_method(name, method):
    lm = build_model(name, resolution=96)
    model, x = randomize_bn(lm.module), lm.example_input()
    keys = set(model.state_dict())
    new, report = run_pipeline(model, x, passes=["reparameterize"], count=False)
    assert set(model.state_dict()) == keys  # the input model keeps its training-time branches
    rec = record(report, "reparameterize")
    assert rec.applied, rec.reason
    assert any(c.startswith(method) for c in rec.changes)
    assert sum(p.numel() for p in new.parameters()) < sum(p.numel() for p in model.parameters())
    assert_close(model, new, x)


def test_reparameterize_not_applicable_on_mobilevit(mobilevit):
    model, x = mobilevit
    _, report = run_pipeline(model, x, passes=["reparameterize"], count=False)
    assert record(report, "reparameterize").reason.startswith("not applicable")


# ---------------------------------------------------------------- split-heads / unfold-as-conv
def test_mobilevit_default_pipeline_removes_rank5_and_head_permutes(mobilevit):
    model, x = mobilevit
    new, report = run_pipeline(model, x)
    assert report.applied() == ["fuse-bn", "unfold-as-conv", "split-heads"]
    assert report.rank5_before > 0 and report.rank5_after == 0
    assert "aten.permute" in report.ops_before["aten"]
    assert "aten.permute" not in report.ops_after["aten"]  # no head permutes (nor any other permute)
    assert report.ops_after["reshape"] < report.ops_before["reshape"]
    assert_close(model, new, x)
    d = report.to_dict()
    assert {"passes", "ops_before", "ops_after", "rank5_before", "rank5_after"} <= set(d)
    assert {"name", "applied", "changes", "max_abs_err", "reason"} <= set(d["passes"][0])


def test_iformer_shma_loses_its_head_axis_and_unfold_is_not_applicable(iformer):
    model, x = iformer
    new, report = run_pipeline(model, x, passes=["unfold-as-conv", "split-heads"])
    unfold, split = record(report, "unfold-as-conv"), record(report, "split-heads")
    assert not unfold.applied and unfold.reason.startswith("not applicable")
    assert split.applied and split.changes == ["rewrote 5 iFormer SHMA (single head) without the head axis"]
    assert report.ops_after["transpose"] < report.ops_before["transpose"]
    assert "aten.scaled_dot_product_attention" not in report.ops_after["aten"]
    assert_close(model, new, x)


def test_split_heads_not_applicable_without_attention():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    _, report = run_pipeline(cnn, torch.randn(1, 3, 8, 8), passes=["split-heads"], count=False)
    rec = record(report, "split-heads")
    assert not rec.applied and not rec.failed and rec.reason.startswith("not applicable")


def test_broken_split_is_rejected(mobilevit, monkeypatch):
    model, x = mobilevit
    real = split_heads.scaled_linear

    def perturbed(weight, bias, scale=1.0, rows=0):
        return real(weight * 1.05, bias, scale, rows)

    monkeypatch.setattr(split_heads, "scaled_linear", perturbed)
    new, report = run_pipeline(model, x, passes=["split-heads"], count=False)
    rec = record(report, "split-heads")
    assert not rec.applied and "verification failed" in rec.reason
    assert not any(isinstance(m, split_heads.SplitHeadAttention) for m in new.modules())


def test_unfold_as_conv_mobilevitv2_removes_rank6():
    lm = build_model("timm:mobilevitv2_050", resolution=128)
    model, x = randomize_bn(lm.module), lm.example_input()
    new, report = run_pipeline(model, x, passes=["unfold-as-conv"])
    assert report.applied() == ["unfold-as-conv"]
    assert report.rank5_before > 0 and report.rank5_after == 0
    assert_close(model, new, x)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_split_head_attention_matches_timm_with_masks(qk_norm):
    from timm.layers import Attention

    torch.manual_seed(0)
    attn = Attention(16, num_heads=4, qkv_bias=True, qk_norm=qk_norm, norm_layer=nn.LayerNorm).eval()
    new = split_heads.SplitHeadAttention(attn).eval()
    x = torch.randn(2, 6, 16)
    bool_mask = torch.rand(2, 4, 6, 6) > 0.3
    bool_mask[..., 0] = True  # every query attends to something
    with torch.no_grad():
        for kw in ({}, {"attn_mask": bool_mask}, {"attn_mask": torch.randn(6, 6)}, {"is_causal": True}):
            torch.testing.assert_close(new(x, **kw), attn(x, **kw), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_heads_multihead_attention_masks_and_weights(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    holder = nn.Module()
    holder.attn = mha
    split_heads.SplitHeads().apply(holder, torch.zeros(1))
    new = holder.attn
    assert isinstance(new, split_heads.SplitHeadMultiheadAttention)
    b, lq, s = 2, 5, 7
    q = torch.randn(b, lq, 16) if batch_first else torch.randn(lq, b, 16)
    kv = torch.randn(b, s, 16) if batch_first else torch.randn(s, b, 16)
    kpm = torch.zeros(b, s, dtype=torch.bool)
    kpm[0, -2:] = True
    attn_mask = torch.randn(b * 4, lq, s)
    calls = [
        {},
        {"key_padding_mask": kpm},
        {"attn_mask": attn_mask, "average_attn_weights": False},
        {"need_weights": False, "attn_mask": torch.rand(lq, s) > 0.8},
    ]
    with torch.no_grad():
        for kw in calls:
            ref_out, ref_w = mha(q, kv, kv, **kw)
            out, w = new(q, kv, kv, **kw)
            torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
            if ref_w is None:
                assert w is None
            else:
                torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)


def test_split_heads_in_transformer_encoder_layer_pipeline():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    new, report = run_pipeline(layer, x, passes=["split-heads"], count=False)
    assert report.applied() == ["split-heads"]
    assert isinstance(new.self_attn, split_heads.SplitHeadMultiheadAttention)
    assert_close(layer, new, x)


def test_split_heads_mobileformer():
    lm = build_model("mobileformer-26m", resolution=128)
    model, x = randomize_bn(lm.module), lm.example_input()
    new, report = run_pipeline(model, x, passes=["split-heads"], count=False)
    rec = record(report, "split-heads")
    assert rec.applied, rec.reason
    assert "Mobile2Former" in rec.changes[0] and "Former2Mobile" in rec.changes[0]
    assert_close(model, new, x)


# ---------------------------------------------------------------- linear-to-conv, pipeline API
def test_linear_to_conv_mobilevit_channel_first(mobilevit):
    model, x = mobilevit
    new, report = run_pipeline(model, x, target="coreml-ane")
    assert "linear-to-conv" in report.applied()
    assert report.rank5_after == 0
    assert report.ops_after["transpose"] < report.ops_before["transpose"]
    assert report.ops_after.get("aten", {}).get("aten.linear", 0) == 1  # only the classifier stays linear
    assert_close(model, new, x)


def test_resolve_passes_order_and_unknown_name():
    assert resolve_passes(None) == list(DEFAULT_PASSES)
    assert resolve_passes("split-heads,fuse-bn,reparameterize") == ["reparameterize", "fuse-bn", "split-heads"]
    assert "linear-to-conv" in resolve_passes(None, target="coreml-ane")
    with pytest.raises(HybridExportError, match="known passes: reparameterize, fuse-bn"):
        resolve_passes(["fuse-bn", "fold-everything"])


def test_cli_rewrite_json_and_unknown_pass(capsys):
    import json

    from hybridexport.cli import main

    assert main(["rewrite", "mobilevit-xxs", "--resolution", "64", "--passes", "unfold-as-conv", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passes"][0]["name"] == "unfold-as-conv" and data["passes"][0]["applied"]
    assert data["rank5_before"] == data["rank5_after"] > 0  # attention still has its rank-5 reshapes
    assert main(["rewrite", "mobilevit-xxs", "--passes", "nope"]) == 2
    assert "unknown rewrite pass 'nope'" in capsys.readouterr().err


def test_pipeline_never_mutates_input(mobilevit):
    model, x = mobilevit
    snapshot = copy.deepcopy(model)
    run_pipeline(model, x, passes=["fuse-bn", "split-heads"], count=False)
    assert [type(m) for m in model.modules()] == [type(m) for m in snapshot.modules()]
    assert all(torch.equal(v, snapshot.state_dict()[k]) for k, v in model.state_dict().items())
