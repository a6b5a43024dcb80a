"""``neurofm fit | validate`` through the Lightning CLI with the shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from neurofm.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def _checkpoints(root):
    return sorted(Path(root).rglob("*.ckpt"))


def _check_metadata(ckpt_path, store_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    meta = ckpt["neurofm"]
    for key in ("model_config", "normalization", "splits", "store", "store_config_hash",
                "seed", "versions", "gradients", "model_class"):
        assert key in meta, key
    assert meta["model_class"] == "neurofm.models.brainjepa.BrainJEPA"
    assert meta["seed"] == 0
    assert meta["normalization"]["format"] == "neurofm-normalization"
    assert meta["store"] == str(store_path)
    g = torch.tensor(meta["gradients"])
    assert g.shape[0] == meta["model_config"]["n_rois"] and torch.any(g != 0)
    assert meta["versions"]["neurofm"] and meta["versions"]["lightning"]
    return ckpt, meta


def test_fit_then_validate_from_the_cli(fmri_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["-c", str(CONFIGS / "brainjepa.yaml"), "-c",
              str(CONFIGS / "trainer" / "cpu_debug.yaml"),
              "--data.init_args.store", fmri_store.path,
              "--data.init_args.window_samples", "48", "--data.init_args.num_workers", "0",
              "--data.init_args.batch_size", "4", "--data.init_args.normalization", "robust",
              "--data.init_args.collate.init_args.n_rois", "40",
              "--data.init_args.collate.init_args.n_time_patches", "3",
              "--model.init_args.model.init_args.n_rois", "40",
              "--model.init_args.model.init_args.n_frames", "48",
              "--model.init_args.model.init_args.size", "small",
              "--model.init_args.model.init_args.embed_dim", "32",
              "--model.init_args.model.init_args.depth", "1",
              "--model.init_args.model.init_args.num_heads", "2",
              "--model.init_args.model.init_args.predictor_embed_dim", "32",
              "--model.init_args.model.init_args.predictor_depth", "1",
              "--model.init_args.model.init_args.n_gradients", "4",
              "--trainer.default_root_dir", "runs"]
    assert main(["fit", *common, "--trainer.max_epochs", "1"]) == 0
    ckpts = _checkpoints("runs")
    last = [c for c in ckpts if c.name == "last.ckpt"]
    assert last, ckpts
    _, meta = _check_metadata(last[0], fmri_store.path)
    assert meta["splits"]["train"] == fmri_store.ids[:6]
    assert meta["model_config"]["n_rois"] == 40
    # the merged config is saved next to the logs
    assert list(Path("runs").rglob("config.yaml"))
    assert main(["validate", *common, "--ckpt_path", str(last[0])]) == 0


def test_print_config_and_bad_override(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", str(CONFIGS / "brainjepa.yaml"), "--print_config"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "neurofm.models.BrainJEPA" in printed and "n_rois: 450" in printed
    status = main(["fit", "-c", str(CONFIGS / "brainjepa.yaml"),
                   "--model.init_args.model.init_args.size", "gigantic"])
    assert status == 2
    assert "size must be one of ['base', 'large', 'small']; got 'gigantic'" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_fit_on_the_fmri_pipeline_store(tmp_path, monkeypatch):
    """The issue's end-to-end check: sample data -> fMRI pipeline -> neurofm fit (cpu_debug)."""
    from neurofm.datasets import make_sample_data

    monkeypatch.chdir(tmp_path)
    make_sample_data("datasets/sample")
    assert main(["preprocess", str(REPO / "pipelines" / "config" / "fmri_example.yaml"),
                 "--cores", "2"]) == 0
    store = Path("out/fmri_example/store")
    config_hash = json.loads((store / "pipeline.json").read_text())["config_hash"]
    args = ["-c", str(CONFIGS / "brainjepa.yaml"), "-c",
            str(CONFIGS / "data" / "fmri_example.yaml"), "-c",
            str(CONFIGS / "trainer" / "cpu_debug.yaml")]
    assert main(["fit", *args]) == 0
    last = next(c for c in _checkpoints("runs/cpu_debug") if c.name == "last.ckpt")
    _, meta = _check_metadata(last, "out/fmri_example/store")
    assert meta["store_config_hash"] == config_hash
    # the generated cohort: 20 subjects split 12 / 4 / 4 by subject, both runs together
    splits = json.loads((store / "pipeline.json").read_text())["splits"]
    assert sorted(meta["splits"]["train"]) == sorted(k for k, v in splits.items()
                                                     if v == "train")
    train_subjects = {k.split("_")[0] for k in meta["splits"]["train"]}
    assert len(meta["splits"]["train"]) == 24 and len(train_subjects) == 12
    assert meta["normalization"]["method"] == "subject_means"
    assert main(["validate", *args, "--ckpt_path", str(last)]) == 0
    # neurofm probe on the example store: 20 subjects, planted groups (phenotype table)
    import xarray as xr

    assert main(["probe", str(store), "--labels", "datasets/sample/phenotype/fmri_cohort.tsv",
                 "--label-column", "group", "--encoder", f"brainjepa={last}",
                 "--window-samples", "32", "--seeds", "0", "1", "--out", "probe_out"]) == 0
    res = xr.open_dataset("probe_out/results.nc")
    assert res.attrs["n_subjects"] == 20 and res.attrs["task"] == "classification"
    assert {"brainjepa linear", "fc_correlation"} <= set(res["model"].values.tolist())
    for seed in (0, 1):  # subject-disjoint splits
        split = res["split"].sel(seed=seed).to_series()
        assert sorted(split.value_counts().to_dict().items()) == [("test", 4), ("train", 12),
                                                                  ("val", 4)]
    # the connectivity baseline reads the planted coupling difference (measured 0.89 on a
    # store of the same runs without the band-pass)
    acc = res["mean"].sel(model="fc_correlation", metric="balanced_accuracy")
    assert float(acc) >= 0.75
