# EEG chain: read -> pick -> notch -> band-pass -> resample -> re-reference -> scale -> store


rule eeg_read:
    input:
        lambda w: recording(w).path,
    output:
        directory(f"{OUT}/work/eeg/{STEM}_desc-raw.zarr"),
    params:
        modality="eeg",
        read=CFG["read"],
        pick=CFG["pick"],
        fmri=None,
        config_hash=READ_HASH,
    log:
        f"{OUT}/logs/eeg_read/{STEM}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/read.py"


rule eeg_preprocess:
    input:
        f"{OUT}/work/eeg/{STEM}_desc-raw.zarr",
    output:
        directory(f"{OUT}/store/{STEM}.zarr"),
    params:
        modality="eeg",
        steps=STEPS,
        block_seconds=CFG["block_seconds"],
        store=STORE,
        config_hash=CHAIN_HASH,
    log:
        f"{OUT}/logs/eeg_preprocess/{STEM}.log",
    threads: THREADS
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/preprocess.py"


rule eeg_qc:
    input:
        raw=f"{OUT}/work/eeg/{STEM}_desc-raw.zarr",
        preprocessed=f"{OUT}/store/{STEM}.zarr",
    output:
        f"{OUT}/qc/{STEM}_qc.html",
    params:
        title=lambda w: f"QC {STEM.format(**w)} (EEG)",
        qc=CFG["qc"],
    log:
        f"{OUT}/logs/eeg_qc/{STEM}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    script:
        "../scripts/qc.py"
