"""Helpers of the pipeline tests (a uniquely named module: conftest names collide)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "pipelines" / "config"


def example_config(name, sample_root, out_dir, **overrides):
    """An example config of pipelines/config pointed at ``sample_root`` and ``out_dir``."""
    with open(CONFIGS / f"{name}_example.yaml") as fid:
        cfg = yaml.safe_load(fid)
    cfg = copy.deepcopy(cfg)
    cfg["bids_root"] = str(sample_root)
    cfg["out_dir"] = str(out_dir)
    if cfg.get("fmri", {}).get("labels"):
        cfg["fmri"]["labels"] = str(Path(sample_root) / "derivatives" / "atlas" / "sub-06"
                                    / "anat" / "sub-06_desc-grid12_dseg.tsv")
    cfg.update(overrides)
    return cfg


def write_config(cfg, path):
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg))
    return path
