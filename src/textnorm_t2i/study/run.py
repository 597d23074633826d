"""The study, in resumable stages (``textnorm study run --config configs/study.yaml [--resume]``).

Stages, each writing its result atomically into the work folder, so a killed run continues where it
stopped (``--resume``):

1. ``prompts``      training and disjoint held-out evaluation prompts from every subset;
2. ``temperatures`` TextNorm temperatures (and the UR lambda), k-fold CV on TIA2-Shapes;
3. ``pool``         n_max samples per training prompt, generated once (in chunks);
4. ``scores``       the pool scored by every objective, the oracle's verdicts;
5. ``bon``          best-of-n curves per objective and subset (CIs over prompts), KL_BoN;
6. ``map``          shapes-perceive over look weight x perception noise: best-of-n TextNorm - raw;
7. ``base``         the base model on the held-out prompts;
8. ``sft``          reward-weighted SFT per objective on the pool's top samples, evaluated held-out;
9. ``rl``           DDPO per objective (same compute), evaluated every k epochs held-out;
10. ``compare``     side-by-side judgments and checkpoint selection without gold;
11. ``report``      report.html, results.json, samples.jsonl in ``out``.

Python API: :func:`run_study` (``run_study(cfg, resume=True)``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.config import flatten, from_dict, read_yaml
from textnorm_t2i.distributed import process_rank_world
from textnorm_t2i.errors import InputError
from textnorm_t2i.finetune.backend import DiffusionBackend
from textnorm_t2i.finetune.common import derived_seed
from textnorm_t2i.finetune.ddim import DDIMPolicy, sample_trajectories
from textnorm_t2i.finetune.models import load_pipeline, load_scheduler_config
from textnorm_t2i.generate.grid import to_uint8
from textnorm_t2i.io import atomic_write, check_writable, file_digest, read_json, write_json_atomic
from textnorm_t2i.rewards.train_pref import preference_prompts
from textnorm_t2i.rundir import (
    MARKER_NAME,
    RunFolder,
    RunLock,
    check_same_config,
    clearable_entries,
    hold_point,
    read_marker,
    remove_entries,
)
from textnorm_t2i.study.analysis import bon_curves, compare, perceive_map, run_trajectory, summarize_records
from textnorm_t2i.study.config import DRAFT_CONTROL_REWARD, StudyConfig, base_tag
from textnorm_t2i.study.evaluate import judge_images, pixel_drift, records, sample_eval, score_uint8
from textnorm_t2i.study.finetune import draft_one, rl_one, sft_one
from textnorm_t2i.study.objectives import ObjectiveScorer, choose_temperatures
from textnorm_t2i.study.report import ReportInputs, write_report
from textnorm_t2i.world.grammar import SUBSETS, sample_prompts

STAGES = ("prompts", "temperatures", "pool", "scores", "bon", "map", "base", "sft", "rl", "draft", "compare",
          "report")
# Stages that split their work across the processes of `accelerate launch` (the rest run in one process).
SHARDED = ("pool", "scores")
# Cheap stages the sharded ones need; under `accelerate launch` the main process runs them alone.
PREREQUISITES = ("prompts", "temperatures")
# The stages whose results each stage reads (a stage may run only when they are done).
NEEDS: dict[str, tuple[str, ...]] = {
    "prompts": (), "temperatures": (), "pool": ("prompts",), "scores": ("pool", "temperatures"),
    "bon": ("scores",), "map": ("scores",), "base": ("prompts", "temperatures"), "sft": ("scores", "base"),
    "rl": ("base",), "draft": ("base",), "compare": ("bon", "sft", "rl", "draft"), "report": (),
}
# The config keys (or sections) each stage reads itself; a stage's recorded settings are these and those of every
# stage it needs, so a changed key is caught in every stage whose result depends on it.
OWN_SETTINGS: dict[str, tuple[str, ...]] = {
    "prompts": ("seed", "prompts"), "temperatures": ("objectives", "bootstrap"), "pool": ("seed", "generator", "pool"),
    "scores": (), "bon": ("bootstrap",), "map": ("map",),
    "base": ("generator", "eval", "pool.guidance_scale", "bootstrap"), "sft": ("sft",), "rl": ("rl",),
    "draft": ("draft",),
    "compare": ("side_by_side",), "report": (),
}
# Stage records are ``{"schema", "stage", "settings", "files", "result"}``; another schema is not read.
STAGE_SCHEMA = 1


def stage_settings(cfg: StudyConfig, stage: str) -> dict[str, Any]:
    """The flattened config keys that ``stage``'s result depends on (its own and its inputs').

    Example:
        >>> sorted(stage_settings(StudyConfig(), "pool"))[:3]
        ['generator', 'pool.chunk', 'pool.eta']
    """
    wanted, todo = set(), [stage]
    while todo:
        name = todo.pop()
        wanted.update(OWN_SETTINGS.get(name, ()))
        todo.extend(NEEDS.get(name, ()))
    flat = flatten(cfg.to_dict())
    return {k: v for k, v in sorted(flat.items()) if any(k == w or k.startswith(w + ".") for w in wanted)}


def _log(message: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Study:
    """State shared by the stages: the config, the work folder and (loaded on first use) the generator."""

    def __init__(self, cfg: StudyConfig, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.work = Path(cfg.work)
        self.stages = self.work / "stages"
        self._backend: Any = None
        self._scorer: Any = None
        self._results: dict[str, Any] = {}   # stage records read and verified once per process
        self.written: list[Path] = []         # artefacts the running stage wrote (their digests go in its record)
        self.timings: dict[str, float] = {}
        self.rank, self.world = process_rank_world()
        self.main = self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (a no-op in one process)."""
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def shard(self, items: list) -> list:
        """This process's share of ``items``: every world-th one from its rank (all of them in one process)."""
        return items[self.rank::self.world]

    def gather(self, mine: list) -> list:
        """Every process's ``mine``, concatenated (``mine`` in one process)."""
        if self.world == 1:
            return mine
        from accelerate.utils import gather_object

        return gather_object(mine)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        if self.cfg.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.cfg.device == "cuda" and not torch.cuda.is_available():
            raise InputError("device: cuda asked for, but no CUDA device is available")
        return torch.device(self.cfg.device)

    def fresh_pipeline(self) -> Any:
        """A newly loaded generator on the study's device (each fine-tuning run starts from one)."""
        pipe = load_pipeline(self.cfg.generator)
        pipe.to(self.device)
        return DiffusionBackend(pipe)

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self.fresh_pipeline()
        return self._backend

    def record(self, name: str) -> dict | None:
        """The stage's record, or None when it is missing or cannot be trusted: not valid JSON, another schema,
        or an artefact it lists that is missing or changed (then the stage runs again, with a note)."""
        if name in self._results:
            return self._results[name]
        path = self.stages / f"{name}.json"
        if not path.is_file():
            return None
        problem = None
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            rec, problem = None, f"unreadable ({type(e).__name__})"
        if problem is None and not (isinstance(rec, dict) and rec.get("schema") == STAGE_SCHEMA
                                    and rec.get("stage") == name and "result" in rec
                                    and isinstance(rec.get("files", {}), dict)):
            problem = f"not a stage record of schema {STAGE_SCHEMA}"
        if problem is None and not _result_fits(name, rec["result"]):
            problem = "its result does not have the shape this stage writes"
        if problem is None:
            for rel, digest in rec.get("files", {}).items():
                if file_digest(self.work / rel, missing_ok=True) != digest:
                    problem = f"its artefact {rel} is missing or changed"
                    break
        if problem is not None:
            if self.main:
                _log(f"note: {path}: {problem}; the stage runs again")
            return None
        self._results[name] = rec
        return rec

    def result(self, name: str) -> Any:
        """What stage ``name`` found (None when not done, or its record cannot be trusted)."""
        rec = self.record(name)
        return None if rec is None else rec["result"]

    def save(self, name: str, obj: Any) -> None:
        """Record a stage's result with the settings it ran with and the digests of the artefacts it wrote."""
        rec = {"schema": STAGE_SCHEMA, "stage": name,
               "settings": stage_settings(self.cfg, name) if name in STAGES else {},
               "files": {str(p.relative_to(self.work)): file_digest(p) for p in self.written},
               "result": obj}
        if self.main:
            write_json_atomic(self.stages / f"{name}.json", rec)
        self._results[name] = json.loads(json.dumps(rec))  # as a later read would see it

    @property
    def prompts(self) -> dict:
        return self.result("prompts")

    @property
    def subset_of(self) -> dict[str, str]:
        p = self.prompts
        return {q: s for part in ("train", "eval") for s, qs in p[part].items() for q in qs}

    def flat(self, part: str) -> list[str]:
        return [q for qs in self.prompts[part].values() for q in qs]

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            t = self.result("temperatures")
            self._scorer = ObjectiveScorer({r: v["temperature"] for r, v in t["rewards"].items()},
                                           self.cfg.objectives.ensemble, t.get("ur_lam", 0.5),
                                           (DRAFT_CONTROL_REWARD, self.flat("train")) if self.cfg.draft_controls()
                                           else None)
        return self._scorer

    # ------------------------------------------------------------------ stages
    def stage_prompts(self) -> None:
        taken = {c for s in load_benchmark("shapes").values() for c in s.captions} | set(preference_prompts())
        p = self.cfg.prompts
        out: dict[str, Any] = {"train": {}, "eval": {}, "excluded": "TIA2-Shapes captions and shapes-pref's "
                               "training prompts"}
        out["notes"] = []
        for subset in SUBSETS:
            want = p.train_per_subset + p.eval_per_subset
            pool = [q for q in sample_prompts(subset, 3 * want + 100, seed=70_000 + p.seed) if q not in taken]
            n_train, n_eval = p.train_per_subset, p.eval_per_subset
            if len(pool) < want:
                # A small subset (counting has 60 distinct scenes in all) is split in the same proportion.
                n_train = max(1, round(len(pool) * p.train_per_subset / want))
                n_eval = len(pool) - n_train
                if n_eval < 2:
                    raise InputError(f"prompts: subset {subset} has only {len(pool)} free prompts")
                out["notes"].append(f"{subset}: only {len(pool)} distinct free prompts, split {n_train} + {n_eval}")
            out["train"][subset] = pool[:n_train]
            out["eval"][subset] = pool[n_train:n_train + n_eval]
        self.save("prompts", out)

    def stage_temperatures(self) -> None:
        o = self.cfg.objectives
        self.save("temperatures", choose_temperatures(o.rewards, o.ensemble, o.benchmark, o.k, o.temperatures,
                                                      o.lams, self.cfg.bootstrap, self.progress))

    def pool_chunks(self) -> list[tuple[int, list[str]]]:
        """``(first flat index, prompts)`` of every generation chunk, one prompt repeated n_max times each."""
        flat = [q for q in self.flat("train") for _ in range(self.cfg.pool.n_max)]
        return [(lo, flat[lo:lo + self.cfg.pool.chunk]) for lo in range(0, len(flat), self.cfg.pool.chunk)]

    def stage_pool(self) -> None:
        from safetensors.torch import save
        from tqdm.auto import tqdm

        pc = self.cfg.pool
        folder = self.work / "pool"
        folder.mkdir(parents=True, exist_ok=True)
        policy = DDIMPolicy(self.backend.pipe.scheduler.config, pc.steps, eta=pc.eta)
        chunks = self.pool_chunks()
        # Each chunk has its own seed, so a chunk's images do not depend on which process draws it.
        for lo, prompts in tqdm(self.shard(chunks), desc="pool", disable=not (self.progress and self.main)):
            path = folder / f"chunk-{lo:07d}.safetensors"
            # A chunk counts as done when its digest (written after it) matches: a truncated or changed chunk
            # is drawn again (its seed makes it the same images).
            if path.is_file() and file_digest(path) == _read_digest(path):
                continue
            g = torch.Generator().manual_seed(derived_seed(self.cfg.seed, 9_001, lo))
            traj = sample_trajectories(self.backend, prompts, policy, pc.guidance_scale, g)
            images = torch.from_numpy(to_uint8(traj.images)).permute(0, 3, 1, 2).contiguous()
            with atomic_write(path, "wb") as f:
                f.write(save({"latents": traj.latents[-1].float().cpu().contiguous(), "images": images}))
            write_json_atomic(_digest_path(path), file_digest(path), indent=None)
            hold_point(f"pool:{lo}")
        self.barrier()
        self.written += [folder / f"chunk-{lo:07d}.safetensors" for lo, _ in chunks]
        self.save("pool", {"chunks": len(chunks), "images": sum(len(p) for _, p in chunks)})

    def load_pool(self, key: str) -> torch.Tensor:
        from safetensors.torch import load_file

        return torch.cat([load_file(self.work / "pool" / f"chunk-{lo:07d}.safetensors")[key]
                          for lo, _ in self.pool_chunks()])

    def stage_scores(self) -> None:
        from safetensors.torch import save

        images = self.load_pool("images")
        prompts = [q for q in self.flat("train") for _ in range(self.cfg.pool.n_max)]
        if self.main:
            _log(f"scoring {len(images)} pool images by every objective and the oracle"
                 + (f" ({self.world} processes)" if self.world > 1 else ""))
        # Batches of 256 (score_uint8's own batch), every world-th one per process: each batch is the same as in
        # one process, so the gathered numbers are the same.
        mine = [(lo, score_uint8(self.scorer, images[lo:lo + 256], prompts[lo:lo + 256]),
                 judge_images(images[lo:lo + 256], prompts[lo:lo + 256]))
                for lo in self.shard(list(range(0, len(images), 256)))]
        parts = sorted(self.gather(mine), key=lambda part: part[0])
        if not self.main:
            return
        scores = {k: np.concatenate([part[1][k] for part in parts]) for k in parts[0][1]}
        verdicts = [v for part in parts for v in part[2]]
        shape = (len(self.flat("train")), self.cfg.pool.n_max)
        tensors = {k: torch.as_tensor(v).reshape(shape) for k, v in scores.items()}
        tensors["gold"] = torch.tensor([float(v["aligned"]) for v in verdicts]).reshape(shape)
        tensors["fidelity"] = torch.tensor([float(v["fidelity"]) for v in verdicts]).reshape(shape)
        with atomic_write(self.stages / "pool_scores.safetensors", "wb") as f:
            f.write(save({k: v.contiguous() for k, v in tensors.items()}))
        self.written.append(self.stages / "pool_scores.safetensors")
        self.save("scores", {"objectives": sorted(scores), "images": len(images)})

    def pool_scores(self) -> dict[str, np.ndarray]:
        from safetensors.torch import load_file

        return {k: v.numpy() for k, v in load_file(self.stages / "pool_scores.safetensors").items()}

    def stage_bon(self) -> None:
        self.save("bon", bon_curves(self.pool_scores(), self.cfg.objective_names(), self.cfg.pool.ns,
                                    self.train_subsets(), self.cfg.bootstrap))

    def train_subsets(self) -> np.ndarray:
        return np.array([s for s, qs in self.prompts["train"].items() for _ in qs])

    def stage_map(self) -> None:
        if not self.cfg.map.enabled:
            self.save("map", {"skipped": True})
            return
        images = self.load_pool("images")
        prompts = [q for q in self.flat("train") for _ in range(self.cfg.pool.n_max)]
        self.save("map", perceive_map(self.cfg, images, prompts, self.pool_scores()["gold"], self.progress))

    # ------------------------------------------------------------------ held-out evaluation
    def evaluate(self, tag: str, unet: Any = None, base: Any = None, backend: Any = None,
                 image_eta: float = 1.0) -> dict:
        """Sample the held-out prompts with ``unet`` (default: the base model; images with DDIM eta ``image_eta``),
        score, judge; write ``eval/<tag>.safetensors`` (images) and ``eval/<tag>.json`` (records); return the
        summary."""
        from safetensors.torch import load_file, save

        folder = self.work / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        backend = backend or self.backend
        e = self.cfg.eval
        ev = sample_eval(backend, self.flat("eval"), e.samples_per_prompt, e.steps,
                         self.cfg.pool.guidance_scale, e.seed, unet=unet, base=base, progress=self.progress,
                         kl_min_std=e.kl_min_std, image_eta=image_eta)
        # The base model's images of the same seeds (its evaluation for this sampler comes first) give the drift.
        reference = self.work / "eval" / f"{base_tag(image_eta)}.safetensors"
        drift = (np.zeros(len(ev.prompts)) if tag == base_tag(image_eta) else
                 pixel_drift(ev.images, load_file(reference)["images"]) if reference.is_file() else None)
        recs = records(ev, score_uint8(self.scorer, ev.images, ev.prompts), self.subset_of, drift)
        with atomic_write(folder / f"{tag}.safetensors", "wb") as f:
            f.write(save({"images": ev.images}))
        write_json_atomic(folder / f"{tag}.json", recs, indent=None)
        self.written += [folder / f"{tag}.safetensors", folder / f"{tag}.json"]
        return summarize_records(recs, self.cfg.bootstrap)

    def stage_base(self) -> None:
        self.save("base", {"summary": self.evaluate("base")})

    def base_evaluation(self, image_eta: float) -> tuple[str, dict]:
        """The tag and summary of the base model's evaluation with images at DDIM eta ``image_eta`` (``base``, the
        base stage's, for the stochastic sampler; evaluated once for another eta, then read back)."""
        tag = base_tag(image_eta)
        if tag == "base":
            return tag, self.result("base")["summary"]
        if (self.work / "eval" / f"{tag}.json").is_file():
            cached = self.load_eval(tag)
            # Reused only when it holds every score the base stage's evaluation holds (the same objectives).
            if set(cached[0]["scores"]) == set(self.result("base")["summary"]["scores"]):
                return tag, summarize_records(cached, self.cfg.bootstrap)
        return tag, self.evaluate(tag, image_eta=image_eta)

    # ------------------------------------------------------------------ SFT
    def stage_sft(self) -> None:
        if not self.cfg.sft.enabled:
            self.save("sft", {"skipped": True})
            return
        done = self.result("sft_partial") or {}
        for objective in self.cfg.sft.objectives:
            if objective in done:
                continue
            _log(f"SFT on the top {self.cfg.sft.train.top_fraction:.0%} of the pool by {objective}")
            done[objective] = sft_one(self, objective)
            self.save("sft_partial", done)
        self.save("sft", done)

    # ------------------------------------------------------------------ RL and DRaFT
    def _fine_tune_each(self, stage: str, name: str, run_one: Callable[[Study, str], dict]) -> None:
        """One run of ``run_one`` per objective of the config's ``stage`` section (skipped when switched off),
        each with its trajectory of gold along the run."""
        section = getattr(self.cfg, stage)
        if not section.enabled:
            self.save(stage, {"skipped": True})
            return
        done: dict[str, dict] = {}
        for objective in section.objectives:
            if objective == "ens-ur-tn" and "ens-mean-tn" in done and self.scorer.ur_lam == 0:
                # lambda = 0 (chosen by CV): the UR ensemble is the mean ensemble; the same run is not made twice.
                _log(f"{name} on {objective}: the same objective as ens-mean-tn (lambda = 0), its run reused")
                done[objective] = {**done["ens-mean-tn"], "same_as": "ens-mean-tn"}
                continue
            _log(f"{name} on {objective}")
            done[objective] = run_one(self, objective)
            done[objective]["trajectory"] = run_trajectory(done[objective]["evals"], self.load_eval, self.cfg.bootstrap)
        self.save(stage, done)

    def stage_rl(self) -> None:
        self._fine_tune_each("rl", "RL (DDPO)", rl_one)

    def stage_draft(self) -> None:
        self._fine_tune_each("draft", f"DRaFT-{self.cfg.draft.train.truncation_steps}", draft_one)

    def load_eval(self, tag: str) -> list[dict]:
        """The per-image records of a stored evaluation."""
        return read_json(self.work / "eval" / f"{tag}.json")

    def stage_compare(self) -> None:
        self.save("compare", compare(self.cfg, self.flat("train"), self.flat("eval"), self.pool_scores(),
                                     self.result("sft"), self.result("rl"), self.work / "eval",
                                     draft=self.result("draft")))

    def stage_report(self) -> None:
        names = ("prompts", "temperatures", "bon", "map", "base", "sft", "rl", "draft", "compare", "timings")
        write_report(ReportInputs(self.cfg, {n: self.result(n) for n in names}, self.work / "eval"))


def _run_stages(study: Study, only: list[str] | None, redo: list[str], timings: dict,
                on_stage: Callable[[str, float], None] | None) -> None:
    """Run every stage that is asked for and not done yet, in order, timing each."""
    for stage in STAGES:
        if only and stage not in only:
            continue
        if study.result(stage) is not None and stage != "report" and stage not in (redo or []):
            continue
        if study.main:
            _log(f"stage {stage}")
        t0 = time.time()
        study.written = []
        if stage in SHARDED or study.main:
            getattr(study, f"stage_{stage}")()
        # Every process reads the stage's result before the next one starts.
        study.barrier()
        timings[stage] = round(time.time() - t0 + (timings.get(stage, 0.0) if stage in ("sft", "rl") else 0), 1)
        study.save("timings", timings)
        if on_stage:
            on_stage(stage, timings[stage])


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """SIGTERM stops the study as Ctrl-C does (one line, exit 130; finished chunks and stages are kept)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_report_folder(out: Path, work: str, overwrite: bool) -> None:
    """``out`` may take this study's report: it is empty, or holds a report (marked ``.textnorm-run``, kind
    ``report``) of the study in ``work`` and nothing else; another study's report is replaced only with
    ``overwrite``."""
    if not [p for p in out.iterdir() if p.name != ".lock"]:
        return
    clearable_entries(out, "report")  # a folder no study report made, or with files of its own: refused
    owner = read_marker(out).get("work")
    if owner != work and not overwrite:
        raise InputError(f"{out}: holds the report of the study in {owner}; choose another out, or pass --overwrite "
                         "to replace it")


def _check_stage_plan(study: Study, only: list[str] | None, redo: list[str], fresh: bool = False) -> None:
    """Refuse, before any work, a plan that would leave a stale or impossible result: a finished stage whose
    settings changed since it ran (unless it is redone), a stage whose inputs are not done, a --redo that --only
    excludes. ``fresh``: the work folder is about to be cleared (nothing is done)."""
    if fresh:
        study._results = {name: None for name in STAGES}
    if only:
        ignored = [s for s in redo if s not in only]
        if ignored:
            raise InputError(f"--redo {' '.join(ignored)}: not among the --only stages ({' '.join(only)}); add them to "
                             "--only or drop them from --redo")
    changed = []
    for stage in STAGES:
        rec = study.record(stage)
        if rec is None or stage in redo or stage == "report":
            continue
        now = stage_settings(study.cfg, stage)
        diffs = [f"{k}: {rec['settings'].get(k)!r} -> {now.get(k)!r}" for k in sorted(set(now) | set(rec["settings"]))
                 if rec["settings"].get(k) != now.get(k)]
        if diffs:
            changed.append((stage, diffs))
    if changed:
        stages = " ".join(s for s, _ in changed)
        raise InputError(f"stage(s) {stages} ran with other settings ({changed[0][1][0]}"
                         f"{', ...' if len(changed[0][1]) > 1 else ''}); pass --redo {stages} to run them again "
                         "with these settings, or set them back")
    for stage in only or []:
        missing = [n for n in NEEDS[stage] if n not in only and study.record(n) is None]
        if missing:
            raise InputError(f"stage {stage} needs {', '.join(missing)}, not done yet in {study.work}; run them "
                             f"first (e.g. without --only)")


def _result_fits(stage: str, result: Any) -> bool:
    """The shape of the results later stages read back (a hand-edited or foreign record is run again)."""
    def prompt_lists(part: Any) -> bool:
        return isinstance(part, dict) and all(isinstance(qs, list) and all(isinstance(q, str) for q in qs)
                                              for qs in part.values())

    if stage == "prompts":
        return isinstance(result, dict) and prompt_lists(result.get("train")) and prompt_lists(result.get("eval"))
    if stage == "temperatures":
        rewards = result.get("rewards") if isinstance(result, dict) else None
        return isinstance(rewards, dict) and all(
            isinstance(v, dict) and isinstance(v.get("temperature"), int | float) for v in rewards.values())
    return isinstance(result, dict)  # every stage (and the timings) writes an object


def _digest_path(path: Path) -> Path:
    return path.with_suffix(".digest.json")


def _read_digest(path: Path) -> Any:
    try:
        return json.loads(_digest_path(path).read_text())
    except (OSError, ValueError):
        return None


def run_study(config: StudyConfig | dict, resume: bool = False, overwrite: bool = False, progress: bool = True,
              only: list[str] | None = None, redo: list[str] | None = None,
              on_stage: Callable[[str, float], None] | None = None) -> Path:
    """Run (or continue, with ``resume``) the study; returns the folder of its report.

    ``redo`` names stages to run again even when done (e.g. ``["report"]`` after changing the report code).
    """
    cfg = config if isinstance(config, StudyConfig) else from_dict(StudyConfig, dict(config), "config")
    bad = [s for s in (only or []) + (redo or []) if s not in STAGES]
    if bad:
        raise InputError(f"unknown stage(s) {bad} (stages: {', '.join(STAGES)})")
    rank, world = process_rank_world()
    if world > 1:
        unsharded = [s for s in (only or STAGES) if s not in SHARDED + PREREQUISITES]
        if unsharded:
            raise InputError(f"under accelerate launch ({world} processes) the study runs only the stages that shard "
                             f"({', '.join(SHARDED)}) and what they need ({', '.join(PREREQUISITES)}): pass --only "
                             f"{' '.join(PREREQUISITES + SHARDED)}, then run the rest in one process with --resume")
    check_writable(Path(cfg.out) / "report.html")
    load_scheduler_config(cfg.generator)  # a missing or broken generator is found before any work or clearing
    run = RunFolder(cfg.work, cfg, kind="study", resume=resume, overwrite=overwrite, main=rank == 0).open()
    # `out` is locked too: two studies (other work folders) writing one report folder would mix their files.
    out_lock, made_out = None, not Path(cfg.out).exists()
    if rank == 0 and Path(cfg.out).resolve() != Path(cfg.work).resolve():
        try:
            out_lock = RunLock(cfg.out).acquire()
            check_report_folder(Path(cfg.out), cfg.work, overwrite)
        except BaseException:
            if out_lock is not None:
                out_lock.release(remove=out_lock.created)
                if made_out and not any(Path(cfg.out).iterdir()):
                    Path(cfg.out).rmdir()
            run.close()
            raise
    try:
        saved = run.folder / "config.yaml"
        if resume and saved.is_file():
            check_same_config(saved, StudyConfig, read_yaml(saved), cfg.to_dict())
        study = Study(cfg, progress)
        _check_stage_plan(study, only, redo or [], fresh=overwrite)  # before the folder is touched
        run.start()
        if overwrite and out_lock is not None:  # the earlier study's report goes with its work folder
            remove_entries([p for p in clearable_entries(Path(cfg.out), "report") if p.name != MARKER_NAME])
        if study.main:
            study.stages.mkdir(parents=True, exist_ok=True)
        study.barrier()
        timings = study.result("timings") or {}
        with _sigterm_as_interrupt():
            _run_stages(study, only, redo or [], timings, on_stage)
    finally:
        if out_lock is not None:
            out_lock.release(remove=True)
            if made_out and not any(Path(cfg.out).iterdir()):
                Path(cfg.out).rmdir()  # the study stopped before writing a report: leave no empty folder
        run.close()
    return Path(cfg.out)
