"""Every generated block of the README and of the documentation pages equals what its command prints.

The checked files are README.md and every Markdown page under docs/ (:func:`documentation_files`). A block is
written in any of them as

    <!-- generated: textnorm tia2 table --published --format markdown -->
    ...the command's output...
    <!-- end generated -->

`python tools/readme_check.py` runs each block's command (the ``textnorm`` CLI, in this process) and
reports every block whose text differs, naming its file; `--update` rewrites those blocks in the file that
holds them. `--only WORD` checks the blocks whose command contains WORD. Numbers quoted in prose must read as
their records say in whichever checked file quotes them (the README's headline results in the README itself),
and docs/index.md (the site's home) must be the README with its links made relative to docs/ (`--update`
writes it). `make readme-check` runs it; `tests/test_readme.py` runs the cheap blocks in the test suite.

What is compared exactly and what within a tolerance (another CPU's kernels move the last bits of float
results, so nothing may depend on them):

- Blocks rendered from committed data or records (the published TIA2 tables, ``diagnose --from-json``,
  ``study summary``) and quoted numbers (read from committed records) are compared to the character: they
  involve no floating-point model at check time.
- Blocks that run reward models on images at check time (``world benchmark table``) are compared with the
  same text and the same integers, and each decimal number within one unit of its last printed digit
  (:data:`TOLERANT_BLOCKS`): a score that moves in its last bits can flip a near-tie in an AUROC and move a
  mean across a rounding boundary of the printed third decimal. A block within tolerance is not rewritten.
- Records rerun by ``--records`` (a diagnosis, generator samples judged by the oracle, best-of-n picks) are
  compared with the same keys, rows and integers, and every float within ``RECORD_TOLERANCE`` (relative or
  absolute 0.01): on another CPU a generated pixel can round the other way and flip an oracle verdict or a
  best-of-n pick, which moves a fraction over hundreds of images by a few thousandths.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import math
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INDEX = ROOT / "docs" / "index.md"
BLOCK = re.compile(r"(<!-- generated: (?P<cmd>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def documentation_files() -> list[Path]:
    """The checked files: README.md, then every Markdown page under docs/ (sorted)."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def shown(path: Path) -> str:
    """A checked file's name in messages: its path in the repository (or as given, outside it)."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def blocks(text: str) -> list[re.Match]:
    """The generated blocks of a README or page text, in order."""
    return list(BLOCK.finditer(text))


def run(command: str) -> str:
    """What ``command`` (a ``textnorm ...`` command line) prints on stdout."""
    from textnorm_t2i.cli import main

    argv = shlex.split(command)
    if argv[0] != "textnorm":
        raise SystemExit(f"readme-check: only textnorm commands can generate blocks, not {command!r}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.chdir(ROOT):  # README paths are relative to the repository
        rc = main(argv[1:])
    if rc:
        raise SystemExit(f"readme-check: {command!r} exited with {rc}")
    return out.getvalue()


# Blocks whose numbers come from reward models run at check time (see the module docstring).
TOLERANT_BLOCKS = ("textnorm world benchmark table",)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def within_last_digit(expected: str, got: str) -> bool:
    """True when ``got`` reads as ``expected`` except that a decimal number may differ by one unit of its last
    printed digit (integers, words and layout must be equal).

    Example:
        >>> within_last_digit("| 0.776 [0.70, 0.81] | 12 |", "| 0.775 [0.70, 0.81] | 12 |")
        True
        >>> within_last_digit("| 0.776 | 12 |", "| 0.774 | 12 |"), within_last_digit("| 12 |", "| 13 |")
        (False, False)
    """
    if NUMBER.split(expected) != NUMBER.split(got):
        return False
    for a, b in zip(NUMBER.findall(expected), NUMBER.findall(got), strict=True):
        decimals = len(a.partition(".")[2])
        if decimals != len(b.partition(".")[2]) or (decimals == 0 and a != b):
            return False
        if abs(float(a) - float(b)) > 1.5 * 10 ** -decimals:  # 1.5: one unit, and float error in the subtraction
            return False
    return True


def block_matches(command: str, body: str, fresh: str) -> bool:
    """A block's text against what its command prints now (exact, or within the last digit for
    :data:`TOLERANT_BLOCKS`)."""
    if fresh.strip() == body.strip():
        return True
    return command.startswith(TOLERANT_BLOCKS) and within_last_digit(body.strip(), fresh.strip())


def check(path: Path, update: bool = False, only: str | None = None) -> list[str]:
    """``"FILE: COMMAND"`` for each block of ``path`` that differs from its command (after rewriting the blocks
    in ``path`` when ``update``)."""
    text = path.read_text()
    stale, new, last = [], [], 0
    for m in blocks(text):
        cmd, body = m.group("cmd"), m.group("body")
        new.append(text[last:m.start("body")])
        last = m.end("body")
        if only and only not in cmd:
            new.append(body)
            continue
        t0 = time.time()
        fresh = run(cmd)
        print(f"readme-check: {shown(path)}: {cmd} ({time.time() - t0:.0f} s)", file=sys.stderr)
        if not block_matches(cmd, body, fresh):
            stale.append(f"{shown(path)}: {cmd}")
            sys.stderr.writelines(difflib.unified_diff(body.splitlines(True), fresh.splitlines(True), shown(path),
                                                       cmd, n=0))
            new.append(fresh if fresh.endswith("\n") else fresh + "\n")
        else:
            new.append(body)  # within tolerance: the file keeps the numbers it has
    new.append(text[last:])
    if update and stale:
        path.write_text("".join(new))
    return stale


# ------------------------------------------------------------------------------------------- the site's home
INDEX_NOTE = ("\n<!-- This page is README.md with its links made relative to docs/; "
              "`make readme-update` (tools/readme_check.py --update) writes it. -->\n")


def index_text(readme: str) -> str:
    """docs/index.md as it must read: the README, its links into docs/ made relative to docs/.

    Example:
        >>> index_text("See [the study](docs/study.md).\\n").splitlines()[0]
        'See [the study](study.md).'
    """
    return readme.replace("](docs/", "](") + INDEX_NOTE


def check_index(update: bool = False, readme: Path = README, index: Path = INDEX) -> list[str]:
    """``[]`` when ``index`` is the README's :func:`index_text`, else one line saying so (after writing it when
    ``update``)."""
    want = index_text(readme.read_text())
    have = index.read_text() if index.is_file() else ""
    if have == want:
        return []
    sys.stderr.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True), shown(index),
                                               f"{shown(readme)} with links relative to docs/", n=0))
    if update:
        index.write_text(want)
    return [f"{shown(index)}: not {shown(readme)} with its links made relative to docs/"]


# ------------------------------------------------------------------------------------------- records
# Files the blocks and quoted numbers of the README and the docs pages are read from, each with the command that
# makes it ({out}: a scratch path). `--records` reruns every command and compares its output with the committed
# file (keys that measure time are left out of the comparison). About 30 minutes on 2 cores.
RECORDS = [
    ("docs/diagnosis/embedded.json",
     "textnorm diagnose --reward shapes-clip-a --reward shapes-clip-b --reward shapes-pref --reward "
     "shapes-perceive-clean --reward shapes-perceive-noisy --reward shapes-perceive-looks --json -o {out}", ""),
    ("docs/diagnosis/detect.json", "textnorm diagnose --reward shapes-detect --json -o {out}", ""),
    ("docs/generator_validity.json", "python benchmarks/generator_validity.py -o {out}", ""),
    ("docs/diagnosis/bon-perceive-clean-raw.csv", "textnorm finetune --method bon --config configs/bon.yaml --set "
     "reward.name=shapes-perceive-clean --set out={out}", "bon.csv"),
    ("docs/diagnosis/bon-perceive-clean-textnorm.csv", "textnorm finetune --method bon --config configs/bon.yaml "
     "--set reward.name=shapes-perceive-clean --set reward.textnorm=true --set out={out}", "bon.csv"),
]
TIMING_KEYS = {"seconds"}
RECORD_TOLERANCE = 0.01  # relative or absolute, for floats of a rerun record (see the module docstring)


def _without_timings(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def records_agree(committed: object, fresh: object, tol: float = RECORD_TOLERANCE) -> bool:
    """Two parsed records with the same structure, strings, booleans and integers, and floats within ``tol``.

    Example:
        >>> records_agree({"n": 800, "aligned": 0.4825}, {"n": 800, "aligned": 0.48375})
        True
        >>> records_agree({"n": 800, "aligned": 0.4825}, {"n": 801, "aligned": 0.4825})
        False
    """
    if isinstance(committed, dict) and isinstance(fresh, dict):
        return committed.keys() == fresh.keys() and all(records_agree(committed[k], fresh[k], tol) for k in committed)
    if isinstance(committed, list) and isinstance(fresh, list):
        return len(committed) == len(fresh) and all(records_agree(a, b, tol) for a, b in zip(committed, fresh))
    if isinstance(committed, float) or isinstance(fresh, float):
        if isinstance(committed, bool) or isinstance(fresh, bool) or not isinstance(fresh, int | float):
            return False
        return math.isclose(committed, fresh, rel_tol=tol, abs_tol=tol) or (committed != committed and fresh != fresh)
    return committed == fresh


def _csv_rows(text: str) -> list[dict]:
    """A CSV record's rows, with numbers parsed (integers as int, others as float)."""
    import csv

    def value(cell: str) -> object:
        for kind in (int, float):
            try:
                return kind(cell)
            except ValueError:
                pass
        return cell

    return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def check_records() -> list[str]:
    """The committed record files that their command no longer reproduces."""
    import json
    import subprocess
    import tempfile

    stale = []
    for path, command, inside in RECORDS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / ("run" if inside else Path(path).name)
            argv = shlex.split(command.format(out=out))
            t0 = time.time()
            if argv[0] == "textnorm":
                run(shlex.join(argv))  # in this process; exits on failure
            else:
                rc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, stdout=subprocess.DEVNULL).returncode
                if rc:
                    raise SystemExit(f"readme-check: {command!r} exited with {rc}")
            fresh = (out / inside if inside else out).read_text()
        committed = (ROOT / path).read_text()
        if path.endswith(".json"):
            same = records_agree(_without_timings(json.loads(committed)), _without_timings(json.loads(fresh)))
        else:
            same = records_agree(_csv_rows(committed), _csv_rows(fresh))
        print(f"readme-check: {path} {'reproduced' if same else 'DIFFERS'} by {command} ({time.time() - t0:.0f} s)",
              file=sys.stderr)
        if not same:
            stale.append(path)
    return stale


# ------------------------------------------------------------------------------------------- quotes
def _read(path: str) -> Any:
    """A JSON record of the repository."""
    from textnorm_t2i.io import read_json

    return read_json(ROOT / path)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def quoted_numbers() -> list[tuple[str, str]]:
    """``(record, text)``: numbers the README and the docs pages quote in prose, as they must read given the record
    files (each in at least one checked file; the README's own headline numbers are :func:`headline_quotes`)."""
    import csv

    def bon(kind: str) -> dict[int, float]:
        with (ROOT / f"docs/diagnosis/bon-perceive-clean-{kind}.csv").open() as f:
            return {int(r["n"]): float(r["gold_alignment"]) for r in csv.DictReader(f)}

    quotes = []
    v = _read("docs/generator_validity.json")
    quotes.append(("docs/generator_validity.json",
                   f"aligned counting {_pct(v['counting']['aligned_fraction'])}, composition "
                   f"{_pct(v['composition']['aligned_fraction'])}, comprehensive "
                   f"{_pct(v['comprehensive']['aligned_fraction'])}"))
    raw, tn = bon("raw"), bon("textnorm")
    quotes.append(("docs/diagnosis/bon-perceive-clean-*.csv",
                   f"rises from {raw[1]:.3f} (n = 1) to {raw[8]:.3f} (n = 8) and {raw[32]:.3f} (n = 32) with the raw "
                   f"reward, and to {tn[8]:.3f} (n = 8) and {tn[32]:.3f} (n = 32) with TextNorm"))
    quotes += prose_quotes()
    quotes += draft_quotes()
    quotes += sft_quotes()
    for path, make in BENCHMARK_QUOTES:
        if (ROOT / path).is_file():
            quotes.append((path, make(_read(path))))
    return quotes


def _span(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def _table_rows(command: str) -> list[list[str]]:
    """The data rows of the generated markdown table of ``command`` (itself checked against it), in whichever
    checked file holds it."""
    body = next(m.group("body") for path in documentation_files() for m in blocks(path.read_text())
                if m.group("cmd") == command)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in body.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return [r for r in rows if r[0] != "subset"]


def prose_quotes() -> list[tuple[str, str]]:
    """Summary numbers the prose takes from the generated tables and record files."""
    quotes = []
    info = _json_of("textnorm tia2 info --benchmark shapes --json")
    aligned = {subset: row["aligned_fraction"] for subset, row in info.items()}
    quotes.append(("textnorm tia2 info --benchmark shapes", f"Aligned fractions (majority vote): counting "
                   f"{aligned['counting']:.3f}, composition {aligned['composition']:.3f}, comprehensive "
                   f"{aligned['comprehensive']:.3f}"))
    real = _json_of("textnorm tia2 info --json")
    quotes.append(("textnorm tia2 info", f"({real['counting']['evaluated_prompts']} counting, "
                   f"{real['composition']['evaluated_prompts']} composition, "
                   f"{real['comprehensive']['evaluated_prompts']} comprehensive prompts)"))
    built = _read("src/textnorm_t2i/data/benchmarks/shapes/benchmark.json")
    quotes.append(("src/textnorm_t2i/data/benchmarks/shapes/benchmark.json",
                   f"built in {built['seconds'] / 60:.1f} minutes on 2 CPU cores"))
    table = _table_rows("textnorm world benchmark table --benchmark shapes --format markdown")
    auroc = {(r[0], r[1]): float(r[3].split()[0]) for r in table}
    proxies = [v for (_, model), v in auroc.items() if model in ("shapes-clip-a", "shapes-clip-b")]
    best = max(((model, v) for (subset, model), v in auroc.items() if subset == "composition"), key=lambda x: x[1])
    quotes.append(("the misalignment table", f"far from perfect (AUROC {_span(proxies)})"))
    quotes.append(("the misalignment table", f"helps a little on composition (best: the "
                   f"{best[0].replace('ensemble-mean(textnorm)', 'mean ensemble')}, {best[1]:.3f})"))
    learned = ("shapes-clip-a", "shapes-clip-b", "shapes-pref")
    diag = _read("docs/diagnosis/embedded.json")
    rows = [(name, row) for name in learned for row in diag[name]["subsets"].values()]
    relation = [row["contrastive_accuracy"][w]["relation"]["accuracy"] for _, row in rows
                for w in ("clean", "generated") if row["contrastive_accuracy"][w]["relation"]["pairs"]]
    quotes.append(("docs/diagnosis/embedded.json", f"informative but far from perfect (AUROC "
                   f"{_span([row['auroc']['raw']['mean'] for _, row in rows])}), weakest at counting and at spatial "
                   f"relations (relation-swap accuracy {_span(relation)}, chance is 0.5)"))
    quotes.append(("docs/diagnosis/embedded.json",
                   f"contrast {_span([row['auroc']['contrast']['mean'] for _, row in rows])})"))
    quotes.append(("docs/diagnosis/embedded.json", f"It took {_span([r['seconds'] for r in diag.values()], 0)} s "
                   "per reward on TIA2-Shapes"))
    clean = [row["auroc"][part]["mean"] for row in diag["shapes-perceive-clean"]["subsets"].values()
             for part in ("raw", "contrast")]
    quotes.append(("docs/diagnosis/embedded.json", f"reaches {_span(clean)} raw and contrast on every subset"))
    proxies_table = _table_rows("textnorm world benchmark table --benchmark shapes --reward shapes-clip-a --reward "
                                "shapes-clip-b --reward shapes-pref --oracle --format markdown")
    comp = {r[1]: float(r[3].split()[0]) for r in proxies_table if r[0] == "composition"}
    tn = [v for m, v in comp.items() if m.startswith("textnorm(")]
    raw = [v for m, v in comp.items() if m in learned]
    quotes.append(("the ORACLE misalignment table", f"roughly ties the raw proxies ({_span(tn, 3)} against "
                   f"{_span(raw, 3)})"))
    models = ROOT / "src" / "textnorm_t2i" / "data" / "models"
    quotes += _model_quotes(models)
    from textnorm_t2i.finetune.ddim import DDIMPolicy
    from textnorm_t2i.finetune.models import load_scheduler_config

    stds = [x for x in DDIMPolicy(load_scheduler_config("shapes"), 10).stds if x > 0]
    quotes.append(("the embedded generator's scheduler", f"the step from t = 100 has σ = {stds[-1]:.3f} against "
                   f"{_span(stds[:-1])} for the others"))
    study = _read("docs/study/results.json")
    top = max(study["map"]["look_weights"])
    gains = [c["difference"]["mean"] for c in study["map"]["cells"] if c["w"] == top]
    quotes.append(("docs/study/results.json", f"(look weight {top:g}, offset AUROC ≈ 0.5), best-of-16 by TextNorm is "
                   f"{_span(gains)} more often aligned than by the raw reward"))
    return quotes


def _model_quotes(models: Path) -> list[tuple[str, str]]:
    """Numbers the pages give about the shipped models, from their training records and weights."""
    import csv
    import statistics

    from safetensors import safe_open

    with (models / "shapes-generator" / "train_log.csv").open() as f:
        log = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(f)]
    per_step = statistics.median((b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(log, log[1:]))
    config = _read("src/textnorm_t2i/data/models/shapes-generator/training.json")["config"]
    params = 0
    for path in (models / "shapes-generator" / "unet").glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            params += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    pref = _read("src/textnorm_t2i/data/models/shapes-pref/data.json")
    with (models / "shapes-pref" / "train_log.csv").open() as f:
        last_step = [int(r["step"]) for r in csv.DictReader(f)][-1]
    record = "src/textnorm_t2i/data/models/"
    return [
        (record + "shapes-generator", f"`UNet2DConditionModel`, {params / 1e6:.0f}M parameters"),
        (record + "shapes-generator", f"({config['steps']:,} steps × batch {config['batch_size']}; "
                                      f"{log[-1][1] / 60:.0f} minutes on 2 CPU cores, median {per_step:.2f} s "
                                      "per step"),
        (record + "shapes-pref", f"configs/reward-pref.yaml`, {pref['seconds_total']:.0f} s on this CPU"),
        (record + "shapes-pref", f"on {pref['comparisons']:,} simulated comparisons of generator samples "
                                 f"({pref['prompts']} prompts"),
        (record + "shapes-pref", f"(held-out comparison accuracy {pref['heldout_accuracy_before']:.3f} → "
                                 f"{pref['heldout_accuracy']:.3f}, best step {pref['best_step']} of {last_step} run)"),
    ]


def _json_of(command: str) -> dict:
    import json

    return json.loads(run(command))


def _overhead(r: dict) -> str:
    return (f"a CLIP-architecture reward (256 images at 224 px) {r['clip_ratio']:.2f}×; the embedded shapes-clip-b "
            f"(1,024 images at 32 px) {r['embedded_ratio']:.2f}×")


def _rl_throughput(r: dict) -> str:
    rate, peak = r["samples_per_second"], r["peak_memory_mb"]
    return (f"trl {rate['trl']:.2f} samples/s, {peak['trl']:.0f} MB; ours with K=1 {rate['1']:.2f} samples/s "
            f"(×{rate['1'] / rate['trl']:.2f}), {peak['1']:.0f} MB (×{peak['1'] / peak['trl']:.2f}); K=2 "
            f"×{rate['2'] / rate['trl']:.2f} at ×{peak['2'] / peak['trl']:.2f} memory; K=5 "
            f"×{rate['5'] / rate['trl']:.2f} at ×{peak['5'] / peak['trl']:.2f} memory")


def _draft_throughput(r: dict) -> str:
    rate, peak, steady = r["steps_per_second"], r["peak_memory_mb"], r["steady_steps_per_second"]
    return (f"trl {rate['trl']:.2f} steps/s, {peak['trl']:.0f} MB; ours {rate['ours']:.2f} steps/s "
            f"(×{rate['ours'] / rate['trl']:.2f}), {peak['ours']:.0f} MB (×{peak['ours'] / peak['trl']:.2f}); "
            f"steady state after {r['settings']['warmup']} steps ×{steady['ours'] / steady['trl']:.2f}")


def _generator_speed(r: dict) -> str:
    today, new, ratio = r["today"], r["new"], r["ratios"]
    mm = r["machine"]["matmul_gflops"]
    big = str(max(r["settings"]["batches"]))
    many, few = (str(n) for n in r["settings"]["sample_prompts"])
    conv = r["machine"]["conv_gflops"]
    return (f"UNet inference at batch {big}: {today['inference'][big]:.0f} → {new['inference'][big]:.0f} GFLOP/s "
            f"({today['inference'][big] / mm:.0%} → {new['inference'][big] / mm:.0%} of the machine's "
            f"{mm:.0f} GFLOP/s matmul rate, {new['inference'][big] / conv:.0%} of its {conv:.0f} GFLOP/s 3×3 "
            f"convolution rate); guided sampling {today['sampling'][many]:.1f} → "
            f"{new['sampling'][many]:.1f} images/s (×{ratio['sampling@' + many]:.2f}) at {many} prompts per call, "
            f"×{ratio['sampling@' + few]:.2f} at {few}; RL {today['rl_samples_per_second']:.2f} → "
            f"{new['rl_samples_per_second']:.2f} samples/s (×{ratio['rl']:.2f}); DRaFT "
            f"{today['draft_steps_per_second']:.2f} → {new['draft_steps_per_second']:.2f} steps/s "
            f"(×{ratio['draft']:.2f})")


def _rl_snr(r: dict) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rl_gradient_snr import samples_for_cosine

    rows = r["rows"]
    first, rest = rows[0], rows[1:]
    per_batch = f"{r['settings']['prompts']} prompts × {r['settings']['per_prompt']} samples per batch"
    text = (f"with {r['reward']} ({per_batch}) "
            f"the cosine between two batches' gradients is {first['cosine_mean']:+.3f} ± {first['cosine_sd']:.3f} "
            f"({first['pairs']} pairs; control {first['control_mean']:+.3f} ± {first['control_sd']:.3f}) at "
            f"{first['samples']} samples")
    text += "".join(f", {row['cosine_mean']:+.3f} (control {row['control_mean']:+.3f}) at {row['samples']}"
                    for row in rest)
    needed = samples_for_cosine(first["cosine_mean"], first["samples"])
    return (text + f"; at this rate two gradients agree to cosine 0.5 only at about {round(needed, -2):,.0f} samples "
            f"each. Over every stochastic step, the near-deterministic one included, the gradient has "
            f"{r['all_steps_gradient_norm_ratio']:.0f} times the norm it has without it (min_step_std "
            f"{r['settings']['min_step_std']:g})")


def _draft_change(run: str, key: str, first: int, last: int, digits: int = 2) -> str:
    """The paired change of ``key`` from step ``first`` to ``last`` of the DRaFT run docs/draft/RUN, as mean ± SE."""
    from textnorm_t2i.finetune.report import _read_samples, paired_change

    m, se, _ = paired_change(_read_samples(ROOT / "docs" / "draft" / run / "samples.jsonl"), key, first, last)
    return f"{m:+.{digits}f} ± {se:.{digits}f}"


def _draft_mean(run: str, key: str, step: int) -> float:
    """The mean of ``key`` at ``step`` of the DRaFT run docs/draft/RUN (its eval.csv)."""
    import csv

    with (ROOT / "docs" / "draft" / run / "eval.csv").open() as f:
        return next(float(r[key]) for r in csv.DictReader(f) if int(r["step"]) == step)


def draft_quotes() -> list[tuple[str, str]]:
    """What the pages say about the DRaFT runs, from their records in docs/draft (paired changes over the same
    held-out images, mean ± standard error)."""
    change, mean = _draft_change, _draft_mean
    record = "docs/draft/"
    return [
        (record + "clip-a", f"raises the held-out proxy by {change('clip-a', 'objective', 0, 100)} at step 100 and "
                            f"{change('clip-a', 'objective', 0, 140)} at step 140, while gold alignment falls from "
                            f"{mean('clip-a', 'gold_alignment', 0):.3f} to {mean('clip-a', 'gold_alignment', 140):.3f} "
                            f"({change('clip-a', 'aligned', 0, 140)})"),
        (record + "clip-a", f"from step 40 to 140 gold falls {change('clip-a', 'aligned', 40, 140)} while the proxy "
                            f"rises {change('clip-a', 'objective', 40, 140)}"),
        (record + "clip-a-tn", f"leaves its own objective flat ({change('clip-a-tn', 'objective', 0, 140, 3)} at step "
                               f"140) while the raw score falls ({change('clip-a-tn', 'raw_reward', 0, 140)}) and gold "
                               f"falls too ({change('clip-a-tn', 'aligned', 0, 140)})"),
        (record + "clip-a-long", f"gold is {mean('clip-a-long', 'gold_alignment', 300):.3f} by step 300 and the proxy "
                                 f"falls too ({change('clip-a-long', 'objective', 0, 300)})"),
        (record + "detect", f"the proxy rises by {change('detect', 'objective', 0, 25)} at step 25 and gold holds "
                            f"({change('detect', 'aligned', 0, 50)} at step 50); by step 200 the model has collapsed: "
                            f"gold {mean('detect', 'gold_alignment', 0):.3f} → "
                            f"{mean('detect', 'gold_alignment', 200):.3f} ({change('detect', 'aligned', 0, 200)}), "
                            f"fidelity {mean('detect', 'fidelity', 0):.3f} → {mean('detect', 'fidelity', 200):.3f}"),
        (record + "detect", f"from gold's peak at step 50 to step 100 the proxy rises "
                            f"{change('detect', 'objective', 50, 100)} while gold falls "
                            f"{change('detect', 'aligned', 50, 100)} and fidelity "
                            f"{change('detect', 'fidelity', 50, 100)}"),
        (record + "detect-tn", f"its objective ends at {change('detect-tn', 'objective', 0, 200, 3)}, the raw detect "
                               f"score at {change('detect-tn', 'raw_reward', 0, 200)}, gold at "
                               f"{change('detect-tn', 'aligned', 0, 200)} ({mean('detect-tn', 'gold_alignment', 0):.3f}"
                               f" → {mean('detect-tn', 'gold_alignment', 200):.3f}) and fidelity at "
                               f"{change('detect-tn', 'fidelity', 0, 200)}"),
        (record + "detect-5min", f"raises the held-out detect score by {change('detect-5min', 'objective', 0, 50)} by "
                                 f"step 50 ({mean('detect-5min', 'seconds', 50):.0f} s of training); from step 50 to "
                                 f"100 the proxy holds ({change('detect-5min', 'objective', 50, 100)}) while gold "
                                 f"falls {change('detect-5min', 'aligned', 50, 100)} and fidelity "
                                 f"{change('detect-5min', 'fidelity', 50, 100)}"),
        (record + "clip-a-100", f"raises the held-out proxy by {change('clip-a-100', 'objective', 0, 50)} at step 50 "
                                f"and {change('clip-a-100', 'objective', 0, 100)} at step 100 (gold "
                                f"{change('clip-a-100', 'aligned', 0, 100)}, fidelity "
                                f"{change('clip-a-100', 'fidelity', 0, 100)})"),
        (record + "detect-100", f"raises raw shapes-detect by {change('detect-100', 'objective', 0, 100)} (gold "
                                f"{change('detect-100', 'aligned', 0, 100, 3)}, fidelity "
                                f"{change('detect-100', 'fidelity', 0, 100, 3)})"),
        (record + "clip-a-200", f"raw shapes-clip-a peaks at {change('clip-a-200', 'objective', 0, 100)} (step 100) "
                                f"and ends at {change('clip-a-200', 'objective', 0, 200)} with gold at "
                                f"{change('clip-a-200', 'aligned', 0, 200)} and fidelity at "
                                f"{change('clip-a-200', 'fidelity', 0, 200)}"),
        (record + "clip-a-tn-200", f"its TextNorm does not rise ({change('clip-a-tn-200', 'objective', 0, 200, 3)}) "
                                   f"while the raw score falls {change('clip-a-tn-200', 'raw_reward', 0, 200)}, gold "
                                   f"{change('clip-a-tn-200', 'aligned', 0, 200)} and fidelity "
                                   f"{change('clip-a-tn-200', 'fidelity', 0, 200)}"),
        (record + "clip-a", f"KL from the base over the steps with σ ≥ 0.05 reaches "
                            f"{mean('clip-a', 'kl_base', 140):,.0f} nats after 140 steps, while the last stochastic "
                            f"step alone shows {mean('clip-a', 'kl_last_step', 140):,.0f} nats for a pixel drift (MSE) "
                            f"of {mean('clip-a', 'drift', 140):.3f}"),
    ]


def _sft_change(run: str, split: str, key: str = "aligned") -> str:
    """The paired change of ``key`` from the base to the last step of the SFT run docs/sft/RUN on ``split``
    (``train`` or ``eval``), as mean ± SE (n = pairs)."""
    from textnorm_t2i.finetune.report import _read_samples, paired_change

    records = [r for r in _read_samples(ROOT / "docs" / "sft" / run / "samples.jsonl")
               if r.get("split", "eval") == split]
    last = max(r["step"] for r in records)
    m, se, n = paired_change(records, key, 0, last)
    return f"{m:+.3f} ± {se:.3f} (n = {n})"


def sft_quotes() -> list[tuple[str, str]]:
    """What the pages say about SFT's controls, from their records in docs/sft (paired changes from the base over
    the same images, mean ± standard error; training prompts with fresh noise and held-out prompts apart)."""
    change = _sft_change
    quotes = []
    for run in sorted(p.name for p in (ROOT / "docs" / "sft").iterdir() if p.is_dir()):
        quotes.append((f"docs/sft/{run}", f"`{run}`: gold {change(run, 'train')} on the training prompts, "
                                          f"{change(run, 'eval')} held out"))
    return quotes


# Timing benchmarks cannot be rerun to the same numbers; the pages quote their recorded output.
BENCHMARK_QUOTES = [("docs/benchmarks/textnorm_overhead.json", _overhead),
                    ("docs/benchmarks/rl_throughput.json", _rl_throughput),
                    ("docs/benchmarks/draft_throughput.json", _draft_throughput),
                    ("docs/benchmarks/generator_speed.json", _generator_speed),
                    ("docs/benchmarks/rl_gradient_snr.json", _rl_snr),
                    ("docs/benchmarks/rl_gradient_snr_redness.json", _rl_snr)]


def headline_quotes() -> list[tuple[str, str]]:
    """``(record, text)``: the README's headline results, as they must read in the README itself (docs/index.md
    repeats them; the pages they link to give each in full)."""
    import csv

    published = _table_rows("textnorm tia2 table --published --format markdown")
    tn, raw = {}, {}
    for subset, model, _, auroc, *_ in published:
        best = tn if model.startswith("textnorm_") else raw
        if float(auroc.split()[0]) > best.get(subset, ("", -1.0))[1]:
            best[subset] = (model, float(auroc.split()[0]))
    subsets = ("counting", "composition", "comprehensive")
    lead = "lead" if all(tn[s][1] > raw[s][1] for s in subsets) else "do not lead"
    diag = _read("docs/diagnosis/embedded.json")
    learned = [row for reward in ("shapes-clip-a", "shapes-clip-b", "shapes-pref")
               for row in diag[reward]["subsets"].values()]

    def bon(kind: str) -> dict[int, float]:
        with (ROOT / f"docs/diagnosis/bon-perceive-clean-{kind}.csv").open() as f:
            return {int(r["n"]): float(r["gold_alignment"]) for r in csv.DictReader(f)}

    bon_raw, bon_tn = bon("raw"), bon("textnorm")
    study = _read("docs/study/results.json")
    top = max(study["map"]["look_weights"])
    gains = [c["difference"]["mean"] for c in study["map"]["cells"] if c["w"] == top]
    snr = _read("docs/benchmarks/rl_gradient_snr.json")
    first = snr["rows"][0]
    return [*_study_draft_quotes(study),
        ("the published TIA2 table", f"the authors' TextNorm rows {lead} every subset in AUROC: "
         + ", ".join(f"{tn[s][1]:.3f} against {raw[s][1]:.3f} ({raw[s][0]}) on {s}" for s in subsets)),
        ("docs/diagnosis/embedded.json", f"the learned embedded rewards reach AUROC "
         f"{_span([row['auroc']['raw']['mean'] for row in learned])} against the simulated annotators, but the "
         f"contrast that TextNorm keeps only {_span([row['auroc']['contrast']['mean'] for row in learned])}"),
        ("docs/diagnosis/bon-perceive-clean-*.csv", f"best-of-32 by TextNorm raises gold alignment from "
         f"{bon_tn[1]:.3f} to {bon_tn[32]:.3f} (by the raw reward: {bon_raw[32]:.3f})"),
        ("docs/draft/detect", f"from step 50 to 100 the held-out proxy rises "
         f"{_draft_change('detect', 'objective', 50, 100)} while gold falls "
         f"{_draft_change('detect', 'aligned', 50, 100)}; by step 200 gold is "
         f"{_draft_mean('detect', 'gold_alignment', 200):.3f} (from {_draft_mean('detect', 'gold_alignment', 0):.3f})"),
        ("docs/sft/aligned-guided", f"SFT on the oracle's own aligned samples changes gold by "
         f"{_sft_change('aligned-guided', 'train')} on its training prompts"),
        ("docs/study/results.json", f"at look weight {top:g}, the gold alignment of best-of-16 is {_span(gains)} "
         "higher by TextNorm than by the raw reward"),
        ("docs/benchmarks/rl_gradient_snr.json", f"two independent {first['samples']}-sample batches give DDPO "
         f"gradients with cosine {first['cosine_mean']:+.3f} ± {first['cosine_sd']:.3f} ({snr['reward']})"),
    ]


def _study_draft_quotes(study: dict) -> list[tuple[str, str]]:
    """The study's DRaFT answer as the README gives it: final held-out gold of each reward optimised raw and with
    TextNorm (none before the second edition ran DRaFT)."""
    draft = study.get("draft") or {}
    if not draft or draft.get("skipped"):
        return []
    pairs = [(name[4:], run, draft["tn/" + name[4:]]) for name, run in draft.items()
             if name.startswith("raw/") and "tn/" + name[4:] in draft]
    steps = int(next(iter(draft.values()))["evals"][-1]["step"])
    base = next(iter(draft.values()))["evals"][0]["gold"]
    return [("docs/study/results.json", f"held-out gold after {steps} DRaFT steps, raw against TextNorm: "
             + ", ".join(f"{reward} {raw['evals'][-1]['gold']:.3f} vs {tn['evals'][-1]['gold']:.3f}"
                         for reward, raw, tn in pairs) + f" (base model, sampled the same way: {base:.3f})")]


def check_quotes(paths: list[Path] | None = None) -> list[str]:
    """The quoted passages that no checked file contains as its records say, and the headline passages the
    README (the file named README.md among ``paths``) does not (whitespace-insensitive; ``paths`` defaults to
    :func:`documentation_files`)."""
    paths = documentation_files() if paths is None else paths
    texts = {path: " ".join(path.read_text().split()) for path in paths}
    readmes = [text for path, text in texts.items() if path.name == "README.md"]
    missing = []
    for record, quote in quoted_numbers():
        if not any(" ".join(quote.split()) in text for text in texts.values()):
            missing.append(f"{record}: {quote!r}")
            print(f"readme-check: no checked file ({', '.join(shown(p) for p in paths)}) quotes {missing[-1]}",
                  file=sys.stderr)
    for record, quote in headline_quotes():
        if not any(" ".join(quote.split()) in text for text in readmes):
            missing.append(f"README.md: {record}: {quote!r}")
            print(f"readme-check: README.md does not quote {record}: {quote!r}", file=sys.stderr)
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the blocks that differ, and docs/index.md")
    parser.add_argument("--only", help="check only the blocks whose command contains this")
    parser.add_argument("--records", action="store_true",
                        help="also rerun the commands of the record files and compare (about 30 minutes)")
    args = parser.parse_args()
    stale = [s for path in documentation_files() for s in check(path, args.update, args.only)]
    stale += check_index(args.update) + check_quotes()
    if args.records:
        stale += check_records()
    if stale and not args.update:
        print(f"readme-check: {len(stale)} check(s) failed: {stale} (make readme-update rewrites the blocks and "
              "docs/index.md; quotes and records are fixed by hand)", file=sys.stderr)
        return 1
    print(f"readme-check: {'updated ' + str(len(stale)) if stale else 'all'} generated block(s) "
          f"{'' if stale else 'match their commands'} ({len(documentation_files())} files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
