"""Checkpoint I/O: official .pth files (safely, memory-mapped), our safetensors files, clear errors."""
import argparse
import os

import pytest
import torch

from fractal_ext.io.checkpoints import (CheckpointError, load_model, load_official_checkpoint, load_weights, save_model,
                                    state_dict_from_checkpoint)
from fractal_ext.models import FractalGen
from reference_models import build_reference_model, normalised_images, reference_entry


def tiny_model():
    return build_reference_model("tiny_mar")


def write_official_checkpoint(model, path, model_name="tiny"):
    """The layout of the official `checkpoint-last.pth`: weights, optimizer, scaler, epoch, args."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    model(normalised_images(2, 16), torch.tensor([1, 2])).backward()
    optimizer.step()
    args = argparse.Namespace(model=model_name, epochs=800, blr=5e-5, output_dir="./output", img_size=16,
                              num_iter_list="8,4", grad_clip=3.0, cfg_schedule="linear")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0}, "args": args}, path)


def test_official_format_checkpoint_loads(tmp_path):
    model = tiny_model()
    path = tmp_path / "checkpoint-last.pth"
    write_official_checkpoint(model, path)
    checkpoint = load_official_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["args"].model == "tiny"
    assert "state" in checkpoint["optimizer"]
    fresh = FractalGen(**reference_entry("tiny_mar")["config"])
    load_weights(fresh, state_dict_from_checkpoint(checkpoint))
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_pickled_callable_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "hook": os.system}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_official_checkpoint(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_official_checkpoint("/nonexistent/checkpoint-last.pth")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model("/nonexistent/model.safetensors")


def test_truncated_files(tmp_path):
    model = tiny_model()
    pth, st = tmp_path / "checkpoint.pth", tmp_path / "model.safetensors"
    write_official_checkpoint(model, pth)
    save_model(model, st)
    for path in (pth, st):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_official_checkpoint(pth)
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(st)


def test_mismatched_state_dict_names_the_keys():
    model = tiny_model()
    state_dict = dict(model.state_dict())
    del state_dict["generator.mask_token"]
    state_dict["generator.extra"] = torch.zeros(1)
    state_dict["class_emb.weight"] = torch.zeros(1000, 64)
    with pytest.raises(CheckpointError) as error:
        load_weights(FractalGen(**reference_entry("tiny_mar")["config"]), state_dict)
    message = str(error.value)
    assert "missing: generator.mask_token" in message
    assert "unexpected: generator.extra" in message
    assert "class_emb.weight: checkpoint (1000, 64) vs model (10, 64)" in message


def test_official_checkpoint_of_another_model_is_rejected(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    write_official_checkpoint(tiny_model(), path, model_name="fractalar_in64")
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path)  # the mismatch is found on the meta device: no 442M-parameter model is built


def test_safetensors_round_trip_keeps_config_and_weights(tmp_path):
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    save_model(model, path, model_name="tiny_mar")
    loaded = load_model(path)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("fractal_ext.io.checkpoints.save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_safetensors_load_whatever_their_file_name(tmp_path):
    """save_model writes safetensors to any path; loading goes by the content, not the suffix (a
    .pth name used to send such a file to the pickle loader, which called it unsafe)."""
    model = build_reference_model("tiny_ar")
    for name in ("model.pth", "model.bin", "model"):
        save_model(model, tmp_path / name)
        for loaded in (load_model(tmp_path / name),):
            assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_folders_are_not_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder: pass the checkpoint file in it"):
        load_model(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder: pass a file name to write"):
        save_model(build_reference_model("tiny_ar"), tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# ---- integrity: damaged bytes, non-finite values, impossible dtypes ---------------------------


def flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_damaged_safetensors_bytes_are_refused_as_damaged(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(tiny_model(), path)
    flip_byte(path, path.stat().st_size - 100)  # inside the last tensor's bytes
    with pytest.raises(CheckpointError, match="is damaged: its tensors do not match the content hash"):
        load_model(path)
    load_model(path, verify=False)  # the explicit opt-out


def test_damaged_pth_bytes_are_refused_as_damaged(tmp_path):
    path = tmp_path / "checkpoint-last.pth"
    write_official_checkpoint(tiny_model(), path)
    flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(CheckpointError, match=r"is damaged: the stored CRC of .* does not match its bytes"):
        load_official_checkpoint(path)
    with pytest.raises(CheckpointError, match="is damaged"):
        load_model(path, model_name="fractalmar_fmnist32")  # found damaged before it is found to be another model


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, bad):
    model = tiny_model()
    with torch.no_grad():
        model.generator.blocks[0].attn.qkv.weight[0, 3] = bad
    path = tmp_path / "diverged.safetensors"
    save_model(model, path)  # its hash matches: the values themselves are the problem
    with pytest.raises(CheckpointError, match=r"NaN or infinite values: generator\.blocks\.0\.attn\.qkv\.weight"):
        load_model(path)
    assert not torch.isfinite(load_model(path, verify=False).generator.blocks[0].attn.qkv.weight).all()
    pth = tmp_path / "diverged.pth"
    torch.save({"model": model.state_dict()}, pth)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values: generator\.blocks\.0\.attn\.qkv\.weight"):
        load_weights(tiny_model(), state_dict_from_checkpoint(load_official_checkpoint(pth)))


def test_an_integer_tensor_where_a_float_parameter_belongs_is_refused(tmp_path):
    from safetensors.torch import save_file

    from fractal_ext.io.checkpoints import CONFIG_METADATA_KEY

    model = tiny_model()
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["fake_latent"] = torch.zeros_like(tensors["fake_latent"], dtype=torch.int64)
    path = tmp_path / "ints.safetensors"
    save_file(tensors, str(path), metadata={CONFIG_METADATA_KEY: model.config.to_json()})
    with pytest.raises(CheckpointError, match=r"dtype their parameters cannot hold: fake_latent \(torch.int64"):
        load_model(path)
