"""The demo's report: one self-contained HTML page (PNG figures embedded as base64).

Every section has an id (:data:`SECTIONS`), a one-line reading computed from the numbers of
its step, its figure(s) and the command that reproduces it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from pathlib import Path

import numpy as np

from .._version import __version__

__all__ = ["SECTIONS", "write_report"]

#: Section ids and titles, in page order.
SECTIONS = (
    ("data", "1. Data"),
    ("qc", "2. Pipelines and quality control"),
    ("training", "3. Pretraining curves"),
    ("probe", "4. Probe vs baselines"),
    ("rsa", "5. RDMs: RSA and tRSA"),
    ("encoding", "6. Encoding model"),
    ("dse", "7. DSE over training"),
    ("connectome", "8. Dynamic connectome"),
    ("generation", "9. MEG-GPT: generated vs real spectra"),
    ("timings", "Timings"),
)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1250px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:0.1em}h2{border-bottom:1px solid #ccc;padding-bottom:0.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}
td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}th{background:#f2f2f2}
.reading{background:#eef5ff;border-left:4px solid #3b7dd8;padding:0.5em 0.8em;margin:0.6em 0}
pre{background:#f6f6f6;padding:0.5em;overflow-x:auto;font-size:0.8em;white-space:pre-wrap;
word-break:break-all}
img{max-width:100%;border:1px solid #eee;margin:0.3em 0}.small{color:#666;font-size:0.85em}
nav a{margin-right:1em}
"""


def _png_b64(path):
    return base64.b64encode(Path(path).read_bytes()).decode()


def _img(path, alt):
    return (f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{_png_b64(path)}'/>")


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(sid, title, reading, body, command):
    return (f"<section id='{sid}'><h2>{html.escape(title)}</h2>"
            f"<p class='reading'><b>Reading:</b> {html.escape(reading)}</p>{body}"
            f"<p class='small'>Reproduce:</p><pre>{html.escape(command)}</pre></section>")


def _f(x, nd=2):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------
def _data(sample, pipes):
    rows = [(html.escape(r["datatype"]), r["subjects"], r["real"], r["generated"])
            for r in sample["datatypes"]]
    t1 = _table(("datatype", "subjects", "real data", "generated"), rows)
    rows = []
    for mod, p in pipes.items():
        rows.append((mod, p["n_subjects"], p["n_recordings"],
                     ", ".join(str(c) for c in p["n_channels"]),
                     ", ".join(f"{s:g}" for s in p["sfreq"]), f"{p['hours'] * 60:.1f}",
                     html.escape(", ".join(f"{k} {v}" for k, v in sorted(p["splits"].items())))))
    t2 = _table(("store", "subjects", "recordings", "channels", "sfreq (Hz)", "minutes",
                 "split"), rows)
    n_real = sum(r["real"] for r in sample["datatypes"])
    n_all = sum(r["subjects"] for r in sample["datatypes"])
    n_rec = sum(p["n_recordings"] for p in pipes.values())
    minutes = sum(p["hours"] for p in pipes.values()) * 60
    groups = sample.get("groups") or {}
    counts = {g: sum(1 for v in groups.values() if v == g) for g in sorted(set(groups.values()))}
    reading = (f"{n_all} sample subjects ({n_real} real, {n_all - n_real} generated); the demo "
               f"preprocessed {n_rec} recordings ({minutes:.1f} min of signal) into "
               f"{len(pipes)} stores; the fMRI cohort's planted groups: "
               + ", ".join(f"{g} = {n} subjects" for g, n in counts.items()) + ".")
    body = ("<p>Sample dataset (participants.tsv):</p>" + t1
            + "<p>Stores written by the pipelines:</p>" + t2)
    return _section("data", SECTIONS[0][1], reading, body, sample["command"])


def _first_qc_image(page):
    """The first embedded PNG of a pipeline QC page (base64), or None."""
    try:
        text = Path(page).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    return m.group(1) if m else None


def _qc(pipes):
    rows, images, parts = [], [], []
    for mod, p in pipes.items():
        c = p["check"]
        if "line_db_before" in c:
            b, a = c["line_db_before"], c["line_db_after"]
            if not np.isfinite(b) or b < 3.0:
                line = f"no 50 Hz line peak in the input ({_f(b, 1)} dB)"
            elif np.isfinite(a):
                line = f"50 Hz line peak {b:.1f} dB -> {a:.1f} dB above its neighbourhood"
            else:
                line = (f"50 Hz line peak {b:.1f} dB, removed (Nyquist {c['sfreq_after'] / 2:g}"
                        " Hz after resampling)")
            what = f"{line}; {c['sfreq_before']:g} -> {c['sfreq_after']:g} Hz"
            parts.append(f"{mod.upper()}: {line}")
        elif "mean_roi_corr" in c:
            what = f"mean parcel-parcel correlation {_f(c['mean_roi_corr'])}"
            parts.append(f"fMRI: mean parcel correlation {_f(c['mean_roi_corr'])} after "
                         "confound regression")
        else:
            what = (f"median |dF/F z| {_f(c['median_abs_signal'])}, max "
                    f"{_f(c['max_signal'], 1)}")
            parts.append(f"calcium: dF/F z-scores up to {_f(c['max_signal'], 1)} (transients)")
        rows.append((mod, p["n_recordings"], p["failures"], html.escape(c["recording"]),
                     html.escape(what), f"<code>{html.escape(p['qc_summary'])}</code>"))
        b64 = _first_qc_image(p["qc_pages"][0]) if p["qc_pages"] else None
        if b64:
            images.append(f"<figure><figcaption class='small'>{mod.upper()} QC of "
                          f"{html.escape(Path(p['qc_pages'][0]).stem)}</figcaption>"
                          f"<img alt='{mod} QC' src='data:image/png;base64,{b64}'/></figure>")
    failures = sum(p["failures"] for p in pipes.values())
    n = sum(p["n_recordings"] for p in pipes.values())
    reading = (f"{n} recordings in the stores, {failures} failed job(s); "
               + "; ".join(parts) + ".")
    body = (_table(("pipeline", "recordings", "failed", "checked recording", "check",
                    "QC summary page"), rows) + "".join(images))
    command = "\n".join(p["command"] for p in pipes.values())
    return _section("qc", SECTIONS[1][1], reading, body, command)


def _generation(gen):
    sm = gen["summary"]
    reading = (f"{gen['seconds']:g} s of MEG-GPT continuation of {gen['recording']} "
               f"({gen['n_channels']} channels, {gen['sfreq']:g} Hz): log-PSD correlation with "
               f"the real recording {sm['log_psd_corr']:.2f} (mean over channels), spectral peak "
               f"{sm['peak_freq_generated']:.1f} Hz vs {sm['peak_freq_real']:.1f} Hz real "
               f"(median error {sm['peak_error_hz_median']:.1f} Hz), alpha power ratio "
               f"{sm['alpha_power_ratio']:.2f}, envelope std ratio "
               f"{sm['envelope_std_ratio']:.2f} (1 = as real).")
    rows = [(html.escape(k), f"{v:.3f}") for k, v in sm.items()]
    body = (_img(gen["figure"], "generated vs real spectra")
            + "<p class='small'>Prompt: the first context of the real recording (each channel "
              "z-scored over the recording, as in training); the continuation is compared "
              "with the whole real recording (<code>neurofm.evals.spectral_similarity</code>: "
              "Welch log-PSD correlation, peak frequency, band-power and envelope ratios)."
              "</p>" + _table(("measure", "value"), rows))
    return _section("generation", SECTIONS[8][1], reading, body, gen["command"])


def _training(out, trained):
    from .steps import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(trained), figsize=(4.6 * len(trained), 3.3))
    axes = np.atleast_1d(axes)
    parts = []
    for ax, (name, res) in zip(axes, trained.items()):
        curves = res["curves"]
        train_key = next((k for k in ("train/loss_step", "train/loss", "train_loss_step",
                                      "train_loss") if k in curves), None)
        if train_key is None:
            train_key = next((k for k in curves if "train" in k), None)
        val_key = next((k for k in curves if "val" in k), None)
        for key, style in ((train_key, "-"), (val_key, "o--")):
            if key:
                s, v = np.array(curves[key]).T
                ax.plot(s, v, style, label=key, lw=1, ms=3)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(name)
        ax.legend(frameon=False, fontsize=7)
        if train_key:
            v = np.array(curves[train_key])[:, 1]
            k = max(1, len(v) // 5)
            a, b = float(np.mean(v[:k])), float(np.mean(v[-k:]))
            flag = (" - near zero: the latent targets collapsed (see the DSE section)"
                    if name == "brainjepa" and b < 0.02 * a else "")
            parts.append(f"{name} training loss {a:.3f} -> {b:.3f} "
                         f"({100 * (b - a) / abs(a):+.0f}%, mean of the first and last "
                         f"{k} of {len(v)} steps{flag})")
        if val_key:
            v = np.array(curves[val_key])[:, 1]
            parts.append(f"validation {v[0]:.3f} -> {v[-1]:.3f}")
    fig.tight_layout()
    from .steps import _savefig

    path = _savefig(fig, Path(out) / "figures" / "training.png")
    n_ckpt = {n: len(r["checkpoints"]) for n, r in trained.items()}
    reading = "; ".join(parts) + "; checkpoints kept: " + ", ".join(
        f"{n} {c}" for n, c in n_ckpt.items()) + "."
    body = _img(path, "training curves") + "<p class='small'>From the Lightning CSV logs: " \
        + ", ".join(f"<code>{html.escape(r['run'])}/logs</code>" for r in trained.values()) \
        + "</p>"
    command = "\n".join(r["command"] for r in trained.values())
    return _section("training", SECTIONS[2][1], reading, body, command)


def _probe(out, probe):
    import xarray as xr

    from ..evals.report import plot_scores
    from .steps import _savefig

    res = xr.load_dataset(Path(probe["out"]) / "results.nc")
    path = _savefig(plot_scores(res), Path(out) / "figures" / "probe.png")
    metrics = probe["metrics"]
    rows = []
    for r in probe["rows"]:
        cells = [f"{r['scores'][m][0]:.3f} ± {r['scores'][m][1]:.3f}" for m in metrics]
        rows.append((html.escape(r["model"]), r["kind"], *cells))
    table = _table(("model", "kind", *metrics), rows)
    enc = [r for r in probe["rows"] if r["kind"] == "encoder"]
    base = [r for r in probe["rows"] if r["kind"] == "baseline"]
    be = max(enc, key=lambda r: r["mean"]) if enc else None
    bb = max(base, key=lambda r: r["mean"]) if base else None
    metric = probe["metric"]
    if be and bb:
        diff = be["mean"] - bb["mean"]
        pooled = float(np.sqrt((be["std"] ** 2 + bb["std"] ** 2) / 2))
        verdict = ("beats" if diff > max(pooled, 1e-9) else
                   "is above, within the spread over seeds,"
                   if diff > 1e-9 else "does NOT beat")
        chance = 0.5 if probe["task"] == "classification" else 0.0
        above = [r["model"] for r in (be, bb) if r["mean"] - r["std"] > chance + 1e-9]
        reading = (f"best encoder {be['model']} ({metric} {be['mean']:.3f} ± {be['std']:.3f}) "
                   f"{verdict} the best baseline {bb['model']} ({bb['mean']:.3f} ± "
                   f"{bb['std']:.3f}) on the group labels of {probe['n_subjects']} subjects, "
                   f"{probe['n_seeds']} seeds; above chance ({chance:g}) by more than one "
                   "standard deviation: " + (", ".join(above) if above else "neither") + ".")
    else:
        reading = "no encoder or no baseline evaluated."
    items = "".join(f"<li>{html.escape(v)}</li>" for v in probe["verdicts"])
    body = (table + f"<p class='small'>{html.escape(probe['task'])} on "
            f"{probe['n_windows']} windows of {probe['n_subjects']} subjects; mean ± std over "
            f"{probe['n_seeds']} subject-disjoint splits.</p><ul>{items}</ul>"
            + _img(path, "probe scores"))
    return _section("probe", SECTIONS[3][1], reading, body, probe["command"])


def _rsa(rsa):
    sc = rsa["scores"]
    enc = [n for n in sc if n != "FC baseline" and "(epoch 0)" not in n]
    parts = [f"{n} rho = {sc[n]['rsa']:.2f} (tRSA {sc[n]['trsa']:.2f}; "
             f"{sc.get(n + ' (epoch 0)', {}).get('rsa', float('nan')):.2f} at the first "
             "checkpoint)" for n in enc]
    reading = (f"Spearman correlation of the {rsa['n_subjects']}-subject RDMs with the planted "
               f"group model: " + "; ".join(parts)
               + f"; FC baseline rho = {sc['FC baseline']['rsa']:.2f} "
               f"(tRSA {sc['FC baseline']['trsa']:.2f}).")
    rows = [(html.escape(n), f"{v['rsa']:.3f}", f"{v['trsa']:.3f}") for n, v in sc.items()]
    body = (_img(rsa["figure"], "RDMs")
            + "<p class='small'>RDM panels show percentile ranks; conditions are subjects "
              "sorted by group.</p>"
            + _table(("RDM", "RSA (Spearman vs model)", "tRSA (GT 0.2-0.8, Spearman)"), rows))
    return _section("rsa", SECTIONS[4][1], reading, body, rsa["command"])


def _encoding(enc):
    rows = enc["rows"]
    labels = {"meggpt": "MEG-GPT", "meggpt_init": "MEG-GPT random init",
              "raw": "raw-signal baseline"}
    shown = enc.get("features") or list(labels)
    labels = {k: v for k, v in labels.items() if k in shown}
    columns = {"meggpt": "MEG-GPT", "meggpt_init": "random init", "raw": "raw baseline"}
    sm = enc["summary"]
    ceil = np.array([r["ceiling"] for r in rows], dtype=float)
    ok = [r for r in rows if np.isfinite(r["norm_meggpt"])]
    better = sum(1 for r in ok if r["norm_meggpt"] > r["norm_raw"])
    reading = (f"{enc['n_channels']} MEG channels held out in turn, {enc['n_trials']} trials "
               f"of {len(enc['conditions'])} event classes ({enc['n_subjects']} subjects, "
               f"~{enc['trials_per_average']:.0f} trials per held-out average): median noise "
               f"ceiling {np.median(ceil):.2f} ({enc['n_scored']} channels with a ceiling >= "
               f"{enc['min_ceiling']:g}); median R² / ceiling "
               + ", ".join(f"{labels[k]} {_f(sm[k]['median_normalized'])} (raw R² "
                           f"{_f(sm[k]['median_r2'], 3)})" for k in labels)
               + f"; MEG-GPT beats the baseline on {better} of {len(ok)} scored channels.")
    table = _table(("held-out channel", "noise ceiling",
                    *[h for k in labels for h in (f"R² {columns[k]}",
                                                  f"R² / ceiling {columns[k]}")]),
                   [(html.escape(r["channel"]), _f(r["ceiling"]),
                     *[v for k in labels for v in (_f(r[f"r2_{k}"], 3), _f(r[f"norm_{k}"]))])
                    for r in rows])
    body = (_img(enc["figure"], "encoding scores")
            + "<p class='small'>Data with repeats: " + html.escape(enc["source"]) + ". "
              f"Epochs of {enc['n_samples']} samples ({1000 * enc['n_samples'] / enc['sfreq']:.0f}"
              " ms) after each event, each trial's linear trend removed. Features of a "
              "channel: MEG-GPT's hidden states of that channel at each time step (channels "
              "do not attend to each other, so the held-out channel is never seen); ridge "
              "from the other channels' features to the held-out channel. Trials are split "
              f"in {enc['n_folds']} folds: the model is fitted on the condition averages of "
              "one fold, predicts from the feature averages of a second and is scored (R²) "
              "on the condition averages of the third, whose noise it never sees. Noise "
              "ceiling: 1 - (noise variance of the held-out averages, from the spread of "
              "their trials / n) / their total variance, the best R² any prediction can "
              "reach in expectation; R² / ceiling is the R² against the noise-free response "
              f"(1 = as good as the data allow; n/a: ceiling below {enc['min_ceiling']:g})."
              "</p>" + table)
    return _section("encoding", SECTIONS[5][1], reading, body, enc["command"])


def _dse(dse):
    parts = []
    for name, c in dse["curves"].items():
        parts.append(f"{name} DSE {c['dse'][0]:.2f} -> {c['dse'][-1]:.2f} bits "
                     f"(DSMI with the group {c['dsmi'][0]:.3f} -> {c['dsmi'][-1]:.3f}) from "
                     f"{c['xlabel']} {c['x'][0]} to {c['x'][-1]}")
    reading = "; ".join(parts) + "."
    n = next(iter(dse["curves"].values()))["n_samples"]
    body = (_img(dse["figure"], "DSE over training")
            + f"<p class='small'>Diffusion spectral entropy of {n} window embeddings at every "
              "saved checkpoint (standardized features, sigma 10, t 1); DSMI with the planted "
              "group.</p>")
    return _section("dse", SECTIONS[6][1], reading, body, dse["command"])


def _connectome(con):
    share = con["component_share"]
    purity = con.get("purity") or {}
    circuits = "".join(f"; up to {100 * v:.0f}% of the planted {g} neurons share a "
                       "community" for g, v in purity.items())
    reading = (f"rank-{con['rank']} non-negative CP explains "
               f"{100 * con['explained_variance']:.1f}% of the (time x animal x pair) affinity "
               f"tensor of {con['n_animals']} {con.get('source', 'calcium')} recordings x "
               f"{con['n_neurons']} shared neurons; the largest component carries "
               f"{100 * max(share):.0f}% of the temporal weight and splits the neurons into "
               f"{con['communities'][con['top']]} communities (per component: "
               f"{', '.join(str(c) for c in con['communities'])}){circuits}.")
    body = (_img(con["figure"], "dynamic connectome")
            + "<p class='small'>Left: temporal factors; middle: the largest component's "
              "affinity matrix, neurons ordered by community (weighted SBM); right: animal "
              "loadings.</p>")
    return _section("connectome", SECTIONS[7][1], reading, body, con["command"])


def _timings(timings, elapsed, sizes):
    rows = []
    for name, t in timings.items():
        rows.append((html.escape(name), "reused" if t["reused"] else "ran",
                     f"{t['seconds']:.1f}", _f(t.get("recorded_seconds"), 1)))
    reused = sum(1 for t in timings.values() if t["reused"])
    reading = (f"this run took {elapsed:.0f} s ({sizes['name']} sizes); {reused} of "
               f"{len(timings)} steps were reused from an earlier run.")
    body = _table(("step", "this run", "seconds (this run)", "seconds (when computed)"), rows)
    return _section("timings", SECTIONS[9][1], reading, body,
                    f"neurofm demo{' --quick' if sizes['name'] == 'quick' else ''} --out DIR")


# --------------------------------------------------------------------------------------------
def write_report(out, *, sizes, sample, pipes, trained, probe, analyses, timings, elapsed,
                 meggpt=None, generated=None):
    """Write ``out/report.html`` (self-contained) and return its path.

    ``meggpt`` / ``generated``: the MEG-GPT training and generation results, or None when
    MEG-GPT is not available (its curves and the generation section are then left out, and
    so is the encoding section, whose features are MEG-GPT's: ``analyses["encoding"]`` is
    None).
    """
    out = Path(out)
    models = dict(trained)
    if meggpt is not None:
        models["meggpt"] = meggpt
    parts = [
        _data(sample, pipes),
        _qc(pipes),
        _training(out, models),
        _probe(out, probe),
        _rsa(analyses["rsa"]),
        *([_encoding(analyses["encoding"])] if analyses.get("encoding") else []),
        _dse(analyses["dse"]),
        _connectome(analyses["connectome"]),
        *([_generation(generated)] if generated is not None else []),
        _timings(timings, elapsed, sizes),
    ]
    left_out = ({"generation"} if generated is None else set()) | (
        set() if analyses.get("encoding") else {"encoding"})
    shown = [(sid, t) for sid, t in SECTIONS if sid not in left_out]
    nav = "".join(f"<a href='#{sid}'>{html.escape(t)}</a>" for sid, t in shown)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>neurofm demo</title>"
            f"<style>{_CSS}</style></head><body><h1>neurofm demo</h1>"
            f"<p class='small'>neurofm {__version__}, {stamp}, {sizes['name']} run, output "
            f"<code>{html.escape(str(out))}</code>. Generated data are labelled as such "
            "(see section 1).</p>"
            f"<nav>{nav}</nav>{''.join(parts)}</body></html>")
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
