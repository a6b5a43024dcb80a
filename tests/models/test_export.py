"""export_encoder / load_encoder: round trips and strict, loud loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.errors import FormatError
from neurofm.models import BrainJEPA, export_encoder, load_encoder
from neurofm.models.export import load_state_dict_strict
from neurofm.objectives import JEPAObjective

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 4, "predictor_embed_dim": 16,
        "predictor_depth": 1}


def _model(seed=0):
    torch.manual_seed(seed)
    g = np.random.default_rng(seed).standard_normal((10, 4))
    return BrainJEPA(10, 48, gradients=g, **TINY).eval()


def _checkpoint(model, objective):
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
    return {"state_dict": sd, "epoch": 3,
            "neurofm": {"model_config": model.config, "seed": 7, "normalization": {"m": 1},
                        "stats": np.arange(3.0), "step": np.int64(4)}}


def test_round_trip_from_model(tmp_path):
    model = _model()
    path = export_encoder(model, tmp_path / "enc.pt")
    enc = load_encoder(path)
    x = torch.randn(2, 10, 48)
    assert torch.equal(enc(x), model.encode(x))
    assert enc.config == model.config and not enc.training
    assert torch.equal(enc.pos.gradients, model.gradients)


def test_export_from_checkpoint_uses_the_target_encoder(tmp_path):
    model = _model()
    objective = JEPAObjective(model)
    with torch.no_grad():  # make target and online encoders differ
        for p in model.encoder.parameters():
            p.add_(0.1)
    ckpt = _checkpoint(model, objective)
    x = torch.randn(2, 10, 48)
    target = load_encoder(export_encoder(ckpt, tmp_path / "t.pt"))
    assert torch.allclose(target(x), objective.target_encoder(x))
    assert not torch.allclose(target(x), model.encode(x))
    assert target.extra == {"seed": 7, "normalization": {"m": 1}, "stats": [0.0, 1.0, 2.0],
                            "step": 4}
    context = load_encoder(export_encoder(ckpt, tmp_path / "c.pt", which="context"))
    assert torch.allclose(context(x), model.encode(x))
    # a checkpoint file on disk, and the hyper_parameters layout
    torch.save(ckpt, tmp_path / "last.ckpt")
    enc = load_encoder(export_encoder(tmp_path / "last.ckpt", tmp_path / "f.pt"))
    assert torch.allclose(enc(x), target(x))
    hp = {"state_dict": ckpt["state_dict"], "hyper_parameters": {"model_config": model.config}}
    enc = load_encoder(export_encoder(hp, tmp_path / "h.pt"))
    assert torch.allclose(enc(x), target(x))


def test_checkpoint_errors(tmp_path):
    model = _model()
    ckpt = _checkpoint(model, JEPAObjective(model))
    with pytest.raises(FormatError, match="no model config"):
        export_encoder({"state_dict": ckpt["state_dict"]}, tmp_path / "x.pt")
    no_target = {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items()
                                        if k.startswith("model.")}}
    with pytest.raises(FormatError, match="target-encoder"):
        export_encoder(no_target, tmp_path / "x.pt")
    bad = dict(ckpt["state_dict"])
    bad.pop("model.encoder.norm.weight")
    bad["model.encoder.extra"] = torch.zeros(1)
    with pytest.raises(FormatError) as info:
        export_encoder({**ckpt, "state_dict": bad}, tmp_path / "x.pt")
    msg = str(info.value)
    assert "encoder.norm.weight" in msg and "encoder.extra" in msg
    with pytest.raises(FormatError, match="not found"):
        export_encoder(tmp_path / "missing.ckpt", tmp_path / "x.pt")


def test_strict_loading_lists_every_problem(tmp_path):
    model = _model()
    path = export_encoder(model, tmp_path / "enc.pt")
    payload = torch.load(path, weights_only=True)
    sd = payload["state_dict"]
    sd.pop("blocks.0.attn.qkv.bias")
    sd["blocks.9.mlp.fc1.weight"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(5)
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(FormatError) as info:
        load_encoder(tmp_path / "broken.pt")
    msg = str(info.value)
    assert "missing keys ['blocks.0.attn.qkv.bias']" in msg
    assert "unexpected keys ['blocks.9.mlp.fc1.weight']" in msg
    assert "norm.weight: expected (32,), found (5,)" in msg
    # a module is never partially loaded
    fresh = _model(seed=1).encoder
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(FormatError):
        load_state_dict_strict(fresh, sd)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_not_an_encoder_file(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(FormatError, match="not a neurofm encoder file"):
        load_encoder(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(FormatError, match="not a readable torch file"):
        load_encoder(tmp_path / "junk.pt")
    with pytest.raises(FormatError, match="not found"):
        load_encoder(tmp_path / "nothing.pt")


def test_reference_weights_give_the_reference_outputs():
    """Weights of the reference's own model classes (golden file, see data/) load into
    BrainJEPA through convert_reference_state_dict and reproduce its outputs."""
    from pathlib import Path

    from neurofm.models.export import convert_reference_state_dict

    gold = torch.load(Path(__file__).parent / "data" / "reference_golden.pt",
                      weights_only=True)
    model = BrainJEPA(**gold["config"], gradients=gold["gradients"]).eval()
    state = {f"encoder.{k}": v for k, v in convert_reference_state_dict(
        {f"module.{k}": v for k, v in gold["encoder"].items()}, "encoder",
        gradients=gold["gradients"][None]).items()}
    state.update({f"predictor.{k}": v for k, v in convert_reference_state_dict(
        gold["predictor"], "predictor", gradients=gold["gradients"]).items()})
    load_state_dict_strict(model, state)
    with torch.no_grad():
        tokens = model.encode(gold["x"])
        pred = model(gold["x"], gold["context_idx"], gold["target_idx"])
    assert torch.allclose(tokens, gold["tokens"], atol=1e-5)
    assert torch.allclose(pred, gold["pred"], atol=1e-5)
