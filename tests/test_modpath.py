"""hybridexport.modpath: the one module-path parser, for every format and runner."""

from __future__ import annotations

from hybridexport.modpath import (
    ROOT,
    clean_path,
    common_module,
    cut,
    from_litert_name,
    from_module_stack,
    from_name_scopes,
    from_onnx_metadata,
    from_torchscript_scope,
    litert_location_paths,
    parent,
    submodule_name,
)


def test_litert_names():
    name = ("__main__.TinyNet/__main__.Block_body/torch.nn.modules.batchnorm.BatchNorm2d_bn;;"
            "__main__.TinyNet/__main__.Block_stem/torch.nn.modules.batchnorm.BatchNorm2d_bn;;"
            "__main__.TinyNet/__main__.Block_body/torch.nn.modules.conv.Conv2d_conv;2")
    assert litert_location_paths(name) == ["body.bn", "stem.bn", "body.conv"]
    assert from_litert_name(name) == "body"  # the op's own location, widened by its folded BN only
    assert from_litert_name("__main__.TinyNet/torch.nn.modules.dropout.Dropout_head_drop;") == "head_drop"
    assert from_litert_name("__main__.TinyNet;3") == ROOT
    assert from_litert_name("MobilenetV1/MobilenetV1/Conv2d_0/Relu6") == ""  # a TF name scope, not a location
    assert from_litert_name("serving_default_output_0_output") == ""
    odd = "m.Net/m.Odd_Class_stage_one/torch.nn.modules.conv.Conv2d_c;"
    assert from_litert_name(odd) == "Class_stage_one.c"
    assert from_litert_name(odd, known={"", "stage_one", "stage_one.c"}) == "stage_one.c"  # split fixed by known paths
    assert from_litert_name(odd, known={"", "other"}) == ROOT  # unknown paths are cut back


def test_onnx_name_scopes_and_export_stacks():
    assert from_name_scopes(["", "stem", "stem.conv1", "stem.conv1.bn", "_native_batch_norm"]) == "stem.conv1.bn"
    assert from_name_scopes(["", "mean"]) == ROOT
    stack = {"L__self__": ("", "M"), "L__self___stem": ("stem", "Blk"), "x": ("stem.conv", "Conv2d")}
    assert from_module_stack(stack) == "stem.conv"
    assert from_module_stack({"L__self__": ("", "M")}) == ROOT
    assert from_module_stack(None) == ""


def test_onnx_metadata_and_older_namespace():
    props = {"pkg.torch.onnx.name_scopes": "['', 'stages', 'stages.0', 'conv2d_3']"}
    assert from_onnx_metadata(props) == "stages.0"
    assert from_onnx_metadata({"pkg.torch.onnx.name_scopes": "['', 'mean']"}) == ROOT
    assert from_onnx_metadata({"namespace": ": M/stem: Blk/stem.conv: Conv2d/conv2d: aten.conv2d.default"}) == "stem.conv"
    assert from_onnx_metadata({"pkg.torch.onnx.name_scopes": "not a list"}) == ""
    assert from_onnx_metadata({}) == ""


def test_spellings_and_conventions():
    assert clean_path("L['self'].stages[0].blocks") == "stages.0.blocks"
    assert clean_path("L['self']") == ROOT and clean_path("") == ROOT
    assert from_torchscript_scope("__module.stages/__module.stages.0") == "stages.0"
    assert from_torchscript_scope("") == ""
    assert submodule_name(ROOT) == "" and submodule_name("a.b") == "a.b"
    assert parent("a.b.c") == "a.b" and parent("a") == ROOT and parent("") == ""
    assert cut("a.b.c", 2) == "a.b" and cut(ROOT, 1) == ROOT and cut("a.b", None) == "a.b"
    assert common_module(["a.b.c", "a.b.d"]) == "a.b" and common_module(["a", "b"]) == ROOT
    assert common_module([ROOT]) == ROOT and common_module([""]) == ""
