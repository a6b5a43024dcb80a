# Calcium chain: read (suite2p plane folder) -> dF/F -> resample -> z-score -> store


rule calcium_read:
    input:
        lambda w: recording(w).path,
    output:
        directory(f"{OUT}/work/calcium/{STEM}_desc-raw.zarr"),
    params:
        modality="calcium",
        read=CFG["read"],
        pick=None,
        fmri=None,
        config_hash=READ_HASH,
    log:
        f"{OUT}/logs/calcium_read/{STEM}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/read.py"


rule calcium_preprocess:
    input:
        f"{OUT}/work/calcium/{STEM}_desc-raw.zarr",
    output:
        directory(f"{OUT}/store/{STEM}.zarr"),
    params:
        modality="calcium",
        steps=STEPS,
        block_seconds=CFG["block_seconds"],
        store=STORE,
        config_hash=CHAIN_HASH,
    log:
        f"{OUT}/logs/calcium_preprocess/{STEM}.log",
    threads: THREADS
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/preprocess.py"


rule calcium_qc:
    input:
        raw=f"{OUT}/work/calcium/{STEM}_desc-raw.zarr",
        preprocessed=f"{OUT}/store/{STEM}.zarr",
    output:
        f"{OUT}/qc/{STEM}_qc.html",
    params:
        title=lambda w: f"QC {STEM.format(**w)} (calcium)",
        qc=CFG["qc"],
    log:
        f"{OUT}/logs/calcium_qc/{STEM}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/qc.py"
