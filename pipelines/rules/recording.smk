# One chain for every modality, one job per recording and step:
#   {MOD}_read        input -> canonical zarr (EEG/MEG pick channels; fMRI parcellates with
#                     the atlas, regressing fMRIPrep confounds; calcium reads suite2p Fc)
#   {MOD}_preprocess  [dF/F] -> [notch] -> [band-pass] -> [resample] -> [EEG re-reference]
#                     -> scale, written into the store folder; its output is a done-marker
#   {MOD}_qc          the recording's QC page


rule:
    name:
        f"{MOD}_read"
    input:
        unpack(read_inputs),
    output:
        directory(LAYOUT["raw"]),
    params:
        modality=MOD,
        read=CFG["read"],
        pick=CFG["pick"] if MOD in ("eeg", "meg") else None,
        fmri=fmri_params,
        config_hash=STAGES["read_hash"],
    log:
        log_of(f"{MOD}_read"),
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    conda:
        "../envs/neurofm.yaml"
    script:
        "../scripts/read.py"


rule:
    name:
        f"{MOD}_preprocess"
    input:
        LAYOUT["raw"],
    output:
        LAYOUT["done"],
    params:
        target=store_target,
        modality=MOD,
        steps=STAGES["steps"],
        block_seconds=CFG["block_seconds"],
        store=STAGES["store"],
        config_hash=STAGES["chain_hash"],
    log:
        log_of(f"{MOD}_preprocess"),
    threads: THREADS
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    conda:
        "../envs/neurofm.yaml"
    script:
        "../scripts/preprocess.py"


rule:
    name:
        f"{MOD}_qc"
    input:
        raw=LAYOUT["raw"],
        preprocessed=LAYOUT["done"],
    output:
        LAYOUT["qc"],
    params:
        title=lambda w: f"QC {nfp.STEM.format(**w)} ({TITLE})",
        qc=CFG["qc"],
    log:
        log_of(f"{MOD}_qc"),
    threads: 1
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
    conda:
        "../envs/neurofm.yaml"
    script:
        "../scripts/qc.py"
