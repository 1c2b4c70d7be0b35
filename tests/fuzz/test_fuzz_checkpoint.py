"""Fuzzing checkpoint containers (``zoo.checkpoint.read_state_dict``): damaged ``torch.save`` zips, legacy
pickles and safetensors files, made from a real small state_dict and then corrupted."""

from __future__ import annotations

import io
import pickle
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from hybridexport.errors import CheckpointError
from hybridexport.zoo.checkpoint import read_state_dict

from fuzzing import examples, outcome

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, on damaged pickles
WORK = Path(tempfile.mkdtemp(prefix="fuzz-ckpt-"))
STATE = {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2), "conv.bias": torch.ones(2),
         "bn.num_batches_tracked": torch.tensor(3)}


def _torch_bytes(obj: object, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


SAVED = {".pth": _torch_bytes(STATE), ".pt": _torch_bytes({"state_dict": STATE}, legacy=True),
         ".safetensors": st_save(STATE)}


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A saved file with 1..4 damages: bytes overwritten, a span deleted or duplicated, the file cut short."""
    suffix = draw(st.sampled_from(sorted(SAVED)))
    data = bytearray(SAVED[suffix])
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(data) - 1)))
        action = draw(st.sampled_from(["set", "set", "delete", "dup", "cut"]))
        if action == "set":
            patch = draw(st.binary(min_size=1, max_size=8))
            data[i:i + len(patch)] = patch
        elif action == "delete":
            del data[i:i + draw(st.integers(1, 64))]
        elif action == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
        else:
            del data[i:]
    return suffix, bytes(data)


def load(suffix: str, data: bytes) -> object:
    path = WORK / f"ckpt{suffix}"
    path.write_bytes(data)
    return outcome(read_state_dict, path)


def check(sd: object) -> None:
    if isinstance(sd, dict):
        assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items())


def test_the_saved_files_load() -> None:
    for suffix, data in SAVED.items():
        sd = load(suffix, data)
        assert sorted(sd) == sorted(STATE) and torch.equal(sd["conv.weight"], STATE["conv.weight"])


@settings(max_examples=examples(500))
@given(case=damaged())
def test_read_damaged_checkpoint(case: tuple[str, bytes]) -> None:
    check(load(*case))


@settings(max_examples=examples(200))
@given(suffix=st.sampled_from(sorted(SAVED)), head=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04"]),
       data=st.binary(max_size=200))
def test_read_random_bytes(suffix: str, head: bytes, data: bytes) -> None:
    check(load(suffix, head + data))


@pytest.mark.parametrize("header", [b"{", b'{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}',
                                    b'{"a": {"dtype": "F32", "shape": [99999999999], "data_offsets": [0, 4]}}'])
def test_a_bad_safetensors_header_is_one_error(header: bytes) -> None:
    with pytest.raises(CheckpointError):
        read_state_dict(_write(".safetensors", struct.pack("<Q", len(header)) + header + b"\0" * 4))


def test_a_pickle_with_code_is_refused() -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("ran",))

    with pytest.raises(CheckpointError, match="refused to load"):
        read_state_dict(_write(".pt", pickle.dumps({"w": Evil()}, protocol=2)))


def _write(suffix: str, data: bytes) -> Path:
    path = WORK / f"one{suffix}"
    path.write_bytes(data)
    return path
