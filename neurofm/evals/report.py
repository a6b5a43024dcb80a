"""Tables, plots and plain verdicts of :func:`neurofm.evals.probe` results."""

from __future__ import annotations

import html
import json
import os

import numpy as np

__all__ = ["plot_scores", "save_report", "to_html", "to_markdown", "verdicts"]


def _fmt(m, s):
    return "n/a" if not np.isfinite(m) else f"{m:.3f} ± {s:.3f}"


def verdicts(results):
    """Plain-language comparison of each encoder with each baseline and its random init.

    On the primary metric (balanced accuracy or Pearson r): "beats" when the mean difference
    exceeds the pooled standard deviation over seeds, "is above ... (within the spread over
    seeds: no clear win)" when it is positive but smaller, "does NOT beat" otherwise.

    Returns
    -------
    lines : list of str
    """
    metric = results.attrs["primary_metric"]
    mean = results["mean"].sel(metric=metric)
    std = results["std"].sel(metric=metric)
    kinds = dict(zip(results["model"].values.tolist(), results["kind"].values.tolist()))
    encoders = [m for m, k in kinds.items() if k == "encoder"]
    others = [m for m, k in kinds.items() if k == "baseline"]
    lines = []
    for enc in encoders:
        rand = f"random-init {enc}"
        for ref in [m for m in (rand,) if m in kinds] + others:
            a, b = float(mean.sel(model=enc)), float(mean.sel(model=ref))
            sa, sb = float(std.sel(model=enc)), float(std.sel(model=ref))
            pooled = float(np.sqrt((sa ** 2 + sb ** 2) / 2))
            what = f"{enc} ({_fmt(a, sa)} {metric})"
            base = f"{ref} ({_fmt(b, sb)})"
            if not (np.isfinite(a) and np.isfinite(b)):
                lines.append(f"{what} vs {base}: not comparable (undefined scores)")
            elif a - b > max(pooled, 1e-9):
                lines.append(f"{what} beats {base}.")
            elif a - b > 1e-9:  # equal means (up to rounding) are no win
                lines.append(f"{what} is above {base}, within the spread over seeds: no clear "
                             "win.")
            else:
                lines.append(f"{what} does NOT beat {base}.")
    if not encoders:
        lines.append("no encoder evaluated (baselines only)")
    return lines


def to_markdown(results):
    """A markdown table: one row per method, mean ± std over seeds per metric."""
    metrics = results["metric"].values.tolist()
    head = "| model | kind | " + " | ".join(metrics) + " |"
    sep = "|" + "---|" * (len(metrics) + 2)
    rows = [head, sep]
    for model, kind in zip(results["model"].values.tolist(),
                            results["kind"].values.tolist()):
        cells = [_fmt(float(results["mean"].sel(model=model, metric=k)),
                      float(results["std"].sel(model=model, metric=k))) for k in metrics]
        rows.append(f"| {model} | {kind} | " + " | ".join(cells) + " |")
    note = (f"\n{results.attrs['task']} on {results.attrs['n_windows']} windows of "
            f"{results.attrs['n_subjects']} subjects; mean ± std over "
            f"{results.sizes['seed']} seeds (subject-disjoint splits).\n")
    lines = "\n".join(f"- {v}" for v in json.loads(results.attrs.get("verdict", "[]")))
    return "\n".join(rows) + "\n" + note + ("\n" + lines + "\n" if lines else "")


def to_html(results, *, title="neurofm probe", plot=None):
    """A small standalone HTML page: the table, the verdicts and (optionally) the plot file."""
    metrics = results["metric"].values.tolist()
    cells = ["<tr><th>model</th><th>kind</th>" + "".join(f"<th>{html.escape(k)}</th>"
                                                          for k in metrics) + "</tr>"]
    for model, kind in zip(results["model"].values.tolist(),
                            results["kind"].values.tolist()):
        vals = "".join(f"<td>{_fmt(float(results['mean'].sel(model=model, metric=k)), float(results['std'].sel(model=model, metric=k)))}</td>"  # noqa: E501
                       for k in metrics)
        cells.append(f"<tr><td>{html.escape(model)}</td><td>{kind}</td>{vals}</tr>")
    items = "".join(f"<li>{html.escape(v)}</li>"
                    for v in json.loads(results.attrs.get("verdict", "[]")))
    img = f'<img src="{html.escape(os.path.basename(plot))}" width="640">' if plot else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>table{border-collapse:collapse}td,th{border:1px solid #999;"
            "padding:3px 8px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{results.attrs['task']}, "
            f"{results.attrs['n_subjects']} subjects, {results.sizes['seed']} seeds, "
            f"subject-disjoint splits</p><table>{''.join(cells)}</table>"
            f"<ul>{items}</ul>{img}</body></html>")


def plot_scores(results, path=None, *, metric=None):
    """Bar plot of one metric per method with error bars (std over seeds).

    Returns
    -------
    fig : matplotlib Figure (saved to ``path`` when given)
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metric = metric or results.attrs["primary_metric"]
    models = results["model"].values.tolist()
    colors = {"encoder": "tab:blue", "random": "tab:gray", "baseline": "tab:orange"}
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(models), 3.5))
    mean = results["mean"].sel(metric=metric).values
    std = results["std"].sel(metric=metric).values
    ax.bar(range(len(models)), mean, yerr=std, capsize=4,
           color=[colors.get(k, "tab:green") for k in results["kind"].values.tolist()])
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def save_report(results, out_dir):
    """Write ``results.nc``, ``table.md``, ``report.html`` and ``scores.png`` to ``out_dir``.

    Returns
    -------
    paths : dict of str -> str
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f) for k, f in (
        ("results", "results.nc"), ("table", "table.md"), ("html", "report.html"),
        ("plot", "scores.png"))}
    results.to_netcdf(paths["results"])
    with open(paths["table"], "w") as fid:
        fid.write(to_markdown(results))
    plot_scores(results, paths["plot"])
    with open(paths["html"], "w") as fid:
        fid.write(to_html(results, plot=paths["plot"]))
    return paths
