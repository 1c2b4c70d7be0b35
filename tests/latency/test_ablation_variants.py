"""benchmarks/ablations/iformer_ablation.py, the bring-your-own ablation variants of the host pairs
(predictor_accuracy section 5): each builds through the model-file reference path, converts with verified
numerics, and changes only the design choice it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import predictor_accuracy as acc
from hybridexport.export.api import convert
from hybridexport.optable import OpTable

ABL = Path(acc.__file__).resolve().parent / "ablations" / "iformer_ablation.py"


@pytest.mark.parametrize("call", ["build()", "build(attn='sha')", "build(attn='mha')", "build(kernel=3)",
                                  "build(ffn_dw=True)"])
def test_variant_converts_with_verified_numerics(call: str, tmp_path: Path) -> None:
    (m,) = convert(f"{ABL}:{call}", to="onnx", out=tmp_path, resolution=64, rewrite=False, verify_inputs=1)
    assert m.parity.verified
    ops = OpTable.load(m.op_table_path()).ops
    kinds = {o.op_type for o in ops}
    gated = sum(1 for o in ops if o.op_type == "Sigmoid")
    if call == "build()" or "kernel" in call or "ffn_dw" in call:
        assert gated > 0  # SHMA's modulation gate
    else:
        assert gated == 0 and "Softmax" in kinds
    convs = [o for o in ops if o.op_type == "Conv" and o.kind == "conv_dw"]
    if "kernel=3" in call:
        assert convs and all(o.macs / max(o.out_elems, 1) <= 9 for o in convs)  # no 7×7 depthwise left
    head_permutes = sum(1 for o in ops if o.op_type == "Transpose" and o.rank == 4)
    if "mha" in call:  # heads split by reshape and permute
        assert head_permutes > 0
    elif "sha" in call:  # one head, no gate: no rank-4 transposes at all
        assert head_permutes == 0


def test_ablation_chains_are_in_the_host_pairs_with_short_labels() -> None:
    refs = {r for chain in acc.HOST_PAIR_CHAINS for r in chain}
    assert f"{ABL}:build(attn='mha')" in refs and all(Path(r.split(".py:")[0] + ".py").is_file()
                                                     for r in refs if ".py:" in r)
    assert acc._label(f"{ABL}:build(kernel=3)") == "iformer_ablation:build(kernel=3)"
    assert acc._label("iformer-t") == "iformer-t"
    with pytest.raises(ValueError, match="attn 'x'"):
        from benchmarks.ablations.iformer_ablation import build

        build(attn="x")
