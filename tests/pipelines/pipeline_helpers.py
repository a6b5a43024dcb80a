"""Helpers of the pipeline tests (a uniquely named module: conftest names collide)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "pipelines" / "config"


def example_config(name, sample_root, out_dir, **overrides):
    """An example config of pipelines/config pointed at ``sample_root`` and ``out_dir``."""
    with open(CONFIGS / f"{name}_example.yaml") as fid:
        cfg = yaml.safe_load(fid)
    cfg["bids_root"] = str(sample_root)
    cfg["out_dir"] = str(out_dir)
    cfg.update(overrides)
    return cfg


def write_config(cfg, path):
    path = Path(path)
    path.write_text(yaml.safe_dump(cfg))
    return path
