"""Pipeline configs: validation against ``config/schema.yaml`` and parameter fingerprints.

- :func:`load_config` validates a config against the workflow's ``config/schema.yaml`` (with
  :func:`snakemake.utils.validate`, which fills in the defaults) and checks what a schema
  cannot (one source of inputs, the modality has what it needs);
- :func:`stage_parameters` gathers the parameters of each stage (read, chain, store layout)
  and fingerprints them with :func:`config_hash`; the Snakefile and the handling of failed
  runs share it, so both agree on which outputs are current.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

from ..errors import FormatError, NeurofmError

__all__ = ["CHAIN_STEPS", "config_hash", "load_config", "stage_parameters"]

#: Config sections of the preprocessing chain, in the order they run.
CHAIN_STEPS = ("dff", "notch", "bandpass", "resample", "reference", "scale")


def _schema_path(snakefile):
    return Path(snakefile).resolve().parent / "config" / "schema.yaml"


def load_config(config, *, snakefile=None):
    """Validate a pipeline config and fill in its defaults.

    Parameters
    ----------
    config : str | os.PathLike | dict
        A YAML file or an already loaded mapping (not modified).
    snakefile : str | os.PathLike, optional
        The Snakefile whose ``config/schema.yaml`` applies (default
        :func:`neurofm.pipelines.default_snakefile`).

    Returns
    -------
    config : dict
        A validated copy with every default set.

    Raises
    ------
    NeurofmError
        Naming the config file, the offending key, what was expected and what was found.
    """
    import yaml

    source = "config"
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        path = Path(config)
        if not path.is_file():
            raise FormatError(f"{path}: pipeline config not found")
        try:
            with open(path) as fid:
                config = yaml.safe_load(fid)
        except yaml.YAMLError as err:
            raise FormatError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise NeurofmError(f"{source}: a pipeline config must be a mapping of keys to values; "
                           f"got {type(config).__name__}")
    if snakefile is None:
        from .run import default_snakefile

        snakefile = default_snakefile()
    cfg = copy.deepcopy(config)
    _validate_schema(cfg, _schema_path(snakefile), source)
    _check_semantics(cfg, source)
    return cfg


def _validate_schema(cfg, schema, source):
    import jsonschema
    import yaml

    # first a plain jsonschema pass for a precise message (path, expected, found) ...
    with open(schema) as fid:
        spec = yaml.safe_load(fid)
    validator = jsonschema.Draft202012Validator(spec)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            lines.append(f"  - {where}: {_describe(err)}")
        raise NeurofmError(f"{source}: invalid pipeline config ({len(errors)} problem"
                           f"{'s' if len(errors) != 1 else ''}; schema {schema}):\n"
                           + "\n".join(lines))
    # ... then Snakemake's own validation (what the Snakefile runs), and the defaults
    from snakemake.utils import validate

    try:
        validate(cfg, str(schema), set_default=False)
    except Exception as err:
        raise NeurofmError(f"{source}: invalid pipeline config: {err}") from err
    _fill_defaults(cfg, spec)


def _fill_defaults(instance, schema):
    """Set the schema's defaults, recursing into mappings (a null section stays null)."""
    for key, sub in (schema.get("properties") or {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and "properties" in sub:
            _fill_defaults(instance[key], sub)


def _describe(err):
    if err.validator == "enum":
        return f"expected one of {err.validator_value}; found {err.instance!r}"
    if err.validator == "required":
        return f"missing required key ({err.message})"
    if err.validator == "additionalProperties":
        return f"unknown key ({err.message}); see pipelines/config/schema.yaml"
    if err.validator == "type":
        return f"expected {err.validator_value}; found {err.instance!r}"
    if err.validator == "oneOf":
        return (f"found {err.instance!r}, which matches none of the allowed forms "
                f"{[s.get('type', s.get('enum')) for s in err.validator_value]}")
    return f"{err.message}"


def _check_semantics(cfg, source):
    modality = cfg["modality"]
    if ("bids_root" in cfg) == ("inputs" in cfg):
        raise NeurofmError(f"{source}: give exactly one of bids_root (a BIDS dataset) or "
                           f"inputs (a list of files); found "
                           f"{'both' if 'bids_root' in cfg else 'neither'}")
    if modality == "fmri" and not cfg["fmri"].get("atlas"):
        raise NeurofmError(f"{source}: modality fmri needs fmri.atlas (a labels image, maps "
                           "image, coordinate table or one of power_2011, dosenbach_2010, "
                           "seitzman_2018)")
    bp = cfg.get("bandpass")
    if bp and bp.get("l_freq") is None and bp.get("h_freq") is None:
        raise NeurofmError(f"{source}: bandpass needs l_freq and/or h_freq (or set bandpass: "
                           "null to skip it)")
    if cfg.get("reference") is not None and modality != "eeg":
        raise NeurofmError(f"{source}: reference applies to EEG only; found reference="
                           f"{cfg['reference']!r} with modality {modality!r} (set it to null)")
    if cfg.get("dff") is not None and modality != "calcium":
        raise NeurofmError(f"{source}: dff applies to calcium only; found modality "
                           f"{modality!r}")
    split = cfg["store"]["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise NeurofmError(f"{source}: store.split fractions must sum to 1; found "
                           f"train={split['train']} + val={split['val']} + "
                           f"test={split['test']} = {total:g}")


def config_hash(params):
    """A short, stable fingerprint of JSON-like parameters.

    Parameters
    ----------
    params : dict | list | scalar
        Parameters (keys are sorted, so order does not matter).

    Returns
    -------
    hash : str
        12 hexadecimal characters of the SHA-256 of the canonical JSON.
    """
    from ..schema import to_json_safe

    text = json.dumps(to_json_safe(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def stage_parameters(cfg):
    """The parameters of each pipeline stage and their fingerprints.

    Parameters
    ----------
    cfg : dict
        A config from :func:`load_config`.

    Returns
    -------
    stages : dict
        ``read`` (modality, read, pick, fmri sections), ``steps`` (the chain's sections,
        :data:`CHAIN_STEPS`), ``store`` (chunk_seconds, compressor), ``read_hash`` (of
        ``read``) and ``chain_hash`` (of all three): what a read output and a store recording
        carry as ``config_hash``.
    """
    modality = cfg["modality"]
    read = {"modality": modality, "read": cfg["read"], "pick": cfg["pick"],
            "fmri": cfg["fmri"] if modality == "fmri" else None}
    steps = {k: cfg.get(k) for k in CHAIN_STEPS}
    store = {"chunk_seconds": cfg["store"]["chunk_seconds"],
             "compressor": cfg["store"]["compressor"]}
    return {"read": read, "steps": steps, "store": store, "read_hash": config_hash(read),
            "chain_hash": config_hash({"read": read, "steps": steps, "store": store})}
