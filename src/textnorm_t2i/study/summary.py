"""The study's numbers as markdown, from its ``results.json`` (docs/study.md's study section is this text).

Example:
    >>> fmt_ci({"mean": 0.5, "ci": [0.4, 0.61]})
    '0.500 [0.400, 0.610]'
"""

from __future__ import annotations

from typing import Any

from textnorm_t2i import tables
from textnorm_t2i.study.config import DRAFT_CONTROL_REWARD, DRAFT_CONTROLS, SIGNAL_FREE_CONTROL
from textnorm_t2i.study.objectives import label
from textnorm_t2i.study.verdict import verdict

# What each of DRaFT's controls is, for its line of the answer (the line closes the parenthesis with lr and distance).
CONTROL_WHAT = {
    "control/random-direction": f"drift control ({DRAFT_CONTROL_REWARD}'s image embedding against a random direction "
                                "drawn for every image: the objectives' model and gradient path with no signal",
    "control/prompt-free": f"prompt-free control ({DRAFT_CONTROL_REWARD} averaged over the training prompts, the same "
                           "model and scale with nothing about the image's prompt"}


def fmt_ci(m: dict | None, digits: int = 3) -> str:
    """``mean [low, high]`` of a ``{"mean", "ci"}`` entry."""
    if not m or m.get("mean") is None:
        return "–"
    lo, hi = m["ci"]
    return f"{m['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return tables.markdown(header, rows)


def _engine(section: dict) -> dict:
    """A fine-tuning section's engine settings: ``train`` (the first edition's results.json kept them flat)."""
    return section.get("train", section)


def _pick_ns(ns: list[int]) -> list[int]:
    wanted = [1, 4, 16, ns[-1]]
    return [n for n in ns if n in wanted]


def bon_section(results: dict) -> list[str]:
    bon = results.get("bon")
    if not bon:
        return []
    ns = bon["ns"]
    shown = _pick_ns(ns)
    rows = []
    for name, row in bon["objectives"].items():
        rows.append([label(name) if name != "ORACLE gold" else "ORACLE (best by gold itself)"]
                    + [fmt_ci(row["gold"][ns.index(n)]) for n in shown])
    n_prompts = sum(len(v) for v in results["prompts"]["train"].values())
    return [f"**Best-of-n on one shared pool** ({n_prompts} training prompts × {ns[-1]} samples; gold alignment of "
            "the best of n, mean over prompts [95% bootstrap CI]):", "",
            _table(["objective"] + [f"n = {n}" for n in shown], rows)]


def map_section(results: dict) -> list[str]:
    m = results.get("map")
    if not m or m.get("skipped"):
        return []
    noises = m["noise_scales"]
    cell = {(c["w"], c["noise"]): c for c in m["cells"]}
    rows = []
    for w in m["look_weights"]:
        row = [f"w = {w:g}"]
        for z in noises:
            c = cell[(w, z)]
            row.append(f"{fmt_ci(c['difference'])} (offset {c['auroc']['offset']:.2f}, contrast "
                       f"{c['auroc']['contrast']:.2f})")
        rows.append(row)
    return [f"**When TextNorm helps** (shapes-perceive with look weight w × perception noise: gold of best-of-{m['n']} "
            "by TextNorm minus by the raw reward [95% CI, paired over prompts]; the cell's diagnosis on TIA2-Shapes: "
            "AUROC of its prompt-independent offset and of its contrast):", "",
            _table(["look weight"] + [f"noise {z:g}×" for z in noises], rows)]


def _eval_rows(entries: dict[str, dict]) -> list[list[str]]:
    rows = []
    for name, s in entries.items():
        rows.append([name, fmt_ci(s["gold"]), fmt_ci(s["fidelity"]), f"{s['kl']['mean']:.0f}",
                     f"{s['kl_last_step']['mean']:.0f}" if "kl_last_step" in s else "–",
                     fmt_ci(s["drift"], 1) if "drift" in s else "–"])
    return rows


def sft_section(results: dict) -> list[str]:
    sft = results.get("sft") or {}
    if not sft or sft.get("skipped"):
        return []
    entries = {"base model": results["base"]["summary"]} if results.get("base") else {}
    entries.update({label(o): r["summary"] for o, r in sft.items()})
    cfg = _engine(results["config"]["sft"])
    return [f"**Reward-weighted SFT** (top {cfg['top_fraction']:.0%} of the pool per prompt by each objective, "
            f"{cfg['steps']} steps each; held-out prompts):", "",
            _table(["model", "gold alignment", "fidelity", "KL from base (nats)", "KL, last step (nats)",
                    "pixel drift (uint8 levels)"], _eval_rows(entries))]


def _runs(results: dict, stage: str) -> tuple[dict, dict]:
    """A fine-tuning stage's runs and its engine settings (``({}, {})`` when it did not run)."""
    runs = results.get(stage) or {}
    if not runs or runs.get("skipped"):
        return {}, {}
    return runs, _engine(results["config"][stage])


def rl_section(results: dict) -> list[str]:
    rl, cfg = _runs(results, "rl")
    if not rl:
        return []
    rows = []
    for o, run in rl.items():
        for e in run["evals"]:
            s = e.get("summary")
            gold = fmt_ci(s["gold"]) if s else f"{e['gold']:.3f}"
            rows.append([label(o), str(int(e["step"])), f"{e['objective']:.4g}", gold, f"{e['kl']:.0f}"])
    return [f"**RL (DDPO)** ({cfg['epochs']} epochs × {cfg['batch_size']} samples in groups of "
            f"{cfg.get('images_per_prompt', 1)} per prompt, lr {cfg['lr']:g}, clip {cfg['clip_range']:g}; "
            "held-out prompts):", "",
            _table(["objective", "epoch", "optimised reward", "gold alignment", "KL from base (nats)"], rows)]


def draft_section(results: dict) -> list[str]:
    """Per DRaFT run: its peak gold (step), its final gold, and the drop from the peak, held out."""
    draft, cfg = _runs(results, "draft")
    if not draft:
        return []
    rows = []
    for o, run in draft.items():
        ev, tr = run["evals"], run["trajectory"]
        last = ev[-1]
        gold = fmt_ci(last["summary"]["gold"]) if last.get("summary") else f"{last['gold']:.3f}"
        rows.append([label(o), f"{run['config']['lr']:g}", f"{tr['peak_gold']:.3f} (step {tr['peak_step']})", gold,
                     fmt_ci(tr["drop"]), fmt_ci(tr["change"]) if "change" in tr else "–",
                     "–" if o == SIGNAL_FREE_CONTROL else f"{tr['proxy_gold_spearman']:.2f}",
                     f"{last['objective'] - ev[0]['objective']:+.4g}",
                     f"{last['kl']:.0f}", f"{last['kl_last_step']:.0f}" if "kl_last_step" in last else "–",
                     f"{last['drift']:.1f}" if last.get("drift") == last.get("drift") and "drift" in last else "–"])
    return [f"**Reward-gradient fine-tuning (DRaFT-{cfg['truncation_steps']})** ({cfg['steps']} steps × "
            f"{cfg['batch_size']} images; held-out prompts; drop = peak minus final gold, change = final gold minus "
            "the base's (step 0), both paired over prompts; ρ = rank correlation of the optimised reward with gold "
            f"along the run; KL over the steps with σ ≥ {_kl_threshold(results)}, the last stochastic step apart; "
            "pixel drift = RMS difference from the base model's image of the same seed):", "",
            _table(["objective", "lr", "peak gold (step)", "final gold", "drop from peak", "change from base",
                    "ρ(proxy, gold)", "optimised reward gain", "KL from base (nats)", "KL, last step (nats)",
                    "pixel drift (uint8 levels)"], rows)]


def _kl_threshold(results: dict) -> str:
    """The σ threshold of the headline KL (the first edition summed every step)."""
    threshold = results["config"].get("eval", {}).get("kl_min_std")
    return f"{threshold:g}" if threshold is not None else "0 (every step)"


def compare_section(results: dict) -> list[str]:
    comp = results.get("compare") or {}
    rows = []
    for method in ("bon", "sft", "rl", "draft"):
        c = comp.get(method)
        if not c or c.get("skipped"):
            continue
        rows.append([method, f"{label(c['textnorm_model'])} vs {label(c['raw_model'])}", fmt_ci(c["win"]),
                     fmt_ci(c["tie"]), fmt_ci(c["loss"]), f"{c['win_to_loss']:.2f}",
                     f"{fmt_ci(c['gold_textnorm'])} vs {fmt_ci(c['gold_raw'])}"])
    if not rows:
        return []
    out = ["**Side-by-side** (each family's best model, chosen by gold on a validation half of the prompts, "
           "compared on the other half; 3 simulated annotators per image):", "",
           _table(["method", "TextNorm family vs raw family", "win", "tie", "loss", "win : loss", "gold"], rows)]
    for key, title in (("checkpoint_selection", "RL checkpoint selection without gold** (epoch"),
                       ("draft_checkpoint_selection", "DRaFT checkpoint selection without gold** (step")):
        sel = comp.get(key) or {}
        if sel:
            rules = list(next(iter(sel.values())))
            srows = [[label(o)] + [f"{r[rule]['checkpoint'].rsplit('-', 1)[-1].lstrip('0') or '0'}: "
                                   f"{fmt_ci(r[rule]['gold'])}" for rule in rules] for o, r in sel.items()]
            out += ["", f"**{title} chosen on validation prompts: test gold):", "", _table(["run"] + rules, srows)]
    return out


def answer(results: dict) -> list[str]:
    """Plain sentences from the numbers: where TextNorm wins, ties or loses."""
    lines = []
    bon = results.get("bon")
    if bon:
        ns = bon["ns"]
        n = 16 if 16 in ns else ns[-1]
        i = ns.index(n)
        for name, row in bon["objectives"].items():
            if not name.startswith("raw/"):
                continue
            tn = bon["objectives"].get("tn/" + name[4:])
            if not tn:
                continue
            a, b = row["gold"][i], tn["gold"][i]
            said = verdict(a, b, "TextNorm higher", "TextNorm lower")
            lines.append(f"- best-of-{n}, {name[4:]}: raw {fmt_ci(a)} vs TextNorm {fmt_ci(b)} — {said}")
    lines += draft_answer(results)
    comp = results.get("compare") or {}
    for method in ("bon", "sft", "rl", "draft"):
        c = comp.get(method)
        if c and not c.get("skipped"):
            winner = verdict(c["loss"], c["win"], "TextNorm family wins", "raw family wins", "no clear winner")
            lines.append(f"- side-by-side, {method}: win {c['win']['mean']:.3f} / loss {c['loss']['mean']:.3f} "
                         f"({label(c['textnorm_model'])} vs {label(c['raw_model'])}) — {winner}")
    return lines


def draft_answer(results: dict) -> list[str]:
    """Per reward optimised raw and through TextNorm by DRaFT (and the mean ensembles of both): final gold (with
    CIs), the paired difference, peak gold and the drop; then the drift control's change of gold from the base, at
    its KL and pixel drift."""
    draft, _ = _runs(results, "draft")
    pairs = (results.get("compare") or {}).get("draft_pairs") or {}
    lines = []
    for reward, pair in pairs.items():
        raw, tn = draft.get(pair["raw"]), draft.get(pair["textnorm"])
        if not raw or not tn or not raw["evals"][-1].get("summary") or not tn["evals"][-1].get("summary"):
            continue
        a, b = raw["evals"][-1]["summary"]["gold"], tn["evals"][-1]["summary"]["gold"]
        ra, rb = raw["trajectory"], tn["trajectory"]
        d = pair["difference"]
        paired = ("TextNorm lower" if d["ci"][1] < 0 else "TextNorm higher" if d["ci"][0] > 0 else
                  "no clear difference")
        lines.append(f"- DRaFT, {reward}: final gold raw {fmt_ci(a)} vs TextNorm {fmt_ci(b)} — "
                     f"{verdict(a, b, 'TextNorm higher', 'TextNorm lower')}; paired over prompts TextNorm − raw "
                     f"{fmt_ci(d)} ({paired}); peak gold {ra['peak_gold']:.3f} (step {ra['peak_step']}) vs "
                     f"{rb['peak_gold']:.3f} (step {rb['peak_step']}); drop from the peak {fmt_ci(ra['drop'])} vs "
                     f"{fmt_ci(rb['drop'])}")
    for name, run in draft.items():
        change = run["trajectory"].get("change")
        if name not in DRAFT_CONTROLS or not change:
            continue
        first, last = run["evals"][0], run["evals"][-1]
        moved = (f"its own score moved {last['objective'] - first['objective']:+.3g}"
                 + (" (noise by design: a fresh direction per image)" if name == SIGNAL_FREE_CONTROL else "")
                 + f", fidelity {first['fidelity']:.3f} → {last['fidelity']:.3f}")
        if change["ci"][1] < 0:
            said = f"gold fell; {moved}"
        elif change["ci"][0] > 0:
            said = (f"gold rose: drift alone raised it, or chance; {moved}" if name == SIGNAL_FREE_CONTROL else
                    "gold rose: the control's reward carries some alignment signal, so it is no null control")
        else:
            said = f"no change detected (its interval spans {change['ci'][1] - change['ci'][0]:.3f}); {moved}"
        if name == SIGNAL_FREE_CONTROL:
            # One random walk: the interval is over prompts, not over walks; it speaks for distances up to its own.
            said += "; one run, so its interval is over prompts, not over repeats of the walk"
        where = f"KL {last['kl']:.0f} + {last['kl_last_step']:.0f} (last step) nats" if "kl_last_step" in last else \
            f"KL {last['kl']:.0f} nats"
        if last.get("drift") is not None and last["drift"] == last["drift"]:
            where += f", pixel drift {last['drift']:.1f} uint8 levels"
        lines.append(f"- DRaFT {CONTROL_WHAT[name]}; lr {run['config']['lr']:g}, {where}): gold change from the base "
                     f"{fmt_ci(change)} — {said}")
    return lines


def timings(results: dict) -> list[str]:
    t = results.get("timings") or {}
    if not t:
        return []
    total = sum(t.values())
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in t.items())
    return [f"Time on 2 CPU cores (minutes): {parts}; total {total / 60:.0f} minutes."]


def summary_markdown(results: dict[str, Any]) -> str:
    """The markdown summary of a study's ``results.json``."""
    parts: list[list[str]] = [["Per objective (TextNorm against the same reward raw):", *answer(results)],
                              bon_section(results), map_section(results), sft_section(results), rl_section(results),
                              draft_section(results), compare_section(results), timings(results)]
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"

