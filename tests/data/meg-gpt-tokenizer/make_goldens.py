"""Produce ``goldens.npz`` by running the reference EphysTokenizer on seeded inputs.

Run in a scratch environment that has the reference package importable (NOT the neurofm
environment; see README.md in this folder)::

    python tests/data/meg-gpt-tokenizer/make_goldens.py --ephys-tokenizer /path/to/EphysTokenizer

The inputs are generated here with a fixed seed and stored beside the reference outputs, so
the neurofm tests compare against exactly what the reference saw.

Stored arrays (``<case>`` is one of the names in ``CASES``):

``<case>_x``         float32 (n_samples, n_channels): the input recording (time first, as the
                     reference takes it; the reference is given these values as float64)
``<case>_tokens``    int8 (n_samples, n_channels): ``tokenize_session(x, margin=0,
                     standardize=True, remap=True)``
``<case>_recon``     float32 (n_keep, n_channels): ``reconstruct_session(tokens)``, where
                     ``n_keep = (n_samples // 200) * 200`` (the reference crops the tail)
``decode_tokens``    int8 (600, 5): random refactored ids including 0 (the outlier id)
``decode_recon``     float32 (600, 5): ``reconstruct_session(decode_tokens)``
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261130

#: name -> (n_samples, n_channels); lengths chosen to hit one window, exact multiples and a
#: tail that forces the anchored last window.
CASES = {
    "osc_c52": (600, 52),
    "osc_c14": (537, 14),
    "osc_c3": (200, 3),
    "osc_c7": (1401, 7),
}


def make_input(rng, n_samples, n_channels, sfreq=250.0):
    """Oscillations (alpha/beta bursts) + 1/f-like noise with channel offsets and scales."""
    t = np.arange(n_samples) / sfreq
    x = np.zeros((n_samples, n_channels))
    for c in range(n_channels):
        f1 = rng.uniform(8, 12)
        f2 = rng.uniform(15, 30)
        env = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 6.3))
        x[:, c] = env * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 6.3))
        x[:, c] += 0.5 * np.sin(2 * np.pi * f2 * t + rng.uniform(0, 6.3))
        white = rng.standard_normal(n_samples)
        x[:, c] += 0.4 * np.cumsum(white) / np.sqrt(np.arange(1, n_samples + 1))  # slow drift
        x[:, c] += 0.3 * rng.standard_normal(n_samples)
        x[:, c] = x[:, c] * rng.uniform(0.5, 20.0) + rng.uniform(-5, 5)
    return x


def spkit_eeg():
    """spkit's bundled EEG (2048, 14) in uV, read without running arbitrary pickles."""
    import importlib.util

    spec = importlib.util.find_spec("spkit")
    path = Path(spec.origin).parent / "data" / "files" / "EEG16SecData.pkl"

    class _NumpyOnly(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith(("numpy", "builtins", "_codecs", "codecs")):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refusing {module}.{name}")

    with open(path, "rb") as fh:
        X, _ = _NumpyOnly(fh, encoding="latin1").load()
    return np.asarray(X, dtype=np.float64)


def load_reference(weights_dir, n_channels):
    from ephys_tokenizer.configs import get_config
    from ephys_tokenizer.models import EphysTokenizerModule
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(weights_dir / "config.yaml")
    cfg.model_config.n_channels = int(n_channels)  # weights do not depend on the channel count
    config = get_config(cfg.model_config)
    return EphysTokenizerModule.load_model(str(weights_dir), config=config)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ephys-tokenizer", required=True,
                        help="checkout of github.com/OHBA-analysis/EphysTokenizer")
    parser.add_argument("--out", default=str(HERE / "goldens.npz"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.ephys_tokenizer).resolve()))

    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    inputs = {name: make_input(rng, *shape) for name, shape in CASES.items()}
    inputs["spkit_eeg"] = spkit_eeg()
    # stored as float32; the reference sees exactly the stored values (as float64)
    inputs = {name: x.astype(np.float32).astype(np.float64) for name, x in inputs.items()}

    out = {}
    for name, x in inputs.items():
        model = load_reference(HERE, x.shape[1])
        tokens = model.tokenize_session(x, margin=0, standardize=True, remap=True, device="cpu")
        recon = model.reconstruct_session(tokens, device="cpu")
        out[f"{name}_x"] = x.astype(np.float32)
        out[f"{name}_tokens"] = np.asarray(tokens, dtype=np.int8)
        out[f"{name}_recon"] = np.asarray(recon, dtype=np.float32)
        print(f"{name}: x {x.shape} tokens {tokens.shape} recon {recon.shape} "
              f"ids used {np.unique(tokens).size}")

    model = load_reference(HERE, 5)
    n_ids = int(model.vocab["label_map"].max()) + 1
    dec_tokens = rng.integers(0, n_ids, size=(600, 5)).astype(np.int64)
    dec_tokens[::37, :] = 0  # the outlier id
    out["decode_tokens"] = dec_tokens.astype(np.int8)
    out["decode_recon"] = np.asarray(model.reconstruct_session(dec_tokens, device="cpu"),
                                     dtype=np.float32)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
