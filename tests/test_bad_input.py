"""Bad input across every subcommand: exit code 2, one line on stderr naming the problem, no traceback,
and nothing partial or stale left behind.

Each case runs ``textnorm_t2i.cli.main`` in-process (configs fail before any model loads, so this is fast);
the signal and lock cases that need a second process are at the end.
"""

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from processes import start_held
from textnorm_t2i.cli import main
from textnorm_t2i.trainers import WORLD

ROOT = Path(__file__).resolve().parent.parent
RL = str(ROOT / "configs" / "rl.yaml")
SFT = str(ROOT / "configs" / "sft.yaml")
BON = str(ROOT / "configs" / "bon.yaml")
STUDY = str(ROOT / "configs" / "study.yaml")


@pytest.fixture(scope="session")
def _inputs(tmp_path_factory):
    """The inputs the cases refer to, made once per session (each test gets its own copy)."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "typo.yaml").write_text("epochz: 3\nlr: 0.001\n")
    (root / "broken.yaml").write_text("epochs: [1, 2\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "list.json").write_text("[1, 2]\n")
    (root / "adir.png").mkdir()
    (root / "dev.png").symlink_to("/dev/null")
    (root / "notanimage.png").write_text("hello")
    Image.new("RGB", (5000, 4000)).save(root / "huge.png")
    Image.new("RGB", (32, 32)).save(root / "black.png")
    (root / "nan.jsonl").write_text('{"subset": "counting", "image": "image_0_0_0.jpg", "score": NaN}\n')
    (root / "manifest.csv").write_text("image,prompt\nmissing.png,a red circle\n")
    (root / "prompts.txt").write_text("a red circle\n")
    (root / "notrun").mkdir()
    (root / "notrun" / "precious.txt").write_text("mine")
    (root / "busy").mkdir()
    (root / "busy" / "config.yaml").write_text("seed: 0\n")
    (root / "studied").mkdir()  # a study work folder made with seed 7
    (root / "studied" / "config.yaml").write_text("seed: 7\n")
    (root / "samples").mkdir()
    (root / "samples" / "sample_000.png").write_bytes(b"")
    return root


@pytest.fixture
def files(_inputs, tmp_path, monkeypatch):
    """A working folder with the inputs the cases refer to, as ``{name}`` placeholders."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(_inputs, work, symlinks=True)
    monkeypatch.chdir(work)
    return work


# (id, argv, expected text in the message, paths that must not exist afterwards)
CASES = [
    # fine-tuning configs: unknown keys, types, ranges, consistency
    ("set-unknown-key", ["finetune", "--method", "rl", "--config", RL, "--set", "epochz=1"],
     "unknown key 'epochz' (did you mean 'epochs'?)", ["runs"]),
    ("set-output-dir", ["finetune", "--method", "rl", "--config", RL, "--set", "output_dir=x"],
     "unknown key 'output_dir'", ["x", "runs"]),
    ("set-bon-typo", ["finetune", "--method", "bon", "--config", BON, "--set", "n_maxx=4"],
     "did you mean 'n_max'", ["runs"]),
    ("set-lr-not-number", ["finetune", "--method", "rl", "--config", RL, "--set", "lr=abc"],
     "lr: expected a number", []),
    ("set-epochs-negative", ["finetune", "--method", "rl", "--config", RL, "--set", "epochs=-1"],
     "epochs: must be >= 1", []),
    ("set-epochs-float", ["finetune", "--method", "rl", "--config", RL, "--set", "epochs=2.5"],
     "expected an integer", []),
    ("batch-not-dividing", ["finetune", "--method", "rl", "--config", RL, "--set", "batch_size=8",
                            "--set", "train_batch_size=3"], "does not divide batch_size=8", []),
    ("sft-eval-every-zero", ["finetune", "--method", "sft", "--config", SFT, "--set", "eval.every=0"],
     "eval.every", []),
    ("config-of-other-method", ["finetune", "--method", "rl", "--config", SFT], "sft", []),
    ("unknown-reward", ["finetune", "--method", "rl", "--config", RL, "--set", "reward.name=nope"],
     "unknown reward 'nope'", []),
    ("temperature-zero", ["finetune", "--method", "rl", "--config", RL, "--set", "reward.temperature=0"],
     "must be > 0", []),
    ("guidance-nan", ["finetune", "--method", "rl", "--config", RL, "--set", "sampling.guidance_scale=.nan"],
     "finite", []),
    ("eta-above-one", ["finetune", "--method", "rl", "--config", RL, "--set", "sampling.eta=2"], "<= 1", []),
    ("scaling-choice", ["finetune", "--method", "rl", "--config", RL, "--set", "reward.scaling=foo"],
     "one of none, minmax", []),
    ("lora-rank-zero", ["finetune", "--method", "rl", "--config", RL, "--set", "lora.rank=0"], ">= 1", []),
    ("subset-choice", ["finetune", "--method", "rl", "--config", RL, "--set", "prompts.subsets=[counting, foo]"],
     "one of counting", []),
    ("set-without-equals", ["finetune", "--method", "rl", "--config", RL, "--set", "bogus"], "KEY=VALUE", []),
    ("set-into-a-value", ["finetune", "--method", "rl", "--config", RL, "--set", "lr.x=1"],
     "is a value, not a section", []),
    ("set-section-to-scalar", ["finetune", "--method", "rl", "--config", RL, "--set", "sampling=3"],
     "must be a mapping", []),
    ("yaml-typo", ["finetune", "--method", "rl", "--config", "{dir}/typo.yaml"],
     "typo.yaml: unknown key 'epochz' (did you mean 'epochs'?)", []),
    ("yaml-malformed", ["finetune", "--method", "rl", "--config", "{dir}/broken.yaml"], "malformed YAML", []),
    ("yaml-missing", ["finetune", "--method", "rl", "--config", "{dir}/nope.yaml"], "config file not found", []),
    ("yaml-not-mapping", ["finetune", "--method", "rl", "--config", "{dir}/list.yaml"], "must be a mapping", []),
    ("yaml-is-folder", ["finetune", "--method", "rl", "--config", "{dir}/notrun"], "is a folder", []),
    ("bon-ns-not-dividing", ["finetune", "--method", "bon", "--config", BON, "--set", "n_max=4", "--set", "ns=[1, 3]"],
     "do not divide n_max=4", []),
    ("prompt-sets-missing", ["finetune", "--method", "rl", "--config", RL, "--set", "reward.textnorm=true",
                             "--set", "reward.prompt_sets=nosuch.json"], "nosuch.json: no such file", []),
    ("reward-path-count", ["finetune", "--method", "rl", "--config", RL, "--set", "reward.name=[shapes-clip-a, "
                           "shapes-clip-b]", "--set", "reward.path=[a]"], "1 path(s) for 2 reward name(s)", []),
    ("finetune-no-config", ["finetune", "--method", "rl"], "give --config", []),
    ("bon-resume", ["finetune", "--method", "bon", "--config", BON, "--resume"], "no checkpoints", []),
    ("resume-and-overwrite", ["finetune", "--method", "rl", "--config", RL, "--set", "out={dir}/new", "--resume",
                              "--overwrite"], "contradict", ["new"]),
    ("out-not-empty", ["finetune", "--method", "rl", "--config", RL, "--set", "out={dir}/busy"],
     "folder is not empty", []),
    ("overwrite-foreign-folder", ["finetune", "--method", "rl", "--config", RL, "--set", "out={dir}/notrun",
                                  "--overwrite"], "not a folder made by a textnorm run", []),
    ("resume-from-missing", ["finetune", "--method", "rl", "--config", RL, "--set", "out={dir}/busy",
                             "--resume-from", "{dir}/nockpt"], "no such checkpoint folder", []),
    ("generator-missing", ["finetune", "--method", "rl", "--config", RL, "--set", "out={dir}/fresh",
                           "--set", "generator={dir}/nogen"], "not a pipeline folder", ["fresh"]),
    ("unknown-method", ["finetune", "--method", "ppo", "--config", RL], "invalid choice", []),
    # training the embedded models
    ("generator-steps-negative", ["train", "generator", "--config", str(ROOT / "configs" / "generator.yaml"),
                                  "--out", "{dir}/gen", "--set", "steps=-5"], "steps: must be >= 1", ["gen"]),
    ("generator-typo", ["train", "generator", "--out", "{dir}/gen", "--set", "stepz=5"],
     "did you mean 'steps'", ["gen"]),
    ("generator-prediction", ["train", "generator", "--out", "{dir}/gen", "--set", "model.prediction_type=x"],
     "one of epsilon, v_prediction", ["gen"]),
    ("generator-subset", ["train", "generator", "--out", "{dir}/gen", "--set", "subset_weights={foo: 1}"],
     "one of counting", ["gen"]),
    ("generator-bad-sample-prompt", ["train", "generator", "--out", "{dir}/gen", "--set",
                                     "sample_prompts=[three hexagons]"], "sample_prompts", ["gen"]),
    ("generator-out-not-empty", ["train", "generator", "--out", "{dir}/busy", "--set", "steps=1"],
     "folder is not empty", []),
    ("reward-no-config", ["train", "reward"], "give --config", []),
    ("reward-arch", ["train", "reward", "--config", str(ROOT / "configs" / "reward-a.yaml"), "--out", "{dir}/rw",
                     "--set", "model.arch=rnn"], "one of cnn-bow, cnn-transformer", ["rw"]),
    # sampling images
    ("generate-n-zero", ["generate", "--prompt", "a red circle", "--n", "0", "-o", "{dir}/g.png"],
     "between 1 and 1024", ["g.png"]),
    ("generate-steps-zero", ["generate", "--prompt", "a red circle", "--steps", "0", "-o", "{dir}/g.png"],
     "between 1 and 1000", ["g.png"]),
    ("generate-guidance-nan", ["generate", "--prompt", "a red circle", "--guidance", "nan", "-o", "{dir}/g.png"],
     "finite", ["g.png"]),
    ("generate-guidance-negative", ["generate", "--prompt", "a red circle", "--guidance", "-1", "-o", "{dir}/g.png"],
     ">= 0", ["g.png"]),
    ("generate-bad-suffix", ["generate", "--prompt", "a red circle", "-o", "{dir}/g.txt"], "expected an image file",
     ["g.txt"]),
    ("generate-proc", ["generate", "--prompt", "a red circle", "-o", "/proc/x.png"], "cannot write", []),
    ("generate-model-missing", ["generate", "--prompt", "a red circle", "--model", "{dir}/nogen", "-o",
                                "{dir}/g.png"], "not a pipeline folder", ["g.png"]),
    ("generate-folder-with-samples", ["generate", "--prompt", "a red circle", "-o", "{dir}/samples"],
     "already holds samples", []),
    # the world
    ("render-size-huge", ["world", "render", "--prompt", "a red circle", "--size", "20000", "-o", "{dir}/s.png"],
     "between 32 and 2048", ["s.png"]),
    ("render-size-small", ["world", "render", "--prompt", "a red circle", "--size", "20", "-o", "{dir}/s.png"],
     "between 32 and 2048", ["s.png"]),
    ("render-not-png", ["world", "render", "--prompt", "a red circle", "-o", "{dir}/s.jpg"], "must be a .png",
     ["s.jpg"]),
    ("render-bad-prompt", ["world", "render", "--prompt", "three purple hexagons", "-o", "{dir}/s.png"], "purple",
     ["s.png"]),
    ("render-link-to-device", ["world", "render", "--prompt", "a red circle", "-o", "{dir}/dev.png"],
     "/dev/null: not a regular file (a device)", []),
    ("render-onto-folder", ["world", "render", "--prompt", "a red circle", "-o", "{dir}/adir.png"],
     "not a regular file (a folder)", []),
    ("judge-huge-image", ["world", "judge", "--prompt", "a red circle", "{dir}/huge.png"], "larger than the limit",
     []),
    ("judge-not-an-image", ["world", "judge", "--prompt", "a red circle", "{dir}/notanimage.png"],
     "unreadable image", []),
    ("judge-missing", ["world", "judge", "--prompt", "a red circle", "{dir}/missing.png"], "image not found", []),
    ("judge-bad-prompt", ["world", "judge", "--prompt", "a red hexagon", "{dir}/black.png"], "hexagon", []),
    ("world-prompts-n-zero", ["world", "prompts", "--subset", "counting", "--n", "0"], "between 1", []),
    ("benchmark-build-samples", ["world", "benchmark", "build", "-o", "{dir}/b", "--samples", "1"], "between 2",
     ["b"]),
    # the TIA2 benchmark
    ("table-not-published", ["tia2", "table"], "pass --published", []),
    ("table-to-device", ["tia2", "table", "--published", "-o", "/dev/null"], "not a regular file (a device)", []),
    ("table-to-proc", ["tia2", "table", "--published", "-o", "/proc/x"], "cannot write", []),
    ("table-to-folder", ["tia2", "table", "--published", "-o", "{dir}/notrun"], "not a regular file (a folder)", []),
    ("table-unknown-subset", ["tia2", "table", "--published", "--subset", "nope", "-o", "{dir}/t.md"], "nope",
     ["t.md"]),
    ("eval-missing-scores", ["tia2", "eval", "--scores", "{dir}/none.jsonl", "-o", "{dir}/e.txt"], "not found",
     ["e.txt"]),
    ("eval-nan-score", ["tia2", "eval", "--scores", "{dir}/nan.jsonl", "-o", "{dir}/e.txt"], "nan.jsonl:1",
     ["e.txt"]),
    ("info-missing-benchmark", ["tia2", "info", "--benchmark", "{dir}/nobench"], "nobench", []),
    # scoring and calibration
    ("score-missing-manifest", ["score", "--reward", "shapes-clip-a", "--manifest", "{dir}/none.csv", "-o",
                                "{dir}/s.jsonl"], "not found", ["s.jsonl"]),
    ("score-unknown-reward", ["score", "--reward", "nope", "--manifest", "{dir}/manifest.csv", "-o",
                              "{dir}/s.jsonl"], "unknown reward 'nope'", ["s.jsonl"]),
    ("score-temperature-zero", ["score", "--reward", "shapes-clip-a", "--textnorm", "--temperature", "0",
                                "--manifest", "{dir}/manifest.csv", "-o", "{dir}/s.jsonl"], "> 0", ["s.jsonl"]),
    ("score-prompt-sets-missing", ["score", "--reward", "shapes-clip-a", "--textnorm", "--prompt-sets",
                                   "{dir}/none.json", "--manifest", "{dir}/manifest.csv", "-o", "{dir}/s.jsonl"],
     "none.json", ["s.jsonl"]),
    ("score-missing-image", ["score", "--reward", "shapes-clip-a", "--manifest", "{dir}/manifest.csv", "-o",
                             "{dir}/s.jsonl"], "missing.png: image not found", ["s.jsonl"]),
    ("score-reward-arg", ["score", "--reward", "shapes-clip-a", "--reward-arg", "batch_size=0", "--manifest",
                          "{dir}/manifest.csv", "-o", "{dir}/s.jsonl"], "batch_size", ["s.jsonl"]),
    # diagnosis and the new rewards
    ("diagnose-unknown-reward", ["diagnose", "--reward", "nope", "-o", "{dir}/d.txt"], "unknown reward 'nope'",
     ["d.txt"]),
    ("diagnose-nothing-to-do", ["diagnose", "-o", "{dir}/d.txt"], "give --reward (to diagnose) or --from-json",
     ["d.txt"]),
    ("diagnose-from-json-not-json", ["diagnose", "--from-json", "{dir}/typo.yaml", "-o", "{dir}/d.txt"],
     "malformed JSON", ["d.txt"]),
    ("diagnose-from-json-not-a-diagnosis", ["diagnose", "--from-json", "{dir}/list.json", "-o", "{dir}/d.txt"],
     "not a diagnosis", ["d.txt"]),
    ("diagnose-temperature-zero", ["diagnose", "--reward", "shapes-clip-a", "--temperature", "0"], "> 0", []),
    ("diagnose-clean-prompts-zero", ["diagnose", "--reward", "shapes-clip-a", "--clean-prompts", "0"], "between 1",
     []),
    ("diagnose-plot-to-folder", ["diagnose", "--reward", "shapes-clip-a", "--plot", "{dir}/adir.png"],
     "not a regular file (a folder)", []),
    ("diagnose-unknown-subset", ["diagnose", "--reward", "shapes-clip-a", "--subset", "nope", "-o", "{dir}/d.txt"],
     "nope", ["d.txt"]),
    ("diagnose-no-images", ["diagnose", "--reward", "shapes-clip-a", "--benchmark", "{dir}/nobench"], "nobench", []),
    ("perceive-noise-above-one", ["diagnose", "--reward", "shapes-perceive-noisy", "--reward-arg", "count=2",
                                  "--subset", "counting"], "must be in [0, 1]", []),
    ("perceive-look-nan", ["diagnose", "--reward", "shapes-perceive-looks", "--reward-arg", "w=NaN",
                           "--subset", "counting"], "finite", []),
    ("pref-flip-too-low", ["train", "reward", "--config", str(ROOT / "configs" / "reward-pref.yaml"), "--out",
                           "{dir}/pref", "--set", "flip=0.05"], "flip: must be >= 0.1", ["pref"]),
    ("pref-typo", ["train", "reward", "--config", str(ROOT / "configs" / "reward-pref.yaml"), "--out", "{dir}/pref",
                   "--set", "samples_per_promt=4"], "did you mean 'samples_per_prompt'", ["pref"]),
    ("pref-out-not-empty", ["train", "reward", "--config", str(ROOT / "configs" / "reward-pref.yaml"), "--out",
                            "{dir}/notrun"], "folder is not empty", []),
    ("detect-typo", ["train", "reward", "--config", str(ROOT / "configs" / "reward-detect.yaml"), "--out",
                     "{dir}/detect", "--set", "renderz=10"], "did you mean 'renders'", ["detect"]),
    ("detect-no-images", ["train", "reward", "--config", str(ROOT / "configs" / "reward-detect.yaml"), "--out",
                          "{dir}/detect", "--set", "renders=0", "--set", "prompts_per_subset=0"],
     "give the reward some training images", ["detect"]),
    ("draft-detect-eval-images-zero", ["finetune", "--method", "draft", "--config",
                                       str(ROOT / "configs" / "draft.yaml"), "--set", "reward.name=shapes-detect",
                                       "--set", "eval.images_per_prompt=0", "--set", "out={dir}/d"],
     "eval.images_per_prompt", ["d"]),
    ("sft-select-unknown", ["finetune", "--method", "sft", "--config", str(ROOT / "configs" / "sft-control.yaml"),
                            "--set", "select=best", "--set", "out={dir}/s"], "select", ["s"]),
    ("calibrate-k-one", ["calibrate", "--reward", "shapes-clip-a", "--subset", "counting", "--k", "1"],
     "between 2", []),
    ("prompts-llm-no-endpoint", ["prompts", "generate", "--method", "llm", "--in", "{dir}/prompts.txt", "-o",
                                 "{dir}/sets.json"], "--base-url", ["sets.json"]),
    ("prompts-missing-input", ["prompts", "generate", "--method", "rules", "--in", "{dir}/none.txt", "-o",
                               "{dir}/sets.json"], "not found", ["sets.json"]),
    ("unknown-command", ["nosuchcommand"], "invalid choice", []),
    ("rl-unknown-tracker", ["finetune", "--method", "rl", "--config", RL, "--set", "log.report_to=[mlflow]", "--set",
                            "out={dir}/t"], "unknown tracker 'mlflow'", ["t"]),
    ("rl-images-per-prompt", ["finetune", "--method", "rl", "--config", RL, "--set", "images_per_prompt=3", "--set",
                              "out={dir}/t"], "images_per_prompt=3 does not divide", ["t"]),
    ("rl-min-step-std-too-high", ["finetune", "--method", "rl", "--config", RL, "--set", "min_step_std=5", "--set",
                                  "out={dir}/t"], "min_step_std=5.0 leaves no denoising step to train", ["t"]),
    ("rl-min-step-std-negative", ["finetune", "--method", "rl", "--config", RL, "--set", "min_step_std=-1", "--set",
                                  "out={dir}/t"], "min_step_std", ["t"]),
    ("rl-accumulation-zero", ["finetune", "--method", "rl", "--config", RL, "--set", "gradient_accumulation_steps=0",
                              "--set", "out={dir}/t"], "gradient_accumulation_steps", ["t"]),
    ("rl-mixed-precision-typo", ["finetune", "--method", "rl", "--config", RL, "--set", "mixed_precision=fp8",
                                 "--set", "out={dir}/t"], "mixed_precision", ["t"]),
    ("study-images-per-prompt", ["study", "run", "--config", STUDY, "--set", "rl.train.images_per_prompt=7",
                                 "--set", "work={dir}/w"], "rl.train: images_per_prompt=7 does not divide", ["w"]),
    ("study-draft-lrs", ["study", "run", "--config", STUDY, "--set", "draft.enabled=true", "--set",
                         "draft.lrs=[0.001, -1]", "--set",
                         "work={dir}/w"], "draft.lrs: give learning rates > 0", ["w"]),
    ("study-draft-lr-steps", ["study", "run", "--config", STUDY, "--set", "draft.enabled=true", "--set",
                              "draft.lr_steps=0", "--set",
                              "work={dir}/w"], "draft.lr_steps", ["w"]),
    ("study-draft-eta", ["study", "run", "--config", STUDY, "--set", "draft.eta=2", "--set",
                         "work={dir}/w"], "draft.eta", ["w"]),
    ("study-kl-min-std", ["study", "run", "--config", STUDY, "--set", "eval.kl_min_std=-1", "--set",
                          "work={dir}/w"], "eval.kl_min_std", ["w"]),
    ("study-owned-key", ["study", "run", "--config", STUDY, "--set", "sft.train.out={dir}/elsewhere", "--set",
                         "work={dir}/w"], "sft.train.out: set by the study", ["w", "elsewhere"]),
    ("study-summary-missing", ["study", "summary", "--results", "{dir}/none.json"], "no such file", []),
    ("push-no-folder", ["push", "--lora", "{dir}/nolora", "--repo-id", "me/x"], "no such folder", []),
    ("generate-lora-missing", ["generate", "--prompt", "a red circle", "--lora", "{dir}/nolora", "-o",
                               "{dir}/g.png"], "no such folder", ["g.png"]),
    ("tia2-score-no-images", ["tia2", "score", "--subset", "counting", "--reward", "shapes-clip-a", "-o",
                              "{dir}/s.jsonl"], "pass --images DIR", ["s.jsonl"]),
    # the study
    ("study-typo", ["study", "run", "--config", STUDY, "--set", "rl.train.epochz=2", "--set", "work={dir}/w"],
     "did you mean 'rl.train.epochs'", ["w", "docs"]),
    ("study-unknown-objective", ["study", "run", "--config", STUDY, "--set", "rl.objectives=[tn/nope]",
                                 "--set", "work={dir}/w"], "unknown objective 'tn/nope'", ["w"]),
    ("study-control-outside-its-method", ["study", "run", "--config", STUDY, "--set",
                                          "rl.objectives=[control/random-direction]", "--set", "work={dir}/w"],
     "unknown objective 'control/random-direction'", ["w"]),
    ("study-control-without-its-reward", ["study", "run", "--config", STUDY, "--set",
                                          "objectives.rewards=[shapes-clip-b, shapes-pref]", "--set",
                                          "objectives.ensemble=[shapes-clip-b, shapes-pref]", "--set",
                                          "draft.objectives=[raw/shapes-pref, control/random-direction]", "--set",
                                          "sft.enabled=false", "--set", "rl.enabled=false", "--set", "work={dir}/w"],
     "control/random-direction needs shapes-clip-a", ["w"]),
    ("study-control-alone", ["study", "run", "--config", STUDY, "--set",
                             "draft.objectives=[control/random-direction, control/prompt-free]", "--set",
                             "work={dir}/w"], "at least one objective besides the controls", ["w"]),
    ("study-ns", ["study", "run", "--config", STUDY, "--set", "pool.ns=[1,3]", "--set", "work={dir}/w"],
     "must divide pool.n_max", ["w"]),
    ("study-one-member", ["study", "run", "--config", STUDY, "--set", "objectives.ensemble=[shapes-clip-a]",
                          "--set", "work={dir}/w"], "at least two members", ["w"]),
    ("study-unknown-reward", ["study", "run", "--config", STUDY, "--set", "objectives.rewards=[nope]",
                              "--set", "work={dir}/w"], "unknown reward 'nope'", ["w"]),
    ("study-work-not-empty", ["study", "run", "--config", STUDY, "--set", "work={dir}/notrun", "--set",
                              "out={dir}/report"], "folder is not empty", ["report"]),
    ("study-work-busy-changed", ["study", "run", "--config", STUDY, "--resume", "--set", "work={dir}/studied",
                                 "--set", "out={dir}/report"], "was made with another config", ["report"]),
    ("study-unknown-stage", ["study", "run", "--config", STUDY, "--only", "poool", "--set", "work={dir}/w"],
     "unknown stage", ["w"]),
    ("study-out-is-a-file", ["study", "run", "--config", STUDY, "--set", "out={dir}/black.png", "--set",
                             "work={dir}/w"], "cannot write", ["w"]),
]


def _fill(argv, folder):
    return [a.replace("{dir}", str(folder)) for a in argv]


def assert_one_line_error(capsys, rc, expected):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("textnorm: note:")]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("textnorm: error:"), err
    assert "Traceback" not in err
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case, files, capsys):
    name, argv, expected, absent = case
    before = sorted(p.name for p in files.iterdir())
    try:
        rc = main(_fill(argv, files))
    except SystemExit as e:  # argparse errors
        rc = e.code
    assert_one_line_error(capsys, rc, expected)
    for rel in absent:
        assert not (files / rel).exists(), rel
    assert sorted(p.name for p in files.iterdir()) == before  # nothing new, nothing removed
    assert (files / "notrun" / "precious.txt").read_text() == "mine"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_every_case_has_its_own_id_and_a_message_to_match():
    """An empty expected message would match any error line: every case must name what its error says."""
    assert len({c[0] for c in CASES}) == len(CASES)
    assert all(c[2].strip() for c in CASES), [c[0] for c in CASES if not c[2].strip()]


def test_disk_full_leaves_no_file(files, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    rc = main(["tia2", "table", "--published", "-o", str(files / "t.md")])
    assert_one_line_error(capsys, rc, "No space left on device")
    assert not (files / "t.md").exists() and not list(files.glob(".t.md.*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(files, capsys):
    ro = files / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    rc = main(["tia2", "table", "--published", "-o", str(ro / "t.md")])
    assert_one_line_error(capsys, rc, "cannot write")


def test_resume_with_another_config_is_refused(files, capsys):
    from textnorm_t2i.checkpoint import save_checkpoint
    from textnorm_t2i.finetune.config import load_finetune_config

    run = files / "run"
    cfg = load_finetune_config("rl", RL, [f"out={run}"])
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_checkpoint(run / "checkpoint-1", {"lora": {}}, state={"epoch": 1, "config": cfg.to_dict()})
    rc = main(["finetune", "--method", "rl", "--config", RL, "--set", f"out={run}", "--set", "lr=0.1", "--resume"])
    assert_one_line_error(capsys, rc, "lr: 0.0005 -> 0.1")
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoint-1", "config.yaml"]
    assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == 0.0005  # the record is unchanged


def test_a_second_run_into_a_locked_folder_is_refused(files, capsys):
    from textnorm_t2i.rundir import RunLock

    with RunLock(files / "busy"):
        rc = main(["finetune", "--method", "rl", "--config", RL, "--set", f"out={files / 'busy'}", "--resume"])
    assert_one_line_error(capsys, rc, "another run")


def test_keyboard_interrupt_is_one_line(files, capsys, monkeypatch):
    import textnorm_t2i.cli.tia2 as tia2_commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tia2_commands, "cmd_tia2_info", interrupted)
    assert main(["tia2", "info"]) == 130
    assert capsys.readouterr().err == "textnorm: interrupted\n"


def test_good_overrides_convert_types():
    from textnorm_t2i.finetune.config import load_finetune_config

    cfg = load_finetune_config("rl", RL, ["lr=1e-3", "reward.textnorm=true", "prompts.list=[a red circle]"])
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float) and cfg.reward.textnorm is True
    assert cfg.prompts.list == ["a red circle"]


def test_new_files_get_normal_permissions(tmp_path):
    from textnorm_t2i.io import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644


def test_symlink_to_a_file_keeps_the_link(tmp_path):
    from textnorm_t2i.io import write_text_atomic

    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    write_text_atomic(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"


def test_generate_with_an_image_suffix_writes_that_image(tmp_path, capsys):
    assert main(["generate", "--prompt", "a red circle", "--n", "2", "--steps", "2", "-o",
                 str(tmp_path / "grid.jpg")]) == 0
    assert (tmp_path / "grid.jpg").is_file()
    with Image.open(tmp_path / "grid.jpg") as img:
        assert img.format == "JPEG"


# ------------------------------------------------------------------ a second process: signals
def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))


def tiny_rl_config(tmp_path, epochs, checkpoint_every, eval):
    """An RL config on the tiny local models, two samples per epoch, at most two checkpoints kept."""
    from tiny_models import save_tiny_shapes_pipeline, save_tiny_shapes_reward

    return {"seed": 0, "generator": str(save_tiny_shapes_pipeline(tmp_path / "gen")), "out": str(tmp_path / "run"),
            "prompts": {"list": ["a red circle", "two blue squares"]},
            "reward": {"name": "shapes-clip-a", "path": str(save_tiny_shapes_reward(tmp_path / "rw"))},
            "sampling": {"steps": 3}, "lora": {"rank": 2, "alpha": 2}, "epochs": epochs, "batch_size": 2,
            "train_batch_size": 2, "checkpoint_every": checkpoint_every, "checkpoints_total_limit": 2,
            "eval": {**eval, "prompts": ["a red circle"], "steps": 2}}


@pytest.mark.slow
def test_sigint_stops_at_a_safe_point_and_the_run_resumes(tmp_path):
    cfg = tiny_rl_config(tmp_path, epochs=200, checkpoint_every=1000, eval={"every": 1000})
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "textnorm_t2i.cli", "finetune", "--method", "rl", "--config",
           str(tmp_path / "rl.yaml")]
    proc, _ = start_held(cmd, _env(), "rl:epoch:2")  # the run waits after its 2nd epoch until signalled
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("textnorm:") and "note:" not in line]
    assert len(lines) == 1 and "stopped by SIGINT" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in err
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-2"]  # stopped at the epoch it was signalled in
    assert not (tmp_path / "run" / "lora" / "adapter_model.safetensors").exists()
    stopped_at = 2
    # Resume for two more epochs (epochs may change on resume) and finish.
    done = subprocess.run(cmd + ["--resume", "--set", f"epochs={stopped_at + 2}"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {checkpoints[0]}" in done.stderr
    assert (tmp_path / "run" / "lora" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    from textnorm_t2i.finetune.rl import run_rl
    cfg = tiny_rl_config(tmp_path, epochs=3, checkpoint_every=1, eval={"every": 1})
    whole = run_rl(dict(cfg, out=str(tmp_path / "whole")), progress=False, truth=WORLD)
    run_rl(cfg, progress=False, truth=WORLD)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]  # limit 2
    (run / "checkpoint-3" / "weights.safetensors").write_bytes(b"garbage")
    (run / "lora" / "adapter_model.safetensors").unlink()
    run_rl(cfg, resume=True, progress=False, truth=WORLD)  # falls back to checkpoint-2 and redoes epoch 3
    from safetensors.torch import load_file

    from textnorm_t2i.finetune.common import params_digest

    weights = "lora/adapter_model.safetensors"
    assert params_digest(load_file(run / weights)) == params_digest(load_file(whole / weights))
    rows = (run / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    assert np.isfinite(float(rows[-1].split(",")[1]))


def test_world_judge_exit_code(tmp_path, capsys):
    from textnorm_t2i.world.scene import render

    render("two red circles", seed=0).save(tmp_path / "two.png")
    assert main(["world", "judge", "--prompt", "two red circles", str(tmp_path / "two.png"), "--exit-code"]) == 0
    assert main(["world", "judge", "--prompt", "three red circles", str(tmp_path / "two.png"), "--exit-code"]) == 1
    assert main(["world", "judge", "--prompt", "three red circles", str(tmp_path / "two.png")]) == 0
    assert "NOT ALIGNED" in capsys.readouterr().out


def test_reward_training_method_of_the_wrong_type_is_one_line(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("method: [detect]\n")
    assert main(["train", "reward", "--config", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method: expected one of contrastive, preference, detect" in err


def test_the_studys_embedded_engine_settings_are_fixed_on_resume():
    """The engines allow some keys to change on resume (e.g. SFT's steps); inside the study they may not, so a resumed
    study cannot mix runs of different lengths."""
    from textnorm_t2i.config import config_differences, mutable_keys
    from textnorm_t2i.study.config import StudyConfig, load_study_config

    assert not any(k.startswith("sft.train.") for k in mutable_keys(StudyConfig))
    before, after = load_study_config(None, []), load_study_config(None, ["sft.train.steps=400"])
    assert config_differences(StudyConfig, before.to_dict(), after.to_dict()) == ["sft.train.steps: 200 -> 400"]


def test_help_shows_a_zero_default_but_not_none_or_false(capsys):
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    out = capsys.readouterr().out
    assert "seed of the clean scenes (default: 0)" in " ".join(out.split())
    assert "(default: None)" not in out and "(default: False)" not in out
