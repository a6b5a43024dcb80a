"""WindowDataset, collate, normalization and subject splits over a real store."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neurofm.data import (
    NormalizationStats,
    WindowDataset,
    collate,
    fit_normalization,
    split_by_subject,
)
from neurofm.errors import DataError, FormatError, NeurofmError, NeurofmWarning
from neurofm.schema import make_recording
from neurofm.store import write_store

SFREQ = 100.0


def _rec(subject, n_times, channels, *, seed, events=None, bad=None, modality="eeg",
         offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(channels), n_times)) * (1.0 + np.arange(len(channels)))[:, None]
    x += offset
    pos = {c: [0.01 * k, 0.02, 0.03] for k, c in enumerate(channels) if c != "C3"}
    return make_recording(x.astype(np.float32), channel=channels, sfreq=SFREQ,
                          modality=modality, subject=subject, task="rest", events=events,
                          bad=bad, ch_pos=pos)


CH_A = ["Fz", "Cz", "Pz", "C3"]
CH_B = ["Cz", "Pz", "Oz"]


@pytest.fixture
def store(tmp_path):
    recs = [
        _rec("01", 1050, CH_A, seed=1, events=[(1.0, 0, "left"), (5.0, 0, "right"),
                                              (10.3, 0, "left")], bad=["Pz"]),
        _rec("01", 800, CH_A, seed=2, events=[(2.0, 0, "right")]),
        _rec("02", 600, CH_B, seed=3, offset=5.0),
        _rec("03", 90, CH_B, seed=4),  # shorter than one 1-s window
        _rec("04", 700, CH_A, seed=5, events=[(3.0, 0, "left")]),
    ]
    splits = ["train", "train", "train", "test", "val"]
    return write_store(recs, tmp_path / "store", splits=splits)


def _expected_grid(n_times, length, stride):
    return list(range(0, n_times - length + 1, stride))


def test_index_covers_grid_exactly_and_reads_no_signal(store, monkeypatch):
    calls = []
    monkeypatch.setattr(type(store), "read_window",
                        lambda self, *a, **k: calls.append(a) or (_ for _ in ()).throw(
                            AssertionError("signal read at construction")))
    with pytest.warns(NeurofmWarning, match="shorter than one window"):
        ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split=["train", "test"])
    assert calls == []
    ids = store.manifest.set_index("id")
    expected = []
    for rec_id in store.ids:
        row = ids.loc[rec_id]
        if row["split"] not in ("train", "test") or row["n_times"] < 100:
            continue
        expected += [(rec_id, s, 100) for s in _expected_grid(int(row["n_times"]), 100, 50)]
    got = [ds.window_info(i) for i in range(len(ds))]
    assert got == expected
    # never crosses a recording boundary
    n_times = ids["n_times"].to_dict()
    assert all(s + n <= n_times[r] for r, s, n in got)


def test_getitem_values_equal_store_and_metadata(store):
    ds = WindowDataset(store, window_samples=100, split=["train", "val"])
    for i in (0, 5, len(ds) - 1):
        rec_id, start, n = ds.window_info(i)
        sample = ds[i]
        rec = store[rec_id]
        np.testing.assert_array_equal(sample["signal"].numpy(),
                                      rec["signal"].values[:, start:start + n])
        assert sample["signal"].dtype == torch.float32
        assert sample["channel"] == [str(c) for c in rec["channel"].values]
        assert sample["channel_mask"].tolist() == (~rec["bad"].values).tolist()
        pos = rec["ch_pos"].values
        known = np.isfinite(pos).all(axis=1)
        assert sample["ch_pos_mask"].tolist() == known.tolist()
        np.testing.assert_allclose(sample["ch_pos"].numpy(), np.where(known[:, None], pos, 0))
        assert sample["recording"] == rec_id and sample["sfreq"] == SFREQ
        assert sample["subject"] == rec.attrs["subject"]


def test_bad_channel_masked(store):
    ds = WindowDataset(store, window_s=1.0, split="train")
    sample = ds[0]
    assert sample["channel"][2] == "Pz" and not sample["channel_mask"][2]
    assert sample["channel_mask"][[0, 1, 3]].all()


def test_splits_and_modalities(store):
    val = WindowDataset(store, window_s=1.0, split="val")
    assert {val.window_info(i)[0] for i in range(len(val))} == {store.ids[4]}
    both = WindowDataset(store, window_s=1.0, split=["train", "val"], modalities="eeg")
    assert len(both) > len(val)
    none = WindowDataset(store, window_s=1.0, split="train", modalities=["fmri"])
    assert len(none) == 0


def test_random_crop_deterministic_per_epoch(store):
    a = WindowDataset(store, window_s=1.0, split="train", random_crop=True, seed=3)
    b = WindowDataset(store, window_s=1.0, split="train", random_crop=True, seed=3)
    assert len(a) == 3  # one crop per (long enough) recording
    starts0 = [a.window_info(i)[1] for i in range(len(a))]
    assert starts0 == [b.window_info(i)[1] for i in range(len(b))]
    torch.testing.assert_close(a[1]["signal"], b[1]["signal"])
    a.set_epoch(1)
    starts1 = [a.window_info(i)[1] for i in range(len(a))]
    assert starts1 != starts0
    b.set_epoch(1)
    assert starts1 == [b.window_info(i)[1] for i in range(len(b))]
    a.set_epoch(0)
    assert [a.window_info(i)[1] for i in range(len(a))] == starts0
    for i in range(len(a)):
        rec_id, start, n = a.window_info(i)
        assert start >= 0 and start + n <= int(store.manifest.set_index("id").loc[rec_id,
                                                                               "n_times"])


def test_dataloader_workers_equal_single_process(store):
    from torch.utils.data import DataLoader

    ds = WindowDataset(store, window_s=1.0, stride_s=0.25, split="train", random_crop=False)
    ref = list(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate))
    par = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate,
                          multiprocessing_context="spawn"))
    assert len(ref) == len(par)
    for x, y in zip(ref, par):
        torch.testing.assert_close(x["signal"], y["signal"], rtol=0, atol=0)
        assert x["recording"] == y["recording"]
        assert torch.equal(x["channel_mask"], y["channel_mask"])
        assert torch.equal(x["start"], y["start"])


def test_set_epoch_reaches_persistent_workers(store):
    from torch.utils.data import DataLoader

    ds = WindowDataset(store, window_s=1.0, split="train", random_crop=True, seed=0)
    loader = DataLoader(ds, batch_size=8, num_workers=1, collate_fn=collate,
                        persistent_workers=True)
    for epoch in range(3):
        ds.set_epoch(epoch)
        batch = next(iter(loader))
        expected = [ds.window_info(i)[1] for i in range(len(ds))]
        assert batch["start"].tolist() == expected


def test_collate_pads_mixed_channel_sets(store):
    ds = WindowDataset(store, window_s=1.0, split="train")
    first_b = next(i for i in range(len(ds)) if ds.window_info(i)[0] == store.ids[2])
    batch = collate([ds[0], ds[first_b]])
    assert batch["signal"].shape == (2, 4, 100)
    assert batch["channel_mask"][1].tolist() == [True, True, True, False]
    assert batch["channel"][1] == CH_B + [""]
    torch.testing.assert_close(batch["signal"][1, :3], ds[first_b]["signal"])
    assert torch.count_nonzero(batch["signal"][1, 3]) == 0


def test_fixed_channel_list_reorders_and_masks(store):
    with pytest.warns(NeurofmWarning, match="lack some of the requested channels"):
        ds = WindowDataset(store, window_s=1.0, split="train", channels=["Oz", "Cz", "Fz"])
    i = 0
    rec_id, start, n = ds.window_info(i)
    sample = ds[i]
    rec = store[rec_id]
    names = [str(c) for c in rec["channel"].values]
    assert sample["channel"] == ["Oz", "Cz", "Fz"]
    assert sample["channel_mask"].tolist() == [False, True, True]
    x = rec["signal"].values[:, start:start + n]
    np.testing.assert_array_equal(sample["signal"][1].numpy(), x[names.index("Cz")])
    np.testing.assert_array_equal(sample["signal"][2].numpy(), x[names.index("Fz")])
    assert not sample["signal"][0].any()


def test_intersection(store):
    ds = WindowDataset(store, window_s=1.0, split="train", channels="intersection")
    for i in (0, len(ds) - 1):
        assert ds[i]["channel"] == ["Cz", "Pz"]


def test_event_locked_windows(store):
    with pytest.warns(NeurofmWarning) as rec:
        ds = WindowDataset(store, events={"left": 0, "right": 1}, tmin=-0.2, tmax=0.8,
                           split=None)
    messages = " ".join(str(w.message) for w in rec)
    assert "without any of the events" in messages  # the two CH_B recordings
    assert "beyond their recording" in messages  # left at 10.3 s of a 10.5 s recording
    got = [(ds.window_info(i), ds[i]["label"]) for i in range(len(ds))]
    ids = store.ids
    assert got == [((ids[0], 80, 100), 0), ((ids[0], 480, 100), 1), ((ids[1], 180, 100), 1),
                   ((ids[4], 280, 100), 0)]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["label"].tolist() == [0, 1, 1, 0]


def test_normalization_fitted_on_train_only_and_json_roundtrip(store, tmp_path):
    train = WindowDataset(store, window_s=1.0, split="train", channels=None)
    with pytest.raises(NeurofmError, match="train split only"):
        fit_normalization(WindowDataset(store, window_s=1.0, split=["train", "val"]))
    stats = fit_normalization(train, method="zscore", max_windows=10_000)
    # direct computation over exactly the train windows
    pooled = {}
    for i in range(len(train)):
        s = train[i]
        for name, values in zip(s["channel"], s["signal"].numpy()):
            pooled.setdefault(name, []).append(values.astype(np.float64))
    for name, chunks in pooled.items():
        v = np.concatenate(chunks)
        assert stats.center[name] == pytest.approx(v.mean(), rel=1e-9)
        assert stats.scale[name] == pytest.approx(v.std(), rel=1e-9)
    path = stats.save(tmp_path / "norm.json")
    loaded = NormalizationStats.load(path)
    assert loaded == stats
    val = WindowDataset(store, window_s=1.0, split="val", normalization=path)
    raw = WindowDataset(store, window_s=1.0, split="val")
    x, y = val[0], raw[0]
    c = np.array([stats.center[n] for n in x["channel"]], dtype=np.float32)
    s = np.array([stats.scale[n] for n in x["channel"]], dtype=np.float32)
    np.testing.assert_allclose(x["signal"].numpy(), (y["signal"].numpy() - c[:, None])
                               / s[:, None], rtol=1e-6)
    with pytest.raises(FormatError, match="not neurofm normalization"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        NormalizationStats.load(bad)


def test_robust_and_subject_means(store):
    train = WindowDataset(store, window_s=1.0, split="train", channels="intersection")
    robust = fit_normalization(train, method="robust", max_windows=10_000)
    v = np.concatenate([train[i]["signal"].numpy()[0] for i in range(len(train))])
    q25, q50, q75 = np.percentile(v.astype(np.float64), [25, 50, 75])
    assert robust.center["Cz"] == pytest.approx(q50)
    assert robust.scale["Cz"] == pytest.approx(q75 - q25)
    with pytest.warns(NeurofmWarning, match=r"scale is 0 for channel\(s\) \['Fz', 'C3', 'Oz'\]"):
        # Fz, C3 and Oz each belong to one training subject: no spread across subjects
        jepa = fit_normalization(train, method="subject_means", max_windows=10_000)
    # each subject's temporal mean of Cz over its windows, then median / IQR across subjects
    means = {}
    for i in range(len(train)):
        s = train[i]
        means.setdefault(s["subject"], []).append(s["signal"].numpy()[0].astype(np.float64))
    subject_means = [np.concatenate(m).mean() for m in means.values()]
    q25, q50, q75 = np.percentile(subject_means, [25, 50, 75])
    assert jepa.center["Cz"] == pytest.approx(q50)
    assert jepa.scale["Cz"] == pytest.approx(q75 - q25)


def test_per_recording_normalization(store):
    train = WindowDataset(store, window_s=1.0, split="train")
    stats = fit_normalization(train, per="recording", max_windows=10_000)
    assert set(stats.recordings) == {store.ids[0], store.ids[1], store.ids[2]}
    val = WindowDataset(store, window_s=1.0, split="val", normalization=stats)
    x = np.concatenate([val[i]["signal"].numpy() for i in range(len(val))], axis=1)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=1), 1, rtol=1e-4)


def test_split_by_subject_is_disjoint(store):
    splits = split_by_subject(store, (0.5, 0.25, 0.25), seed=1)
    manifest = store.refresh().manifest
    assert dict(zip(manifest["id"], manifest["split"])) == splits
    by_subject = manifest.groupby("subject")["split"].nunique()
    assert (by_subject == 1).all()
    assert sorted(set(splits.values())) == ["test", "train", "val"]
    assert splits == split_by_subject(store, (0.5, 0.25, 0.25), seed=1)


def test_bad_arguments(store):
    with pytest.raises(NeurofmError, match="exactly one"):
        WindowDataset(store, window_s=1.0, window_samples=100)
    with pytest.raises(NeurofmError, match="window_s must be > 0"):
        WindowDataset(store, window_s=-1.0)
    with pytest.raises(NeurofmError, match="channels"):
        WindowDataset(store, window_s=1.0, channels="all")
    with pytest.raises(NeurofmError, match="events"):
        WindowDataset(store, window_s=1.0, events=["left"])
    ds = WindowDataset(store, window_s=1.0)
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(NeurofmError, match="index must be an integer"):
        ds[1.5]
    with pytest.raises(DataError, match="different lengths"):
        a = ds[0]
        b = dict(a, signal=a["signal"][:, :50])
        collate([a, b])


def test_no_warning_on_clean_selection(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WindowDataset(store, window_s=1.0, split="val")


def test_samples_do_not_alias_each_other_or_the_store(store):
    ds = WindowDataset(store, window_s=1.0, split="train", channels=["Cz", "Fz", "Oz"])
    first = ds[0]
    expected = {k: first[k].clone() for k in ("signal", "channel_mask", "ch_pos", "ch_pos_mask")}
    for key in expected:
        first[key].zero_() if key != "channel_mask" and key != "ch_pos_mask" else \
            first[key].logical_not_()
    again = ds[0]
    for key, value in expected.items():
        assert torch.equal(again[key], value), key


def _assert_same_batch(a, b):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("options", [
    {},                                                        # one buffer, no copy
    {"channels": ["Cz", "Fz", "Oz"]},                          # channel mapping
    {"normalization": "fit"},                                  # normalized windows
    {"transform": "scale"},                                    # a user transform
    {"split": None},                                           # mixed channel sets: padding
])
def test_batched_reads_equal_single_reads(store, options):
    """DataLoader asks ``__getitems__``; it must give exactly ``[ds[i] for i in indices]``."""
    options = dict(options)
    if options.get("normalization") == "fit":
        options["normalization"] = fit_normalization(
            WindowDataset(store, window_s=1.0, split="train"), method="zscore")
    if options.get("transform") == "scale":
        def scale(sample):
            return {**sample, "signal": sample["signal"] * 2.0}
        options["transform"] = scale
    options.setdefault("split", "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeurofmWarning)  # missing channels are reported
        ds = WindowDataset(store, window_s=1.0, stride_s=0.5, **options)
    indices = list(range(len(ds)))[::-1]
    batched = ds.__getitems__(indices)
    single = [ds[i] for i in indices]
    assert len(batched) == len(single)
    for x, y in zip(batched, single):
        _assert_same_batch(x, y)
    if len({s["signal"].shape for s in single}) == 1:
        _assert_same_batch(collate(batched), collate(single))


def test_batched_read_is_collated_without_another_copy(store):
    ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split="train")
    samples = ds.__getitems__([3, 0, 2])
    batch = collate(samples)
    # the batch is the buffer the windows were read into (rows are the samples' signals)
    assert batch["signal"].data_ptr() == samples[0]["signal"].data_ptr()
    for k, i in enumerate([3, 0, 2]):
        rec, start, n = ds.window_info(i)
        np.testing.assert_array_equal(batch["signal"][k].numpy(),
                                      ds._store_obj().read_window(rec, start, start + n))
    # rows of someone else's tensor, or rows out of order, are stacked (copied) instead
    reordered = collate([samples[1], samples[0], samples[2]])
    assert reordered["signal"].data_ptr() != batch["signal"].data_ptr()
    np.testing.assert_array_equal(reordered["signal"][0].numpy(), batch["signal"][1].numpy())


def test_batched_channel_tensors_are_fresh_and_collated_without_copy(store):
    """The batch's channel tensors are built once per batch: collate returns them as they
    are, and writing into a batch never reaches the dataset's cached layout."""
    ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split="train")
    # windows of the two CH_A recordings (one with a bad channel: different masks)
    n_ch = {i: len(ds[i]["channel"]) for i in range(len(ds))}
    indices = [i for i in range(len(ds)) if n_ch[i] == len(CH_A)][::-1]
    assert len({ds.window_info(i)[0] for i in indices}) == 2
    samples = ds.__getitems__(indices)
    assert samples[0]["signal"]._base is not None  # the one-buffer path
    batch = collate(samples)
    for key in ("channel_mask", "ch_pos", "ch_pos_mask"):
        assert batch[key].data_ptr() == samples[0][key].data_ptr()
    expected = [ds[i] for i in indices]
    for k, s in enumerate(expected):
        np.testing.assert_array_equal(batch["channel_mask"][k].numpy(),
                                      s["channel_mask"].numpy())
        np.testing.assert_array_equal(batch["ch_pos"][k].numpy(), s["ch_pos"].numpy())
    batch["channel_mask"].fill_(False)
    batch["ch_pos"].fill_(123.0)
    again = collate(ds.__getitems__(indices))
    for k, s in enumerate(expected):
        np.testing.assert_array_equal(again["channel_mask"][k].numpy(),
                                      s["channel_mask"].numpy())
        np.testing.assert_array_equal(again["ch_pos"][k].numpy(), s["ch_pos"].numpy())
    assert again["channel_mask"].any()


@pytest.mark.parametrize("options", [
    {"split": "train"},                                                   # two montages
    {"split": "train", "channels": ["Cz", "Fz", "Oz"]},                   # channel mapping
    {"split": ["train", "val"], "events": {"left": 0, "right": 1}, "tmin": -0.2,
     "tmax": 0.5},                                                        # labels
    {"split": "train", "random_crop": True},                              # drawn starts
])
def test_untouched_window_batch_collates_like_its_samples(store, options):
    """An untouched WindowBatch is collated from its batch tensors directly; the result must
    equal collating the very same samples one by one (and ``[ds[i] for i in indices]``)."""
    with warnings.catch_warnings():  # missing channels and events are reported
        warnings.filterwarnings("ignore", category=NeurofmWarning, message=r".*(lack some of "
                                r"the requested channels|without any of the events|beyond "
                                r"their recording)")
        ds = WindowDataset(store, window_s=None if "tmax" in options else 1.0, **options)
    n_ch = {i: len(ds[i]["channel"]) for i in range(len(ds))}
    indices = [i for i in range(len(ds)) if n_ch[i] == max(n_ch.values())][::-1]
    assert len({ds.window_info(i)[0] for i in indices}) >= 2
    fast = collate(ds.__getitems__(indices))
    batch = ds.__getitems__(indices)
    slow = collate(list(batch))  # every sample made, then collated
    _assert_same_batch(fast, slow)
    _assert_same_batch(fast, collate([ds[i] for i in indices]))
    assert list(fast) == list(slow)  # the same keys in the same order
    for key in ("sfreq", "start") + (("label",) if "events" in options else ()):
        assert fast[key].dtype == slow[key].dtype and fast[key].shape == (len(indices),)
    # the lists are the batch's own: editing one row changes nothing else
    fast["channel"][0][0] = "edited"
    again = collate(ds.__getitems__(indices))
    assert again["channel"][0][0] == slow["channel"][0][0] != "edited"
    assert fast["channel"][1][0] == slow["channel"][1][0]


def test_window_batch_is_a_sequence_of_samples_and_edits_are_collated(store):
    ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split="train")
    indices = [4, 0, 7]
    batch = ds.__getitems__(indices)
    assert len(batch) == 3 and "3 windows" in repr(batch)
    assert batch[-1] is batch[2] and batch[1:] == [batch[1], batch[2]]
    for k, i in enumerate(indices):
        _assert_same_batch(batch[k], ds[i])
    assert [s["start"] for s in batch] == [ds.window_info(i)[1] for i in indices]
    with pytest.raises(IndexError, match="out of range"):
        batch[3]
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        batch["signal"]
    assert batch[True] is batch[1]  # as a list
    # an accessed (and edited) sample is collated as it now is, not from the buffer
    batch[1]["signal"] = torch.zeros_like(batch[1]["signal"])
    batch[2]["start"] = -5
    out = collate(batch)
    assert torch.equal(out["signal"][1], torch.zeros_like(out["signal"][1]))
    np.testing.assert_array_equal(out["signal"][0].numpy(), ds[4]["signal"].numpy())
    assert out["start"].tolist() == [ds.window_info(4)[1], ds.window_info(0)[1], -5]


def test_batch_indices_are_checked_like_single_ones(store):
    ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split="train")
    n = len(ds)
    got = ds.__getitems__(np.array([-1, 0, n - 2]))
    assert [s["start"] for s in got] == [ds.window_info(i)[1] for i in (n - 1, 0, n - 2)]
    with pytest.raises(IndexError, match=f"window index {n} out of range"):
        ds.__getitems__([0, n])
    with pytest.raises(IndexError, match=f"window index {-n - 1} out of range"):
        ds.__getitems__([-n - 1])
    with pytest.raises(IndexError, match=f"window index {2**70} out of range"):
        ds.__getitems__([0, 2**70])
    with pytest.raises(NeurofmError, match=r"index must be an integer; got tensor\(1\)"):
        ds.__getitems__([0, torch.tensor(1)])
    with pytest.raises(NeurofmError, match="index must be an integer; got True"):
        ds.__getitems__([0, True])
    with pytest.raises(NeurofmError, match=r"index must be an integer; got 1\.0"):
        ds.__getitems__([0, 1.0])


def test_batch_channel_tensors_share_one_allocation(store):
    """The per-window tensors of a batch are views of one allocation (a DataLoader worker
    sends one shared-memory file for them, not six)."""
    ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split="train")
    batch = collate(ds.__getitems__([0, 1, 2]))
    ptrs = {batch[k].untyped_storage().data_ptr()
            for k in ("channel_mask", "ch_pos", "ch_pos_mask", "sfreq", "start")}
    assert len(ptrs) == 1
    assert batch["signal"].untyped_storage().data_ptr() not in ptrs  # the signal on its own
    for k in ("channel_mask", "ch_pos", "ch_pos_mask", "sfreq", "start"):
        assert batch[k].is_contiguous() and batch[k].data_ptr() % 8 == 0


def test_window_batch_behaves_like_the_list_of_its_samples(store):
    """What code does with the list of samples a DataLoader passes around still works."""
    import random

    from lightning.pytorch.utilities import move_data_to_device
    from torch.utils.data import default_collate

    ds = WindowDataset(store, window_s=1.0, stride_s=0.5, split="train")
    indices = [5, 1, 3]
    batch = ds.__getitems__(indices)
    single = [ds[i] for i in indices]
    # rebuilt by its type (Lightning's apply_to_collection, torch's pin_memory): a list
    moved = move_data_to_device(batch, "cpu")
    assert type(moved) is list and len(moved) == 3
    for x, y in zip(moved, single):
        _assert_same_batch(x, y)
    _assert_same_batch(default_collate(ds.__getitems__(indices)), default_collate(single))
    both = batch + [single[0]]
    assert type(both) is list and len(both) == 4 and both[3] is single[0]
    assert len([single[0]] + batch) == 4
    # changing the sequence: it is collated as it now is
    changed = ds.__getitems__(indices)
    changed.append(ds[0])
    changed[0] = ds[2]
    del changed[1]
    out = collate(changed)
    expected = collate([ds[2], single[2], ds[0]])
    _assert_same_batch(out, expected)
    shuffled = ds.__getitems__(indices)
    random.Random(0).shuffle(shuffled)
    starts = sorted(s["start"] for s in shuffled)
    assert starts == sorted(s["start"] for s in single)
    _assert_same_batch(collate(shuffled), collate(list(shuffled)))


def test_getitems_always_returns_a_window_batch(store):
    def scale(sample):
        return {**sample, "signal": sample["signal"] * 2.0}

    with pytest.warns(NeurofmWarning, match="shorter than one window"):
        mixed = WindowDataset(store, window_s=1.0, stride_s=0.5, split=None)
    n_ch = {len(mixed[i]["channel"]) for i in range(len(mixed))}
    assert len(n_ch) > 1
    for ds, indices in ((mixed, list(range(len(mixed)))),  # padding: read one by one
                        (WindowDataset(store, window_s=1.0, split="train", transform=scale),
                         [0, 1]),
                        (WindowDataset(store, window_s=1.0, split="train"), [])):
        got = ds.__getitems__(indices)
        assert type(got).__name__ == "WindowBatch" and len(got) == len(indices)
        for x, i in zip(got, indices):
            _assert_same_batch(x, ds[i])
