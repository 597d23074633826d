"""The study's report: one self-contained ``report.html`` (plots and images embedded as data URIs, no
scripts, opens offline), ``results.json`` with every number and ``samples.jsonl`` with one line per
evaluated image. Whatever the stages done so far measured is reported; missing stages say so.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from textnorm_t2i import tables
from textnorm_t2i.finetune.report import png_data_uri
from textnorm_t2i.io import atomic_write, read_json, write_json_atomic
from textnorm_t2i.rundir import mark_run_dir
from textnorm_t2i.study.analysis import per_prompt, summarize_records
from textnorm_t2i.study.config import SIGNAL_FREE_CONTROL, StudyConfig, base_tag
from textnorm_t2i.study.objectives import family, label
from textnorm_t2i.study.summary import draft_answer
from textnorm_t2i.study.verdict import verdict

GRID_PROMPTS = 9
COLORS = {"raw": "tab:red", "textnorm": "tab:blue", "control": "tab:gray"}


def _png(fig: Any) -> str:
    return png_data_uri(fig, dpi=90)


def _img(uri: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{html.escape(alt)}"{w}>'


def _ci(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None:
        return "–"
    lo, hi = m["ci"]
    return f"{m['mean']:.{digits}f} <span class=ci>[{lo:.{digits}f}, {hi:.{digits}f}]</span>"


def html_label(objective: str) -> str:
    """An objective's name for the page, escaped (a reward registered from Python may be named anything)."""
    return html.escape(label(objective))


def _table(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    return tables.html(header, rows, caption)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(objective: str, index: int) -> dict:
    markers = "osD^vP*Xh<>"
    if objective == "control/prompt-free":  # apart from the drift control, which it is not
        return {"color": "black", "marker": markers[index % len(markers)], "linestyle": "-."}
    return {"color": COLORS[family(objective)], "marker": markers[index % len(markers)],
            "linestyle": {"textnorm": "-", "raw": "--", "control": ":"}[family(objective)]}


def bon_plot(bon: dict) -> str:
    """Gold alignment of the best of n against KL_BoN, one panel per reward (raw vs TextNorm) and one for the
    ensembles, with 95% bands."""
    plt = _plt()
    objs = [o for o in bon["objectives"] if o != "ORACLE gold"]
    rewards = list(dict.fromkeys(o.split("/", 1)[1] for o in objs if "/" in o))
    panels = [[f"raw/{r}", f"tn/{r}"] for r in rewards]
    if any(o.startswith("ens-") for o in objs):
        panels.append([o for o in objs if o.startswith("ens-")])
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharey=True)
    x = bon["kl_bon"]
    oracle = bon["objectives"]["ORACLE gold"]["gold"]
    for ax, panel in zip(axes.flat, panels):
        for i, o in enumerate(p for p in panel if p in bon["objectives"]):
            g = bon["objectives"][o]["gold"]
            mean = [v["mean"] for v in g]
            st = _style(o, i)
            ax.plot(x, mean, label=label(o), **st)
            ax.fill_between(x, [v["ci"][0] for v in g], [v["ci"][1] for v in g], color=st["color"], alpha=0.12)
        ax.plot(x, [v["mean"] for v in oracle], ":", color="grey", label="ORACLE (best by gold)")
        ax.set_ylim(0, 1)
        ax.set_xlabel("KL_BoN = log n - (n-1)/n")
        ax.set_ylabel("gold alignment")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Best-of-n on the shared pool: gold alignment of the pick (95% bootstrap bands over prompts)")
    fig.tight_layout()
    return _png(fig)


def map_plot(m: dict) -> str:
    """Heatmap of gold(best-of-n by TextNorm) - gold(by raw) over look weight x noise, each cell with its CI
    and its diagnosis (offset / contrast AUROC)."""
    plt = _plt()
    ws, ss = m["look_weights"], m["noise_scales"]
    grid = np.full((len(ws), len(ss)), np.nan)
    cells = {(c["w"], c["noise"]): c for c in m["cells"]}
    for i, w in enumerate(ws):
        for j, s in enumerate(ss):
            grid[i, j] = cells[(w, s)]["difference"]["mean"]
    lim = max(0.05, float(np.nanmax(np.abs(grid))))
    fig, ax = plt.subplots(figsize=(2.3 * len(ss) + 1.5, 1.5 * len(ws) + 1.2))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i, w in enumerate(ws):
        for j, s in enumerate(ss):
            c = cells[(w, s)]
            d = c["difference"]
            ax.text(j, i, f"{d['mean']:+.3f}\n[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]\n"
                          f"offset {c['auroc']['offset']:.2f} / contrast {c['auroc']['contrast']:.2f}",
                    ha="center", va="center", fontsize=7.5)
    ax.set_xticks(range(len(ss)), [f"{s:g}x" for s in ss])
    ax.set_yticks(range(len(ws)), [f"{w:g}" for w in ws])
    ax.set_xlabel("perception noise (multiple of shapes-perceive-noisy's)")
    ax.set_ylabel("look weight w")
    fig.colorbar(im, ax=ax, label=f"gold(best-of-{m['n']} by TextNorm) - gold(by raw)")
    ax.set_title("Where TextNorm helps (blue) or hurts (red); AUROC on TIA2-Shapes per cell")
    fig.tight_layout()
    return _png(fig)


def rl_plot(rl: dict, unit: str = "epoch") -> str:
    """Per objective: optimised reward (minus its base value), gold, fidelity vs ``unit`` (epoch or step), and gold
    vs KL (Gao-style), with 95% bands where the evaluation has them."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    for i, (o, run) in enumerate(rl.items()):
        ev = run["evals"]
        st = _style(o, i)
        steps = [e["step"] for e in ev]
        base = ev[0]["objective"]
        axes[0].plot(steps, [e["objective"] - base for e in ev], label=label(o), **st)
        for ax, key in ((axes[1], "gold"), (axes[2], "fidelity")):
            ax.plot(steps, [e[key] for e in ev], label=label(o), **st)
            if f"{key}_lo" in ev[0]:
                ax.fill_between(steps, [e[f"{key}_lo"] for e in ev], [e[f"{key}_hi"] for e in ev], color=st["color"],
                                alpha=0.1)
        axes[3].plot([e["kl"] for e in ev], [e["gold"] for e in ev], label=label(o), **st)
        if "gold_lo" in ev[0]:
            axes[3].fill_between([e["kl"] for e in ev], [e["gold_lo"] for e in ev], [e["gold_hi"] for e in ev],
                                 color=st["color"], alpha=0.1)
    titles = ("optimised reward - its base value", "gold alignment (held-out)", "fidelity (no malformed object)",
              "gold vs KL from the base model")
    for ax, t in zip(axes, titles):
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlabel(unit if ax is not axes[3] else "KL (nats, per image)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _image_cell(img: np.ndarray, rec: dict, objective: str | None) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).resize((96, 96), Image.NEAREST).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    verdict = "ALIGNED" if rec["aligned"] else "NOT ALIGNED"
    why = "; ".join(rec["reasons"]) if rec["reasons"] else "matches the prompt"
    # SFT's controls optimise no reward of their own: no score line for them.
    score = f"{html_label(objective)} = {rec['scores'][objective]:.3f}<br>" if objective in rec["scores"] else ""
    cls = "ok" if rec["aligned"] else "bad"
    return (f"<figure>{_img(uri, rec['prompt'])}<figcaption>{score}<b class={cls}>{verdict}</b>"
            f"<br><small>{html.escape(why)}</small></figcaption></figure>")


def image_grid(evaluations: Path, tag: str, objective: str | None, prompts: list[str]) -> str:
    """One row of images (the first sample of each of ``prompts``) of an evaluation, captioned."""
    recs = read_json(evaluations / f"{tag}.json")
    images = load_file(evaluations / f"{tag}.safetensors")["images"].permute(0, 2, 3, 1).numpy()
    index = {(r["prompt"], r["sample"]): i for i, r in enumerate(recs)}
    cells = [_image_cell(images[index[(p, 0)]], recs[index[(p, 0)]], objective) for p in prompts]
    return f"<div class=grid>{''.join(cells)}</div>"


CSS = """
img{max-width:100%}
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.88em} caption{text-align:left;font-style:italic;padding:.3em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top} th{background:#f3f3f3}
.ci{color:#777;font-size:.85em} .ok{color:#1a7f37} .bad{color:#b42318}
.grid{display:flex;flex-wrap:wrap;gap:6px} figure{margin:0;width:150px;font-size:.75em}
figure img{image-rendering:pixelated;border:1px solid #ccc}
.note{background:#fff8e1;padding:.6em;border-left:4px solid #f0b400}
.prompts{font-size:.8em;color:#555}
"""


def reward_of(objective: str) -> str:
    """The reward an objective optimises, raw or through TextNorm (``ensemble`` for the ensembles).

    Example:
        >>> reward_of("tn/shapes-clip-a"), reward_of("ens-ur-tn")
        ('shapes-clip-a', 'ensemble')
    """
    return objective.split("/", 1)[1] if "/" in objective else "ensemble"


def overoptimisation_plot(runs: dict, base_records: list[dict]) -> str:
    """The over-optimisation picture, one column per reward (raw dashed red, TextNorm solid blue): held-out gold
    against the optimised reward's gain in units of its spread over prompts under the base model (top), against
    sqrt(KL) from the base model over every stochastic step (middle), and against the pixel drift from the base
    model's images of the same seeds (bottom), along each run, with 95% intervals. A line that turns down while it
    moves right is over-optimising. The control runs are drawn in every column's distance panels: the drift control
    (grey, dotted), the gold that drift alone costs at each distance, and the prompt-free control (black, dash-dot)."""
    plt = _plt()
    rewards = list(dict.fromkeys(reward_of(o) for o in runs if family(o) != "control"))
    fig, axes = plt.subplots(3, len(rewards), figsize=(4.2 * len(rewards), 10), squeeze=False)
    for i, (o, run) in enumerate(runs.items()):
        ev, st = run["evals"], _style(o, i)
        spread = float(np.std(per_prompt(base_records, lambda r, o=o: r["scores"][o]))) if o in base_records[0][
            "scores"] else 1.0
        gain = [(e["objective"] - ev[0]["objective"]) / (spread or 1.0) for e in ev]
        # Every stochastic step: the headline's (sigma >= threshold) and the last one, which DRaFT trains through.
        root_kl = [max(e["kl"] + _finite(e.get("kl_last_step")), 0.0) ** 0.5 for e in ev]
        drift = [_finite(e.get("drift"), float("nan")) for e in ev]
        gold = [e["gold"] for e in ev]
        cols = range(len(rewards)) if family(o) == "control" else [rewards.index(reward_of(o))]
        for col in cols:
            panels = [(axes[1][col], root_kl), (axes[2][col], drift)]
            if family(o) != "control":
                panels.insert(0, (axes[0][col], gain))
            for ax, x in panels:
                ax.plot(x, gold, label=label(o), **st)
                if "gold_lo" in ev[0]:  # vertical bars: the distance need not grow monotonically along a run
                    ax.errorbar(x, gold, yerr=[[g - e["gold_lo"] for g, e in zip(gold, ev)],
                                               [e["gold_hi"] - g for g, e in zip(gold, ev)]],
                                fmt="none", ecolor=st["color"], alpha=0.35, capsize=2)
    for col, reward in enumerate(rewards):
        axes[0][col].set_title(reward, fontsize=10)
        axes[0][col].set_xlabel("optimised reward gain (base spreads over prompts)", fontsize=8)
        axes[1][col].set_xlabel("sqrt(KL from the base model, every stochastic step), per image", fontsize=8)
        axes[2][col].set_xlabel("pixel drift from the base model's image (RMS, uint8 levels)", fontsize=8)
        for row in (0, 1, 2):
            axes[row][col].legend(fontsize=7)
            axes[row][col].set_ylabel("gold alignment (held-out)", fontsize=8)
            axes[row][col].grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _finite(value: float | None, default: float = 0.0) -> float:
    """``value`` when it is a finite number, else ``default`` (old results lack a key; NaN where nothing was
    measured)."""
    return float(value) if value is not None and np.isfinite(value) else default


def _answer(results: dict) -> str:
    """The study's answer in sentences, from the numbers (whatever they say)."""
    comp = results.get("compare") or {}
    parts = []
    for method, name in (("bon", "Best-of-n"), ("sft", "Reward-weighted SFT"), ("rl", "RL (DDPO)"),
                         ("draft", "Reward-gradient fine-tuning (DRaFT)")):
        c = comp.get(method)
        if not c or "win" not in c:
            off = method != "bon" and (results.get(method) or {}).get("skipped")
            parts.append(f"<li>{name}: {'not part of this study' if off else 'not run yet'}.</li>")
            continue
        gt, gr = c["gold_textnorm"], c["gold_raw"]
        better = verdict(gr, gt, same="not clearly different")
        parts.append(
            f"<li><b>{name}</b>: best TextNorm-family objective <i>{html_label(c['textnorm_model'])}</i> vs best raw "
            f"<i>{html_label(c['raw_model'])}</i> (each chosen on {c['validation_prompts']} validation prompts), on "
            f"{c['test_prompts']} test prompts: gold {_ci(gt)} vs {_ci(gr)} ({better}); side-by-side "
            f"win / tie / loss {c['win']['mean']:.2f} / {c['tie']['mean']:.2f} / {c['loss']['mean']:.2f} "
            f"(wins : losses = {c['win_to_loss']:.2f} : 1; the paper reports about 2 : 1).</li>")
    # Per reward under DRaFT, and its drift control: the same sentences as the markdown summary.
    parts += [f"<li>{html.escape(line.removeprefix('- '))}</li>" for line in draft_answer(results)]
    return "<ul>" + "".join(parts) + "</ul>"


def _temperature_table(t: dict) -> str:
    rows = [[html.escape(r), f"{v['temperature']:g}", _ci({"mean": v["raw"]["auroc"], "ci": v["raw"]["ci"]["auroc"]}),
             _ci({"mean": v["textnorm"]["auroc"], "ci": v["textnorm"]["ci"]["auroc"]})]
            for r, v in t["rewards"].items()]
    for name, s in (t.get("ensembles") or {}).items():
        rows.append([html_label(name) + (f" (λ = {t['ur_lam']:g}, CV)" if name == "ens-ur-tn" else ""), "",
                     "", _ci({"mean": s["auroc"], "ci": s["ci"]["auroc"]})])
    return _table(["reward", "T (CV)", "raw AUROC", "TextNorm AUROC (held-out folds)"], rows,
                  f"TextNorm temperatures chosen by {t['k']}-fold cross-validation over the prompts of TIA2-Shapes "
                  "(all subsets), contrastive sets from the rules; AUROC per prompt against the annotators")


def _bon_table(bon: dict) -> str:
    ns = bon["ns"]
    show = [i for i, n in enumerate(ns) if n in (1, 4, 16, ns[-1])]
    rows = []
    for o, v in bon["objectives"].items():
        rows.append([html_label(o) if o != "ORACLE gold" else "ORACLE: best by gold itself"] +
                    [_ci(v["gold"][i]) for i in show] + [_ci(v["fidelity"][show[-1]])])
    return _table(["objective"] + [f"gold, n = {ns[i]}" for i in show] + [f"fidelity, n = {ns[show[-1]]}"], rows,
                  "Gold alignment of the best of n (mean over prompts and disjoint groups; 95% bootstrap CI over "
                  "prompts)")


def _eval_table(entries: dict[str, dict], caption: str) -> str:
    rows = []
    for name, s in entries.items():
        own = s["scores"].get(name.split(" @ ")[0]) if name != "base model" else None
        rows.append([html.escape(name), _ci(s["gold"]), _ci(s["fidelity"]), _ci(s["kl"], 2),
                     _ci(s["kl_last_step"], 2) if "kl_last_step" in s else "–",
                     _ci(s["drift"], 1) if "drift" in s else "–",
                     _ci(own) if own else "–"] + [_ci(s["gold_by_subset"].get(x)) for x in
                                                  ("counting", "composition", "comprehensive")])
    return _table(["model", "gold", "fidelity", "KL from base (σ ≥ threshold)", "KL, last step",
                   "pixel drift (uint8 levels)", "optimised reward", "gold: counting", "gold: composition",
                   "gold: comprehensive"], rows, caption)


def _sbs_table(comp: dict) -> str:
    rows = []
    for method in ("bon", "sft", "rl", "draft"):
        c = comp.get(method)
        if not c or "win" not in c:
            continue
        rows.append([method, html_label(c["textnorm_model"]), html_label(c["raw_model"]), str(c["pairs"]),
                     _ci(c["win"]), _ci(c["tie"]), _ci(c["loss"]), f"{c['win_to_loss']:.2f}"])
    return _table(["method", "TextNorm-family model", "best raw model", "pairs", "win", "tie", "loss",
                   "wins : losses"], rows,
                  "Side-by-side: the same prompt and seed, each image judged by 3 simulated annotators (the world's "
                  "noise: flip 10%, unsure 3%), majority verdict; win = only the TextNorm-family image judged aligned")


def _trajectory_table(runs: dict) -> str:
    rows = [[html_label(o), f"{r['trajectory']['peak_gold']:.3f}", str(r["trajectory"]["peak_step"]),
             f"{r['trajectory']['final_gold']:.3f}", _ci(r["trajectory"]["drop"]),
             _ci(r["trajectory"]["change"]) if "change" in r["trajectory"] else "–",
             "–" if o == SIGNAL_FREE_CONTROL else f"{r['trajectory']['proxy_gold_spearman']:.2f}"]
            for o, r in runs.items() if "trajectory" in r]
    return _table(["objective", "peak gold", "at step", "final gold", "drop from peak (paired)",
                   "change from base (paired)", "ρ(proxy, gold)"],
                  rows, "Gold along each run, held out: the drop from the peak is measured from the best of several "
                  "noisy evaluations, so it leans high; the change from the base is unbiased, and the drift control's "
                  "(a random direction per image) is what drift alone costs at its distance; ρ is the rank "
                  "correlation of the optimised reward with gold across the evaluations (none for the drift control, "
                  "whose score is noise by design)")


def _selection_table(sel: dict, method: str = "RL") -> str:
    rows = []
    for o, rules in sel.items():
        for rule, v in rules.items():
            rows.append([html_label(o), rule, v["checkpoint"], _ci(v["gold"])])
    return _table(["run", "checkpoint chosen by", "checkpoint", "test gold"], rows,
                  f"Choosing the {method} checkpoint without gold (on validation prompts), gold on the test prompts; "
                  "the ORACLE row uses gold on the validation prompts")


def _rl_rows(rl: dict, evaluations: Path, n_bootstrap: int) -> dict:
    """Add CI bounds to the RL evaluation rows from the stored evaluations."""
    for run in rl.values():
        for e in run["evals"]:
            path = evaluations / f"{e['tag']}.json"
            if path.is_file() and "gold_lo" not in e:
                s = summarize_records(read_json(path), n_bootstrap)
                e["gold_lo"], e["gold_hi"] = s["gold"]["ci"]
                e["fidelity_lo"], e["fidelity_hi"] = s["fidelity"]["ci"]
                e["summary"] = s
    return rl


def _not_run(result: dict | None, section: str) -> str:
    """The note of a stage without results: switched off in the config, or not reached yet."""
    if result and result.get("skipped"):
        return f"<p class=note>Not part of this study ({section}.enabled: false in its config).</p>"
    return "<p class=note>Not run yet.</p>"


REPORT_FILES = ("results.json", "samples.jsonl", "report.html")


@dataclass
class ReportInputs:
    """What the report is made of: the study's config, every stage's result (``None``: not run yet) and the folder
    of the stored evaluations (``<tag>.json`` records, ``<tag>.safetensors`` images)."""

    cfg: StudyConfig
    results: dict[str, Any]
    evaluations: Path


def write_report(inputs: ReportInputs) -> None:
    """Write ``report.html``, ``results.json`` and ``samples.jsonl`` into ``cfg.out`` as one unit: they are made in
    a staging folder and moved into place together only when all three are complete, so a failed report never
    leaves new results beside an old report."""
    import os
    import shutil

    final = Path(inputs.cfg.out)
    out = final / ".report.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        _write_report_files(inputs, out)
        for name in REPORT_FILES:
            os.replace(out / name, final / name)
        mark_run_dir(final, "report", work=inputs.cfg.work)  # whose report this is (see run.check_report_folder)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _write_report_files(inputs: ReportInputs, out: Path) -> None:
    cfg, evaluations = inputs.cfg, inputs.evaluations
    results = dict(inputs.results)
    for method in ("rl", "draft"):
        if results.get(method) and not results[method].get("skipped"):
            results[method] = _rl_rows(results[method], evaluations, cfg.bootstrap)
    results["config"] = cfg.to_dict()
    write_json_atomic(out / "results.json", results)

    tags: list[tuple[str, str | None, str]] = []
    if results["base"]:
        tags.append(("base", None, "base model"))
    for o, r in (results["sft"] or {}).items():
        if isinstance(r, dict) and "tag" in r:
            tags.append((r["tag"], o, f"SFT: {label(o)}"))
    for o, run in (results["rl"] or {}).items():
        if isinstance(run, dict) and "evals" in run:
            for e in run["evals"][1:]:
                tags.append((e["tag"], o, f"RL: {label(o)} @ epoch {int(e['step'])}"))
    for o, run in (results.get("draft") or {}).items():
        if isinstance(run, dict) and "evals" in run and len(run["evals"]) > 1:
            e = run["evals"][-1]
            tags.append((e["tag"], o, f"DRaFT: {label(o)} @ step {int(e['step'])}"))
    with atomic_write(out / "samples.jsonl") as f:
        for tag, _objective, _title in tags:
            for r in read_json(evaluations / f"{tag}.json"):
                f.write(json.dumps({"model": tag, **r}) + "\n")

    h = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>textnorm study</title><style>{CSS}"
         "</style></head><body>",
         "<h1>Does optimising a TextNorm reward give better-aligned models than the raw reward?</h1>",
         "<p>On the embedded world: the shapes generator, the oracle judge (gold alignment) and simulated "
         "annotators. Every objective is optimised with the same compute; models are evaluated on held-out "
         "prompts. Intervals are 95% percentile bootstraps over prompts.</p>",
         "<h2>Answer</h2>", _answer(results)]
    p = results["prompts"]
    if p:
        ntr = sum(len(v) for v in p["train"].values())
        nev = sum(len(v) for v in p["eval"].values())
        notes = "".join("; " + n for n in p.get("notes", []))
        split = ", ".join(f"{s}: {len(v)} + {len(p['eval'][s])}" for s, v in p["train"].items())
        h.append(f"<h2>Setup</h2><p>{ntr} training prompts and {nev} disjoint held-out evaluation prompts "
                 f"({split}); excluded: {p['excluded']}{notes}. "
                 f"Pool: {cfg.pool.n_max} samples per training prompt, {cfg.pool.steps} DDIM steps "
                 f"(eta {cfg.pool.eta}). Held-out evaluation: {cfg.eval.samples_per_prompt} samples per prompt "
                 f"({nev * cfg.eval.samples_per_prompt} images), stochastic DDIM with {cfg.eval.steps} steps, the same "
                 "noise for every model. Fidelity: every detected object is a recognisable shape and colour.</p>")
    if results["temperatures"]:
        h.append(_temperature_table(results["temperatures"]))
    h.append("<h2>Best-of-n on one shared pool</h2>")
    if results["bon"]:
        h += [_img(bon_plot(results["bon"]), "best-of-n curves"), _bon_table(results["bon"])]
    else:
        h.append("<p class=note>Not run yet.</p>")
    h.append("<h2>When does TextNorm help? shapes-perceive over look weight × perception noise</h2>")
    if results["map"] and not results["map"].get("skipped"):
        h += [_img(map_plot(results["map"]), "map"),
              f"<p>Each cell: gold of best-of-{results['map']['n']} by TextNorm minus by the raw reward (paired CI "
              "over prompts), and the reward's diagnosis on TIA2-Shapes (mean over subsets of the AUROC of its "
              "prompt-independent offset and of its contrast, as <code>textnorm diagnose</code> reports them). "
              "Place your own reward by its diagnosis.</p>"]
    else:
        h.append(_not_run(results["map"], "map"))
    if results["base"]:
        threshold = results["config"].get("eval", {}).get("kl_min_std")
        h.append(_eval_table({"base model": results["base"]["summary"]}, "The base model on the held-out prompts. "
                             + ("KL from the base model (nats per image, stochastic sampler) sums the denoising steps "
                                f"with σ ≥ {threshold:g} but the last stochastic one, shown apart: its tiny σ makes "
                                "a shift of one uint8 level in every pixel cost thousands of nats, so read it beside "
                                "the pixel drift (RMS change from the base model's image of the same seed)"
                                if threshold is not None else "KL sums every denoising step")))
    h.append("<h2>Reward-weighted SFT (top 10% of the pool per prompt)</h2>")
    sft = results["sft"] or {}
    if sft and not sft.get("skipped"):
        h.append(_eval_table({o: r["summary"] for o, r in sft.items()},
                             f"Held-out evaluation after {cfg.sft.train.steps} steps (batch "
                             f"{cfg.sft.train.train_batch_size}, lr {cfg.sft.train.lr:g}) for every objective"))
    else:
        h.append(_not_run(results["sft"], "sft"))
    h.append("<h2>RL (DDPO)</h2>")
    rl = results["rl"] or {}
    if rl and not rl.get("skipped"):
        rc = cfg.rl.train
        h += [f"<p>{rc.epochs} epochs × {rc.batch_size} samples, {rc.train_batch_size} per gradient step, lr "
              f"{rc.lr:g}, PPO clip {rc.clip_range:g}, LoRA rank {rc.lora.rank}, {rc.sampling.steps} DDIM steps; "
              f"evaluated every {cfg.rl.eval_every} epochs.</p>", _img(rl_plot(rl), "RL curves"),
              _eval_table({f"{o} @ {int(run['evals'][-1]['step'])}": run["evals"][-1]["summary"]
                           for o, run in rl.items() if "summary" in run["evals"][-1]},
                          "Held-out evaluation at the last epoch")]
    else:
        h.append(_not_run(results["rl"], "rl"))
    h.append("<h2>Reward-gradient fine-tuning (DRaFT)</h2>")
    draft = results.get("draft") or {}
    if draft and not draft.get("skipped"):
        dc = cfg.draft.train
        h += [f"<p>DRaFT-{dc.truncation_steps}: the reward's gradient through the last {dc.truncation_steps} of "
              f"{cfg.eval.steps} DDIM steps (eta {cfg.draft.eta:g}); {dc.steps} steps × {dc.batch_size} images, "
              f"LoRA rank {dc.lora.rank}, regulariser {dc.reg_coef:g}; learning rate "
              + (f"chosen per objective from {', '.join(f'{lr:g}' for lr in cfg.draft.lrs)} by the objective's own "
                 f"score on the validation prompts after {cfg.draft.lr_steps} steps (never by gold"
                 + ("; the signal-free drift control, with nothing to choose by, at the largest"
                    if SIGNAL_FREE_CONTROL in draft else "") + "): "
                 + ", ".join(f"{html_label(o)} {r['config']['lr']:g}" for o, r in draft.items())
                 if cfg.draft.lrs else f"{dc.lr:g} for every objective")
              + f"; evaluated every {cfg.draft.eval_every} steps on the held-out prompts with images sampled as in "
              f"training (eta {cfg.draft.eta:g}; step 0 is the base model sampled the same way) and the KL of the "
              "stochastic policy, the same noise for every model.</p>",
              _img(rl_plot(draft, unit="step"), "DRaFT curves"),
              "<p>Over-optimisation, per reward (raw dashed red, TextNorm solid blue; in every distance panel the "
              "drift control dotted grey and the prompt-free control dash-dot black, when they ran): gold against "
              "the optimised "
              "reward's gain (in units of its spread over prompts under the base model, so raw and TextNorm share an "
              "axis), against sqrt(KL) over every stochastic step (DRaFT trains through the last one) and against "
              "the pixel drift; a line that turns down while moving right optimises its proxy past the point where it "
              "agrees with gold, and a run below the grey control at the same distance lost more than drift alone "
              "costs.</p>",
              _img(overoptimisation_plot(draft, read_json(evaluations / f"{base_tag(cfg.draft.eta)}.json")),
                   "over-optimisation"),
              _trajectory_table(draft),
              _eval_table({f"{o} @ {int(run['evals'][-1]['step'])}": run["evals"][-1]["summary"]
                           for o, run in draft.items() if "summary" in run["evals"][-1]},
                          "Held-out evaluation at the last step")]
    else:
        h.append(_not_run(results.get("draft"), "draft"))
    comp = results["compare"] or {}
    h.append("<h2>Side-by-side judgments</h2>")
    h.append(_sbs_table(comp) if comp else "<p class=note>Not run yet.</p>")
    if comp.get("checkpoint_selection"):
        h += ["<h2>Checkpoint selection without gold</h2>", _selection_table(comp["checkpoint_selection"])]
    if comp.get("draft_checkpoint_selection"):
        h.append(_selection_table(comp["draft_checkpoint_selection"], "DRaFT"))
    if tags and p:
        evals = [q for qs in p["eval"].values() for q in qs[: GRID_PROMPTS // 3]]
        h.append("<h2>Images</h2><p>The first sample of the same held-out prompts (same noise) for every model, "
                 "captioned with the optimised reward and the oracle's verdict and reasons.</p>")
        h.append("<p class=prompts>Prompts, left to right: " + "; ".join(html.escape(q) for q in evals) + "</p>")
        for tag, objective, title in tags:
            h += [f"<h3>{html.escape(title)}</h3>", image_grid(evaluations, tag, objective, evals)]
    if results["timings"]:
        h.append(_table(["stage", "seconds"], [[k, f"{v:.0f}"] for k, v in results["timings"].items()],
                        "Time of each stage on this machine"))
    h.append("</body></html>")
    with atomic_write(out / "report.html") as f:
        f.write("\n".join(h))
