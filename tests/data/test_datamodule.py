"""BrainDataModule: splits, normalization fitted on train and kept in checkpoints, samplers."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from neurofm.data import NormalizationStats, WindowDataset, fit_normalization
from neurofm.errors import NeurofmError
from neurofm.schema import make_recording
from neurofm.store import write_store
from neurofm.training import BrainDataModule


@pytest.fixture
def store(tmp_path):
    recs = []
    for k, subject in enumerate(["01", "02", "03", "04"]):
        rng = np.random.default_rng(k)
        x = rng.standard_normal((3, 2000)) * (k + 1) + 10 * k
        recs.append(make_recording(x.astype(np.float32), channel=["A", "B", "C"], sfreq=100.0,
                                   modality="eeg", subject=subject))
    return write_store(recs, tmp_path / "store", splits=["train", "train", "val", "test"])


class _Mean(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["signal"].detach().clone())
        return self.lin(batch["signal"].mean(-1)).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.lin(batch["signal"].mean(-1)).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_setup_splits_and_normalization(store):
    dm = BrainDataModule(store, window_s=1.0, batch_size=4, normalization="zscore")
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"}
    train_ids = {dm.datasets["train"].window_info(i)[0] for i in range(len(dm.datasets["train"]))}
    assert train_ids == set(store.ids[:2])
    ref = fit_normalization(WindowDataset(store, window_s=1.0, split="train"))
    assert dm.normalization_stats == ref
    batch = next(iter(dm.val_dataloader()))
    raw = WindowDataset(store, window_s=1.0, split="val")
    x = raw[0]["signal"].numpy()
    c, s = ref.vectors(["A", "B", "C"])
    np.testing.assert_allclose(batch["signal"][0].numpy(), (x - c[:, None]) / s[:, None],
                               rtol=1e-6)


def test_fit_checkpoint_holds_statistics(store, tmp_path):
    dm = BrainDataModule(store, window_s=1.0, batch_size=8, normalization="robust",
                         random_crop=True, seed=1)
    model = _Mean()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    # two recordings, one random crop each per epoch; crops differ between the two epochs
    assert len(model.seen) == 2
    assert not torch.equal(model.seen[0].sort(0).values, model.seen[1].sort(0).values)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    state = ckpt["BrainDataModule"]
    assert NormalizationStats.from_dict(state["normalization"]) == dm.normalization_stats
    # a new data module restored from the checkpoint uses those statistics, not a refit
    dm2 = BrainDataModule(store, window_s=1.0, batch_size=8, normalization=None)
    dm2.setup("fit")
    dm2.load_state_dict(state)
    assert dm2.datasets["val"].normalization == dm.normalization_stats


def test_samplers_partition_across_ranks(store):
    dm = BrainDataModule(store, window_s=0.5, batch_size=4)
    dm.setup("fit")
    seen = []
    for rank in (0, 1):
        dm._replicas = lambda rank=rank: (2, rank)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(3)
        seen.append(list(loader.sampler))
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(len(dm.datasets["train"])))


def test_bad_arguments(store):
    with pytest.raises(NeurofmError, match="batch_size"):
        BrainDataModule(store, window_s=1.0, batch_size=0)
    with pytest.raises(NeurofmError, match="persistent_workers"):
        BrainDataModule(store, window_s=1.0, persistent_workers=True)
    with pytest.raises(NeurofmError, match="normalization"):
        BrainDataModule(store, window_s=1.0, normalization="zcore")
    with pytest.raises(NeurofmError, match="setup"):
        BrainDataModule(store, window_s=1.0).train_dataloader()
