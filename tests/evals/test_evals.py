"""Downstream evaluation: embeddings, splits, probes, fine-tuning, baselines, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn

from neurofm.errors import DataError, NeurofmError
from neurofm.evals import (
    assert_subject_disjoint,
    embed,
    layer_decay_param_groups,
    probe,
    save_report,
    set_drop_path,
    subject_splits,
    to_markdown,
)
from neurofm.evals.probing import FineTuneNet
from neurofm.models import BrainJEPA
from neurofm.models.layers import DropPath

from .conftest import N_FRAMES, N_ROIS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jepa(depth=2, seed=0):
    torch.manual_seed(seed)
    return BrainJEPA(N_ROIS, N_FRAMES, patch_size=16, embed_dim=32, depth=depth, num_heads=2,
                     predictor_embed_dim=32, predictor_depth=1, pos_embed="sincos")


# ---------------------------------------------------------------------------------- splits
def test_subject_splits_are_disjoint_stratified_and_seeded():
    subjects = np.repeat([f"s{i:02d}" for i in range(10)], 3)  # 3 windows per subject
    y = np.repeat(np.arange(10) % 2, 3)
    draws = []
    for seed in range(5):
        sp = subject_splits(subjects, y, seed=seed)
        sets = {k: set(subjects[v]) for k, v in sp.items()}
        assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"]
                    or sets["val"] & sets["test"])
        assert sorted(np.concatenate(list(sp.values()))) == list(range(30))  # a partition
        for k in ("train", "val", "test"):  # stratified: both classes in every split
            assert set(y[sp[k]]) == {0, 1}
        draws.append(tuple(sorted(sets["test"])))
    assert len(set(draws)) > 1  # seeds give different splits
    assert subject_splits(subjects, y, seed=3)["test"].tolist() == \
        subject_splits(subjects, y, seed=3)["test"].tolist()
    with pytest.raises(DataError, match="not subject-disjoint"):
        assert_subject_disjoint(subjects, {"train": [0, 1], "test": [2, 3]})  # s00 in both
    with pytest.raises(DataError, match="at least 2 subjects"):
        subject_splits(["a", "a"], seed=0)


def test_probe_records_subject_disjoint_splits(planted_store):
    store, labels = planted_store
    res = probe(None, store, labels, window_samples=N_FRAMES, seeds=(0, 1),
                baselines=["fc_correlation"])
    split = res["split"]
    assert split.sizes == {"seed": 2, "subject": 16}
    for seed in (0, 1):
        row = split.sel(seed=seed).values
        assert set(row) == {"train", "val", "test"}  # each subject in exactly one split
    assert not np.array_equal(split.sel(seed=0).values, split.sel(seed=1).values)


# ---------------------------------------------------------------------------------- baselines
def test_fc_baseline_recovers_planted_groups(planted_store):
    store, labels = planted_store
    res = probe(None, store, labels, window_samples=N_FRAMES, seeds=(0, 1, 2),
                baselines=["fc_correlation", "fc_tangent"])
    bacc = res["mean"].sel(metric="balanced_accuracy")
    assert float(bacc.sel(model="fc_correlation")) >= 0.9
    assert float(bacc.sel(model="fc_tangent")) >= 0.9
    # labels unrelated to the planted coupling: the baseline falls to chance
    rng = np.random.default_rng(0)
    subjects = sorted(labels)
    noise = dict(zip(subjects, rng.permutation([int(s) // 2 % 2 for s in subjects])))
    res = probe(None, store, noise, window_samples=N_FRAMES, seeds=(0, 1),
                baselines=["fc_correlation"])
    assert float(res["mean"].sel(model="fc_correlation", metric="balanced_accuracy")) < 0.8


def test_eeg_baselines_and_any_torch_encoder(eeg_store):
    store, labels = eeg_store

    class ConvEncoder(nn.Module):  # a braindecode-style model: (B, C, T) -> (B, D)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(8, 16, 25)

        def forward(self, x):
            return torch.log(self.conv(x).pow(2).mean(dim=-1) + 1e-6)

    res = probe(ConvEncoder(), store, labels, window_s=2.0, seeds=(0, 1),
                linear={"epochs": 30})
    assert res.attrs["modality"] == "eeg"
    assert set(res["model"].values) == {"pretrained linear", "random-init pretrained linear",
                                        "riemann_tangent", "log_bandpower"}
    bacc = res["mean"].sel(metric="balanced_accuracy")
    assert float(bacc.sel(model="riemann_tangent")) >= 0.9
    assert float(bacc.sel(model="log_bandpower")) >= 0.9
    assert np.isfinite(float(bacc.sel(model="pretrained linear")))


def test_braindecode_model_runs_through_the_probe(eeg_store):
    braindecode = pytest.importorskip("braindecode")
    store, labels = eeg_store
    model = braindecode.models.ShallowFBCSPNet(n_chans=8, n_outputs=4, n_times=200,
                                               final_conv_length="auto")
    res = probe(model, store, labels, window_s=2.0, seeds=(0,), baselines=[])
    assert np.isfinite(float(res["score"].sel(model="pretrained linear",
                                              metric="accuracy").values[0]))


# ---------------------------------------------------------------------------------- seeds
def test_several_seeds_give_mean_and_std(planted_store):
    store, labels = planted_store
    res = probe(None, store, labels, window_samples=N_FRAMES, seeds=(0, 1, 2),
                baselines=["fc_correlation"], fractions=(0.5, 0.25, 0.25))
    score = res["score"].sel(model="fc_correlation")  # (seed, metric)
    assert score.sizes == {"seed": 3, "metric": 4}
    np.testing.assert_allclose(res["mean"].sel(model="fc_correlation"),
                               score.mean("seed"))
    np.testing.assert_allclose(res["std"].sel(model="fc_correlation"),
                               score.std("seed", ddof=1))


# ---------------------------------------------------------------------------------- fine-tuning
def test_layer_decay_gives_per_layer_learning_rates():
    model = _jepa(depth=3)
    net = FineTuneNet(model.encoder, 32, 2)
    groups = layer_decay_param_groups(net, lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    opt = torch.optim.AdamW(groups, lr=1e-3)
    lr_of, wd_of = {}, {}
    for g in opt.param_groups:
        for name in g["names"]:
            lr_of[name], wd_of[name] = g["lr"], g["weight_decay"]
    # L = 3 blocks: embeddings 0.75^4, block i 0.75^(3 - i), norms and head 1
    expected = {"encoder.patch_embed.weight": 0.75 ** 4,
                "encoder.blocks.0.attn.qkv.weight": 0.75 ** 3,
                "encoder.blocks.1.mlp.fc1.weight": 0.75 ** 2,
                "encoder.blocks.2.norm1.weight": 0.75,
                "encoder.norm.weight": 1.0, "fc_norm.bias": 1.0, "head.weight": 1.0}
    for name, scale in expected.items():
        assert lr_of[name] == pytest.approx(1e-3 * scale), name
    assert wd_of["encoder.blocks.0.attn.qkv.bias"] == 0.0
    assert wd_of["encoder.blocks.0.attn.qkv.weight"] == 0.05
    assert set(lr_of) == {n for n, _ in net.named_parameters()}  # nothing left out
    assert len({round(v, 12) for v in lr_of.values()}) == 5  # 5 distinct rates for L=3


def test_drop_path_is_applied_linearly():
    model = _jepa(depth=3)
    rates = set_drop_path(model.encoder, 0.1)
    assert rates == pytest.approx([0.0, 0.05, 0.1])
    assert isinstance(model.encoder.blocks[0].drop_path, nn.Identity)
    assert isinstance(model.encoder.blocks[2].drop_path, DropPath)
    assert model.encoder.blocks[2].drop_path.p == pytest.approx(0.1)


# ---------------------------------------------------------------------------------- embed
def test_embed_returns_labelled_xarray(planted_store):
    store, labels = planted_store
    model = _jepa()
    da = embed(model, store, labels=labels)
    assert da.dims == ("window", "feature") and da.shape == (48, 32)
    assert set(da.coords) >= {"recording", "subject", "start", "label"}
    sub = str(da["subject"].values[0])
    assert int(da["label"].values[0]) == labels[sub]
    # values: the model's own token mean on the same windows
    from neurofm.data import WindowDataset

    ds = WindowDataset(store, split=None, window_samples=N_FRAMES)
    x = torch.stack([ds[i]["signal"] for i in range(3)])
    with torch.no_grad():
        ref = model.encode(x).mean(dim=1).numpy()
    np.testing.assert_allclose(da.values[:3], ref, rtol=1e-5, atol=1e-6)
    per_rec = embed(model, store, per="recording")
    assert per_rec.dims == ("recording", "feature") and per_rec.shape == (16, 32)
    rec = str(per_rec["recording"].values[0])
    np.testing.assert_allclose(per_rec.sel(recording=rec).values,
                               da.values[da["recording"].values == rec].mean(axis=0),
                               rtol=1e-5)
    with pytest.raises(NeurofmError, match="pool"):
        embed(model, store, pool="median")


def test_probe_encoder_linear_and_finetune_with_report(planted_store, tmp_path):
    store, labels = planted_store
    res = probe(_jepa(), store, labels, modes=("linear", "finetune"), seeds=(0, 1),
                baselines=["fc_correlation"], linear={"epochs": 20},
                finetune={"epochs": 2, "lr": 1e-3})
    assert list(res["model"].values) == [
        "pretrained linear", "random-init pretrained linear", "pretrained finetune",
        "random-init pretrained finetune", "fc_correlation"]
    assert list(res["kind"].values) == ["encoder", "random", "encoder", "random", "baseline"]
    assert np.isfinite(res["score"].sel(metric="accuracy").values).all()
    lines = json.loads(res.attrs["verdict"])
    # an untrained encoder against the FC baseline (1.0 here): said plainly
    assert any(line.startswith("pretrained linear") and "does NOT beat fc_correlation" in line
               for line in lines)
    table = to_markdown(res)
    assert "| fc_correlation | baseline |" in table and "does NOT beat" in table
    paths = save_report(res, tmp_path / "report")
    for p in paths.values():
        assert (tmp_path / "report" / p.split("/")[-1]).stat().st_size > 0
    import xarray as xr

    back = xr.load_dataset(paths["results"])
    np.testing.assert_allclose(back["score"].values, res["score"].values)


def test_probe_errors(planted_store, tmp_path):
    store, labels = planted_store
    with pytest.raises(NeurofmError, match="unknown baselines"):
        probe(None, store, labels, window_samples=N_FRAMES, baselines=["svm"])
    with pytest.raises(DataError, match="no value"):
        probe(None, store, {"00": 0}, window_samples=N_FRAMES, baselines=["fc_correlation"])
    with pytest.raises(NeurofmError, match="modes"):
        probe(_jepa(), store, labels, modes=("knn",))


# ---------------------------------------------------------------------------------- CLI
def test_probe_command_with_a_checkpoint(planted_store, tmp_path, capsys):
    """`neurofm probe` on a Brain-JEPA Lightning checkpoint and a labels table."""
    pl = pytest.importorskip("lightning.pytorch")
    from neurofm.cli import main
    from neurofm.evals import embed, load_pretrained
    from neurofm.models import export_encoder, load_encoder
    from neurofm.training import JEPAModule

    store, labels = planted_store
    module = JEPAModule(_jepa(), gradients=None)
    trainer = pl.Trainer(accelerator="cpu", max_steps=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "jepa.ckpt")
    # the checkpoint's target encoder, as export_encoder / load_encoder give it
    ref = load_encoder(export_encoder(tmp_path / "jepa.ckpt", tmp_path / "enc.pt"))
    enc = load_pretrained(tmp_path / "jepa.ckpt")
    a, b = embed(enc, store), embed(ref, store)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)
    with open(tmp_path / "participants.tsv", "w") as fid:
        fid.write("participant_id\tgroup\n")
        fid.writelines(f"sub-{s}\t{g}\n" for s, g in labels.items())
    out = tmp_path / "probe"
    status = main(["probe", str(store.path), "--labels", str(tmp_path / "participants.tsv"),
                   "--label-column", "group", "--encoder", f"jepa={tmp_path / 'jepa.ckpt'}",
                   "--seeds", "0", "1", "--linear-epochs", "10", "--baselines", "fc_tangent",
                   "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| jepa linear | encoder |" in printed and "| fc_tangent | baseline |" in printed
    assert (out / "report.html").stat().st_size > 0 and (out / "scores.png").exists()
    status = main(["probe", str(store.path), "--labels", str(tmp_path / "participants.tsv"),
                   "--label-column", "sex", "--out", str(out)])
    assert status == 2
    assert "no column 'sex'" in capsys.readouterr().err


def test_oas_covariances_match_sklearn():
    from sklearn.covariance import OAS

    from neurofm.evals.baselines import oas_covariances

    X = np.random.default_rng(0).standard_normal((3, 5, 40))
    covs = oas_covariances(X)
    for x, c in zip(X, covs):
        np.testing.assert_allclose(c, OAS().fit(x.T).covariance_, rtol=1e-10)


def test_regression_task_and_single_subject_store(planted_store, tmp_path):
    store, labels = planted_store
    rng = np.random.default_rng(0)
    # a continuous target driven by the planted group: ridge on FC recovers it
    target = {s: float(g) * 2.0 + 0.1 * rng.standard_normal() for s, g in labels.items()}
    res = probe(None, store, target, window_samples=N_FRAMES, seeds=(0, 1),
                baselines=["fc_correlation"])
    assert res.attrs["task"] == "regression"
    assert list(res["metric"].values) == ["mse", "pearson_r"]
    assert float(res["mean"].sel(model="fc_correlation", metric="pearson_r")) > 0.8
    from neurofm.store import write_store

    from .conftest import planted_fmri

    recs = planted_fmri(n_subjects=2, n_times=96)
    for rec, _ in recs:
        rec.attrs["subject"] = "01"  # two runs of one subject: no subject-disjoint split
    one = write_store([r for r, _ in recs], tmp_path / "one")
    with pytest.raises(DataError, match="at least 2 subjects"):
        probe(None, one, {"01": 0}, window_samples=N_FRAMES, baselines=["fc_correlation"])


def test_verdicts_say_plainly_when_the_encoder_does_not_win():
    import xarray as xr

    from neurofm.evals import verdicts

    scores = np.array([[[0.4], [0.6], [0.5]],    # encoder: mean 0.5
                       [[0.6], [0.4], [0.5]],    # its random init: mean 0.5 (other order)
                       [[0.9], [1.0], [0.95]],   # baseline
                       [[0.45], [0.55], [0.2]]])  # a second baseline, below
    res = xr.Dataset({"score": (("model", "seed", "metric"), scores),
                      "mean": (("model", "metric"), scores.mean(1)),
                      "std": (("model", "metric"), scores.std(1, ddof=1))},
                     coords={"model": ["enc linear", "random-init enc linear", "fc", "low"],
                             "kind": ("model", ["encoder", "random", "baseline", "baseline"]),
                             "metric": ["balanced_accuracy"]},
                     attrs={"primary_metric": "balanced_accuracy"})
    lines = verdicts(res)
    assert "does NOT beat random-init enc linear" in lines[0]  # equal means are no win
    assert "does NOT beat fc" in lines[1]
    assert "is above low" in lines[2] and "no clear win" in lines[2]
    res["score"][3] = [[0.1], [0.15], [0.12]]
    res["mean"][3] = res["score"][3].mean("seed")
    res["std"][3] = res["score"][3].std("seed", ddof=1)
    assert verdicts(res)[2].startswith("enc linear (0.500 ± 0.100 balanced_accuracy) beats low")


def test_label_table_with_bids_na_rows(tmp_path):
    """participants.tsv lists participants of other analyses with n/a: those rows are ignored."""
    from neurofm.errors import FormatError
    from neurofm.evals.cli import read_labels

    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\tgroup\tage\nsub-01\tn/a\t30\nsub-10\tA\t25\n"
                     "sub-11\tB\tn/a\nsub-12\t\t40\n")
    assert read_labels(table, "group") == {"10": "A", "11": "B"}
    assert read_labels(table, "age") == {"01": 30, "10": 25, "12": 40}
    table.write_text("participant_id\tgroup\nsub-01\tn/a\n")
    with pytest.raises(DataError, match="has no values"):
        read_labels(table, "group")
    with pytest.raises(FormatError, match="no column 'sex'"):
        read_labels(table, "sex")
