# fMRI chain: parcellate (atlas + fMRIPrep confounds) -> temporal filtering -> robust scale
# -> store


def _atlas_inputs(wildcards):
    """The atlas and its labels table as inputs when they are files (editing them reruns)."""
    rec = recording(wildcards)
    return [path for path in (rec.atlas, rec.labels) if path and os.path.isfile(path)]


rule fmri_read:
    input:
        bold=lambda w: recording(w).path,
        atlas=_atlas_inputs,
    output:
        directory(f"{OUT}/work/fmri/{STEM}_desc-raw.zarr"),
    params:
        modality="fmri",
        read=CFG["read"],
        pick=None,
        fmri=lambda w: {**CFG["fmri"], "atlas": recording(w).atlas,
                        "labels": recording(w).labels},
        config_hash=READ_HASH,
    log:
        f"{OUT}/logs/fmri_read/{STEM}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/read.py"


rule fmri_preprocess:
    input:
        f"{OUT}/work/fmri/{STEM}_desc-raw.zarr",
    output:
        directory(f"{OUT}/store/{STEM}.zarr"),
    params:
        modality="fmri",
        steps=STEPS,
        block_seconds=CFG["block_seconds"],
        store=STORE,
        config_hash=CHAIN_HASH,
    log:
        f"{OUT}/logs/fmri_preprocess/{STEM}.log",
    threads: THREADS
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/preprocess.py"


rule fmri_qc:
    input:
        raw=f"{OUT}/work/fmri/{STEM}_desc-raw.zarr",
        preprocessed=f"{OUT}/store/{STEM}.zarr",
    output:
        f"{OUT}/qc/{STEM}_qc.html",
    params:
        title=lambda w: f"QC {STEM.format(**w)} (fMRI)",
        qc=CFG["qc"],
    log:
        f"{OUT}/logs/fmri_qc/{STEM}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/qc.py"
