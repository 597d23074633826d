"""Inputs that used to lose work or pass silently: non-finite rewards and weights, --overwrite of folders a run
did not make (or before the new run is known to be valid), YAML aliases, foreign benchmark folders, image forms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from textnorm_t2i.cli import main
from textnorm_t2i.errors import InputError
from textnorm_t2i.rundir import MARKER_NAME, RunFolder, clearable_entries, mark_run_dir, prepare_run_dir
from textnorm_t2i.trainers import WORLD
from tiny_models import save_tiny_shapes_pipeline, save_tiny_shapes_reward

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"generator": str(save_tiny_shapes_pipeline(root / "gen")),
            "reward": str(save_tiny_shapes_reward(root / "reward"))}


def rl_config(tiny, out, **extra):
    return {"seed": 0, "generator": tiny["generator"], "out": str(out),
            "prompts": {"list": ["a red circle", "two blue squares"]},
            "reward": {"name": "shapes-clip-a", "path": tiny["reward"]}, "sampling": {"steps": 2},
            "lora": {"rank": 2, "alpha": 2}, "epochs": 2, "batch_size": 2, "train_batch_size": 2,
            "eval": {"every": 1, "prompts": ["a red circle"], "steps": 2}, **extra}


def one_error_line(capsys, rc):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("textnorm:") and "note:" not in line]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------- non-finite values
def test_a_non_finite_reward_stops_rl_before_any_update(tiny, tmp_path):
    from textnorm_t2i.trainers import RLTrainer

    trainer = RLTrainer(rl_config(tiny, tmp_path / "run"), reward=lambda images, prompts: [float("nan")] * len(prompts),
                        progress=False)
    with pytest.raises(InputError, match=r"reward '<lambda>' gave nan for prompt '(a red circle|two blue squares)'"):
        trainer.train()
    assert not (tmp_path / "run" / "lora").exists() and not list((tmp_path / "run").glob("checkpoint-*"))


def test_best_of_n_refuses_an_infinite_score_and_writes_no_table(tiny, tmp_path):
    from textnorm_t2i.trainers import BestOfN

    def spiky(images, prompts):
        return [float("inf") if p == "two blue squares" else 0.0 for p in prompts]

    cfg = {"generator": tiny["generator"], "out": str(tmp_path / "b"), "n_max": 2, "ns": [1, 2],
           "reward": {"name": "shapes-clip-a", "path": tiny["reward"]}, "sampling": {"steps": 2}}
    with pytest.raises(InputError, match="reward 'spiky' gave inf for prompt 'two blue squares'"):
        BestOfN(cfg, reward=spiky, prompts=["a red circle", "two blue squares"], progress=False).train()
    assert not (tmp_path / "b" / "bon.csv").exists()


@pytest.mark.slow
def test_a_huge_reward_weight_is_an_error_not_a_nan_adapter(tiny, tmp_path, capsys):
    """The audit's case: perceive-looks with w = 1e308 made every LoRA weight NaN (exit 0)."""
    cfg = rl_config(tiny, tmp_path / "inf", reward={"name": "shapes-perceive-looks", "args": {"w": 1.0e308}})
    (tmp_path / "inf.yaml").write_text(yaml.safe_dump(cfg))
    line = one_error_line(capsys, main(["finetune", "--method", "rl", "--config", str(tmp_path / "inf.yaml")]))
    assert "reward 'shapes-perceive-looks' gave" in line and "must be finite" in line
    assert not (tmp_path / "inf" / "lora").exists()


@pytest.mark.slow
def test_an_adapter_with_non_finite_weights_is_refused_on_load(tiny, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from textnorm_t2i.trainers import RLTrainer

    out = RLTrainer(rl_config(tiny, tmp_path / "run", epochs=1, eval={"every": 0}), progress=False).train()
    weights = out / "lora" / "adapter_model.safetensors"
    state = load_file(weights)
    first = sorted(state)[0]
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, weights, metadata={"format": "pt"})
    rc = main(["generate", "--model", tiny["generator"], "--lora", str(out / "lora"), "--prompt", "a red circle",
               "--n", "1", "--steps", "1", "-o", str(tmp_path / "x.png")])
    assert "non-finite weights" in one_error_line(capsys, rc)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_sft_that_diverges_stops_with_its_last_finite_state(tmp_path):
    """A learning rate that overflows the weights: the run stops with one error, keeping the last finite state
    as a checkpoint, and writes no adapter."""
    from textnorm_t2i.finetune.sft import run_sft

    pytest.importorskip("diffusers")
    cfg = {"seed": 0, "generator": str(save_tiny_shapes_pipeline(tmp_path / "gen")), "out": str(tmp_path / "s"),
           "prompts": {"list": ["a red circle", "two blue squares"]}, "samples_per_prompt": 4, "top_fraction": 0.5,
           "reward": {"name": "shapes-clip-a", "path": str(save_tiny_shapes_reward(tmp_path / "rw"))},
           "sampling": {"steps": 2}, "lora": {"rank": 2, "alpha": 2}, "steps": 6, "lr": 1e30, "grad_clip": 1e30,
           "train_batch_size": 4,
           "eval": {"every": 100, "prompts": ["a red circle"], "steps": 2}}
    with pytest.raises(InputError, match="training diverged at step"):
        run_sft(cfg, progress=False, truth=WORLD)
    assert not (tmp_path / "s" / "lora").exists()
    for checkpoint in (tmp_path / "s").glob("checkpoint-*"):
        from safetensors.torch import load_file

        assert all(bool(torch.isfinite(v).all()) for v in load_file(checkpoint / "weights.safetensors").values())


# ------------------------------------------------------------------------------------------- --overwrite
def test_overwrite_never_clears_a_folder_no_run_made(tmp_path):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')")
    (project / "config.yaml").write_text("seed: 0\n")  # a config.yaml alone does not make it a run folder
    before = snapshot(project)
    with pytest.raises(InputError, match="not a folder made by a textnorm run"):
        prepare_run_dir(project, kind="finetune", overwrite=True)
    mark_run_dir(project, "finetune")  # even marked: src/ is not something a run writes
    with pytest.raises(InputError, match=r"holds files a finetune run does not write \(src\)"):
        prepare_run_dir(project, kind="finetune", overwrite=True)
    (project / MARKER_NAME).unlink()
    assert snapshot(project) == before


def test_overwrite_refuses_a_run_of_another_kind(tmp_path):
    study = tmp_path / "study"
    (study / "stages").mkdir(parents=True)
    mark_run_dir(study, "study")
    with pytest.raises(InputError, match="holds a textnorm study run, not a finetune run"):
        prepare_run_dir(study, kind="finetune", overwrite=True)
    assert (study / "stages").is_dir()


@pytest.mark.slow
def test_overwrite_clears_the_old_run_only_once_the_new_one_is_valid(tiny, tmp_path, capsys):
    from textnorm_t2i.trainers import RLTrainer

    out = RLTrainer(rl_config(tiny, tmp_path / "run", epochs=1), progress=False).train()
    before = snapshot(out)
    for bad in (["--set", "generator=nogen"], ["--set", f"reward.path={tmp_path / 'missing'}"]):
        (tmp_path / "rl.yaml").write_text(yaml.safe_dump(rl_config(tiny, out)))
        rc = main(["finetune", "--method", "rl", "--config", str(tmp_path / "rl.yaml"), "--overwrite", *bad])
        one_error_line(capsys, rc)
        assert snapshot(out) == before, bad
    # A valid new run does clear it (and marks the folder again).
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(rl_config(tiny, out, epochs=1, seed=3)))
    assert main(["finetune", "--method", "rl", "--config", str(tmp_path / "rl.yaml"), "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3
    assert clearable_entries(out, "finetune")  # everything it wrote is declared as a finetune output


def test_run_folder_start_is_where_the_old_run_goes(tmp_path):
    from textnorm_t2i.finetune.config import as_config

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "eval.csv").write_text("step\n0\n")
    mark_run_dir(folder, "finetune")
    cfg = as_config("rl", {"method": "rl", "out": str(folder)})
    run = RunFolder(folder, cfg, overwrite=True).open()
    try:
        assert (folder / "eval.csv").exists()  # opened and checked, not yet cleared
        run.start()
        assert not (folder / "eval.csv").exists() and (folder / "config.yaml").exists()
    finally:
        run.close()


# ------------------------------------------------------------------------------------------------ YAML
BILLION_LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]) + "\nlr: *i\n"


@pytest.mark.parametrize("argv", [["finetune", "--method", "rl"], ["study", "run"]])
def test_yaml_aliases_are_refused_before_they_expand(tmp_path, capsys, argv):
    (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1000
    line = one_error_line(capsys, main([*argv, "--config", str(tmp_path / "bomb.yaml")]))
    assert "aliases (*a) are not allowed in a config" in line and "bomb.yaml:2" in line


def test_a_huge_wrong_value_is_quoted_short(tmp_path, capsys):
    (tmp_path / "big.yaml").write_text(yaml.safe_dump({"lr": [[list(range(50)) for _ in range(50)] for _ in range(5)]}))
    line = one_error_line(capsys, main(["finetune", "--method", "rl", "--config", str(tmp_path / "big.yaml")]))
    assert "lr: expected a number" in line and len(line) < 400 and "characters)" in line


# ------------------------------------------------------------------------------------- benchmark builds
def test_benchmark_build_keeps_a_foreign_folder_and_replaces_only_its_own(tmp_path, capsys):
    foreign = tmp_path / "mine"
    (foreign / "images").mkdir(parents=True)
    (foreign / "README.md").write_text("my notes")
    (foreign / "images" / "holiday.png").write_bytes(b"png")
    before = snapshot(foreign)
    small = ["--prompts-per-subset", "1", "--samples", "2", "--steps", "1"]
    for extra, said in (([], "not empty"), (["--overwrite"], "not a folder made by a textnorm run")):
        rc = main(["world", "benchmark", "build", "-o", str(foreign), *small, *extra])
        assert said in one_error_line(capsys, rc)
        assert snapshot(foreign) == before
    built = tmp_path / "built"
    assert main(["world", "benchmark", "build", "-o", str(built), *small]) == 0
    info = json.loads((built / "benchmark.json").read_text())
    assert main(["world", "benchmark", "build", "-o", str(built), *small, "--seed", "1", "--overwrite"]) == 0
    assert json.loads((built / "benchmark.json").read_text())["seed"] == 1 != info["seed"]
    assert not list(built.glob(".build*")) and not (built / ".lock").exists()


def test_an_interrupted_benchmark_build_leaves_no_partial_benchmark(tmp_path, monkeypatch):
    import textnorm_t2i.analysis.benchmark as benchmark

    calls = []

    def write_then_fail(out, subset, *args, **kwargs):
        calls.append(subset)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(out, subset, *args, **kwargs)

    real = benchmark.write_subset
    monkeypatch.setattr(benchmark, "write_subset", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        benchmark.build_shapes_benchmark(tmp_path / "b", prompts_per_subset=1, samples=2, num_inference_steps=1,
                                         progress=False)
    visible = [p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith(".")]
    assert visible == []  # nothing a reader (tia2 info) would take for a benchmark
    monkeypatch.setattr(benchmark, "write_subset", real)
    benchmark.build_shapes_benchmark(tmp_path / "b", prompts_per_subset=1, samples=2, num_inference_steps=1,
                                     progress=False, overwrite=True)
    assert (tmp_path / "b" / "benchmark.json").is_file()


# ------------------------------------------------------------------------------------------- image forms
def test_image_forms_are_converted_or_refused_in_one_place():
    from textnorm_t2i.rewards.registry import load_reward

    reward = load_reward("shapes-clip-a")
    prompts = ["a red circle", "two blue squares"]
    x = (torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    as_float = reward.score(x, prompts)
    as_uint8 = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(reward.score(as_uint8, prompts), as_float)                    # 0-255, N x 3 x H x W
    torch.testing.assert_close(reward.score(as_uint8.permute(0, 2, 3, 1).numpy(), prompts), as_float)  # HWC array
    torch.testing.assert_close(reward.score(x.permute(0, 2, 3, 1), prompts), as_float)       # HWC float tensor
    with pytest.raises(InputError, match="values in \\[0, 1\\]"):
        reward.score(x * 255, prompts)
    with pytest.raises(InputError, match="NaN"):
        reward.score(torch.full_like(x, float("nan")), prompts)
    with pytest.raises(InputError, match="uint8 .* or float"):
        reward.score(as_uint8.to(torch.int32), prompts)
    from PIL import Image

    with pytest.raises(InputError, match="larger than"):
        reward.score([Image.new("RGB", (5000, 4000))], ["a red circle"])


def test_a_callable_returning_no_numbers_is_named():
    from textnorm_t2i.rewards.base import as_reward

    def broken(images, prompts):
        return {"score": 1}

    with pytest.raises(InputError, match="reward 'broken' returned dict, not one number per pair"):
        as_reward(broken).score(torch.zeros(1, 3, 4, 4), ["a"])


def test_score_matrix_of_nothing_is_empty():
    from textnorm_t2i.rewards.registry import load_reward

    reward = load_reward("shapes-clip-a")
    assert tuple(reward.score_matrix(torch.zeros(0, 3, 32, 32), ["a red circle"]).shape) == (0, 1)
    assert tuple(reward.score_matrix(torch.zeros(2, 3, 32, 32), []).shape) == (2, 0)


def test_an_unknown_reward_argument_is_one_line(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "prompt": "a red circle"}\n')
    rc = main(["score", "--manifest", str(tmp_path / "m.jsonl"), "--reward", "shapes-perceive-looks",
               "--reward-arg", "nosuch=1", "-o", str(tmp_path / "o.jsonl")])
    assert "unexpected keyword argument 'nosuch' (its arguments: w)" in one_error_line(capsys, rc)


@pytest.mark.parametrize("command", [
    ["score", "--manifest", "{in}", "--reward", "shapes-clip-a", "-o", "{in}"],
    ["prompts", "generate", "--method", "rules", "--in", "{in}", "-o", "{in}"],
    ["tia2", "eval", "--scores", "{in}", "-o", "{in}"]])
def test_output_equal_to_the_input_is_refused(tmp_path, capsys, command):
    source = tmp_path / "input.txt"
    source.write_text("a red circle\n")
    rc = main([a.replace("{in}", str(source)) for a in command])
    assert "is also an input" in one_error_line(capsys, rc)
    assert source.read_text() == "a red circle\n"



@pytest.mark.slow
def test_resume_after_a_partial_last_log_line(tiny, tmp_path):
    """A run killed while appending leaves a cut line in samples.jsonl and eval.csv: the resume drops it."""
    from textnorm_t2i.finetune.rl import run_rl

    cfg = rl_config(tiny, tmp_path / "run", checkpoint_every=1, epochs=1)
    out = run_rl(cfg, progress=False, truth=WORLD)
    with (out / "samples.jsonl").open("a") as f:
        f.write('{"step": 2, "prompt": "a re')
    with (out / "eval.csv").open("a") as f:
        f.write("1,0.5")  # a partial row of a step that is already there
    run_rl(dict(cfg, epochs=2), resume=True, progress=False, truth=WORLD)
    steps = [json.loads(line)["step"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [0, 1, 2]
    import csv

    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and all(None not in r.values() for r in rows)


# --------------------------------------------------------------------------------------- study outputs
def test_objective_names_are_escaped_in_the_study_report():
    from textnorm_t2i.study.report import html_label

    assert html_label("raw/<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"


@pytest.mark.parametrize("text,said", [
    ("{}", "not a study's results.json"), ("[1, 2]", "not a study's results.json"),
    ('{"config": {}, "prompts": {}, "bon": {"ns": [1], "objectives": {"raw/x": {"gold": [{}]}}}}',
     "not a complete study's results.json"),
    ('{"config": {}, "prompts": {"tr', "malformed JSON")])
def test_study_summary_of_a_file_the_study_did_not_write(tmp_path, capsys, text, said):
    (tmp_path / "r.json").write_text(text)
    assert said in one_error_line(capsys, main(["study", "summary", "--results", str(tmp_path / "r.json")]))
    assert capsys.readouterr().out == ""


def test_a_full_disk_while_checkpointing_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    import errno

    import textnorm_t2i.checkpoint as checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint(tmp_path / "checkpoint-3", {"lora": {"w": torch.zeros(2)}})
    assert list(tmp_path.iterdir()) == []


def test_a_section_switched_off_is_not_checked():
    from textnorm_t2i.study.config import load_study_config

    off = ["rl.enabled=false", "rl.train.batch_size=3", "rl.train.train_batch_size=2", "rl.objectives=[nosuch]",
           "sft.enabled=false", "sft.objectives=[nosuch]", "map.enabled=false", "map.n=3", "map.noise_scales=[99]"]
    cfg = load_study_config(None, off)
    assert not cfg.rl.enabled and cfg.rl.train.batch_size == 3
    with pytest.raises(InputError, match="rl.train: train_batch_size=2 does not divide"):
        load_study_config(None, [o for o in off if o != "rl.enabled=false" and "objectives" not in o])


# ------------------------------------------------------------------- the second audit (80 hostile inputs)
RL_SMOKE = str(ROOT / "configs" / "rl-smoke.yaml")
DEEP_YAML = "epochs: " + "[" * 5000 + "]" * 5000 + "\n"


@pytest.mark.parametrize("argv,said", [
    (["finetune", "--method", "rl", "--config", RL_SMOKE, "--set", "seed=-1"], "seed: must be >= 0"),
    (["finetune", "--method", "rl", "--config", RL_SMOKE, "--set", "seed=100000000000000000000000"],
     "seed: must be <="),
    (["finetune", "--method", "rl", "--config", RL_SMOKE, "--set", "eval.seed=-5"], "eval.seed: must be >= 0"),
    (["study", "run", "--set", "seed=-1"], "seed: must be >= 0"),
    (["study", "run", "--set", "prompts.train_per_subset=1000000"], "must be <= 1000"),
    (["finetune", "--method", "rl", "--config", RL_SMOKE, "--set", "prompts.n=1000000"], "must be <= 1000"),
    (["finetune", "--method", "rl", "--config", "{dir}/deep.yaml"], "nested too deeply"),
    (["study", "run", "--set", "pool.ns=" + "[" * 3000 + "]" * 3000], "pool.ns: expected a list"),
    (["study", "summary", "--results", "{dir}/deep.json"], "nested too deeply"),
    (["finetune", "--method", "rl", "--config", "{dir}/dup.yaml"], "key 'epochs' is given twice"),
    (["finetune", "--method", "rl", "--config", "/dev/zero"], "not a regular file"),
    (["finetune", "--method", "rl", "--config", RL_SMOKE, "--set", "out=a\x00b"], "NUL"),
    (["study", "run", "--set", "objectives.temperatures=[]"], "objectives.temperatures: give temperatures"),
    (["study", "run", "--set", "objectives.temperatures=[1e-300]"], "objectives.temperatures: give temperatures"),
    (["study", "run", "--set", "work=same", "--set", "out=same"], "out: give a folder other than work"),
    (["finetune", "--method", "rl", "--config", RL_SMOKE, "--set", "generator={dir}/evil"], "cannot load the pipeline"),
    (["study", "summary", "--results", "{dir}"], "is a folder"),
])
def test_audited_inputs_are_one_line(tmp_path, capsys, argv, said, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep.yaml").write_text(DEEP_YAML)
    (tmp_path / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (tmp_path / "dup.yaml").write_text("epochs: 1\nepochs: 5\n")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model_index.json").write_text('{"_class_name": "Evil"}')
    (tmp_path / "evil" / "scheduler").mkdir()
    (tmp_path / "evil" / "scheduler" / "scheduler_config.json").write_text(
        (ROOT / "src/textnorm_t2i/data/models/shapes-generator/scheduler/scheduler_config.json").read_text())
    before = sorted(p.name for p in tmp_path.iterdir())
    line = one_error_line(capsys, main([a.replace("{dir}", str(tmp_path)) for a in argv]))
    assert said in line and len(line) < 400, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind


@pytest.mark.parametrize("arg,said", [("device=bogus", "is not a device"), ("device=cuda", "no CUDA device")])
def test_a_bad_reward_device_is_one_line(tmp_path, capsys, arg, said):
    if said == "no CUDA device" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "prompt": "a red circle"}\n')
    rc = main(["score", "--manifest", str(tmp_path / "m.jsonl"), "--reward", "shapes-clip-a", "--reward-arg", arg,
               "-o", str(tmp_path / "o.jsonl")])
    assert said in one_error_line(capsys, rc)


def test_score_refuses_an_output_that_is_one_of_its_images_or_its_prompt_sets(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": str(tmp_path / "a.png"), "prompt": "a red circle"}) + "\n")
    (tmp_path / "sets.json").write_text('{"a red circle": ["a blue circle"]}')
    before = snapshot(tmp_path)
    for output, extra in ((tmp_path / "a.png", []), (tmp_path / "sets.json",
                                                    ["--textnorm", "--prompt-sets", str(tmp_path / "sets.json")])):
        rc = main(["score", "--manifest", str(tmp_path / "m.jsonl"), "--reward", "shapes-clip-a", *extra,
                   "-o", str(output)])
        assert "is also an input" in one_error_line(capsys, rc)
    assert snapshot(tmp_path) == before


def test_an_api_key_never_reaches_an_error_line(monkeypatch):
    from textnorm_t2i.prompts.llm import LLMError, OpenAIChatGenerator

    monkeypatch.setenv("TEXTNORM_TEST_KEY", "sk-SECRET10\r")
    gen = OpenAIChatGenerator("http://127.0.0.1:9/v1", "m", api_key_env="TEXTNORM_TEST_KEY", max_retries=0,
                              cache_dir=None)  # nothing written under ~/.cache
    with pytest.raises(LLMError) as e:
        gen("a red circle")
    assert "SECRET" not in str(e.value)
    monkeypatch.setenv("TEXTNORM_TEST_KEY", "sk-SECRET10\nX-Other: 1")
    with pytest.raises(LLMError) as e:
        gen("a red circle")
    assert "SECRET" not in str(e.value) and "control characters" in str(e.value)


def test_textnorm_and_ensemble_refuse_what_they_cannot_use():
    from textnorm_t2i.calibrate import Ensemble, TextNorm
    from textnorm_t2i.rewards.registry import load_reward

    reward = load_reward("shapes-clip-a")
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(InputError, match="must be a list of prompts"):
        TextNorm(reward, {"a red circle": "xyz"})
    for bad in (lambda p: "a blue circle", lambda p: None):
        with pytest.raises(InputError, match="must return a list of prompts"):
            TextNorm(reward, generator=bad).score(x, ["a red circle"])
    for t in (float("nan"), 0.0, "1"):
        with pytest.raises(InputError, match="temperature"):
            TextNorm(reward, {"a red circle": ["a blue circle"]}, temperature=t)
    with pytest.raises(InputError, match="too small"):
        TextNorm(reward, {"a red circle": ["a blue circle"]}, temperature=1e-300).score(x, ["a red circle"])
    for lam in (float("inf"), float("nan"), "x"):
        with pytest.raises(InputError, match="lambda"):
            Ensemble([reward, reward], mode="ur", lam=lam)
    with pytest.raises(InputError, match="no pixels"):
        reward.score(torch.zeros(1, 3, 0, 0), ["a red circle"])
    with pytest.raises(InputError, match="got ndarray"):
        reward.score(x, np.array(["a red circle"]))


def test_score_matrix_in_chunks_equals_pairwise_scores(monkeypatch):
    import textnorm_t2i.rewards.base as base
    from textnorm_t2i.rewards.registry import load_reward

    monkeypatch.setattr(base, "SCORE_MATRIX_PAIRS", 4)  # one image row per chunk
    reward = load_reward("shapes-perceive-clean")
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    prompts = ["two red circles", "three red circles", "a red circle"]
    m = reward.score_matrix(images, prompts)
    assert m.shape == (5, 3)
    for i in range(5):
        torch.testing.assert_close(m[i], reward.score(images[i:i + 1].expand(3, -1, -1, -1), prompts))


def test_a_trainer_config_whose_prompts_section_is_not_a_mapping(tmp_path):
    from textnorm_t2i.trainers import RLTrainer

    (tmp_path / "c.yaml").write_text("prompts:\n")
    assert RLTrainer(tmp_path / "c.yaml", prompts=["a red circle"]).config.prompts.list == ["a red circle"]
    with pytest.raises(InputError, match="prompts must be a mapping"):
        RLTrainer({"prompts": "abc"}, prompts=["a red circle"])


def test_a_checkpoint_with_a_damaged_rng_state_is_unreadable(tmp_path):
    from textnorm_t2i.checkpoint import read_checkpoint, save_checkpoint

    folder = save_checkpoint(tmp_path / "checkpoint-2", {"lora": {"w": torch.zeros(2)}})
    state = json.loads((folder / "state.json").read_text())
    state["rng"]["python"] = "(("
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match="unreadable checkpoint"):
        read_checkpoint(folder)


def test_a_study_report_never_replaces_files_it_did_not_write(tmp_path):
    from textnorm_t2i.study.run import check_report_folder

    user = tmp_path / "docs"
    user.mkdir()
    (user / "report.html").write_text("my own report")
    with pytest.raises(InputError, match="not a folder made by a textnorm run"):
        check_report_folder(user, "runs/s", overwrite=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "samples.jsonl").write_text("{}\n")
    mark_run_dir(run, "finetune")
    with pytest.raises(InputError, match="holds a textnorm finetune run, not a report run"):
        check_report_folder(run, "runs/s", overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.html").write_text("<html>")
    mark_run_dir(other, "report", work="runs/another")
    with pytest.raises(InputError, match="holds the report of the study in runs/another"):
        check_report_folder(other, "runs/s", overwrite=False)
    check_report_folder(other, "runs/s", overwrite=True)          # replaced only when asked
    check_report_folder(other, "runs/another", overwrite=False)   # its own study resumes into it


def test_a_stage_record_of_the_wrong_shape_is_not_trusted():
    from textnorm_t2i.study.run import _result_fits

    assert not _result_fits("prompts", {"train": 5, "eval": {}})
    assert not _result_fits("temperatures", {"rewards": {"shapes-clip-a": {"temperature": "hot"}}})
    assert _result_fits("prompts", {"train": {"counting": ["two red circles"]}, "eval": {"counting": []}})


def test_the_temperature_table_escapes_reward_names():
    from textnorm_t2i.study.report import _temperature_table

    ci = {"auroc": [0.4, 0.6]}
    table = _temperature_table({"k": 5, "rewards": {"<img src=x onerror=alert(1)>": {
        "temperature": 1.0, "raw": {"auroc": 0.5, "ci": ci}, "textnorm": {"auroc": 0.5, "ci": ci}}}})
    assert "<img" not in table and "&lt;img" in table


@pytest.mark.slow
def test_an_overwrite_whose_new_run_fails_puts_the_earlier_run_back(tiny, tmp_path):
    from textnorm_t2i.trainers import RLTrainer

    out = RLTrainer(rl_config(tiny, tmp_path / "run", epochs=1), progress=False).train()
    before = snapshot(out)

    def broken(images, prompts):
        raise RuntimeError("the reward server is down")

    with pytest.raises(RuntimeError, match="server is down"):
        RLTrainer(rl_config(tiny, out, epochs=1, seed=3), reward=broken, progress=False, overwrite=True).train()
    assert snapshot(out) == before and not (out / ".previous-run.tmp").exists()


def test_wrong_kinds_of_input_to_the_api_are_named(tmp_path):
    from textnorm_t2i.io import open_image
    from textnorm_t2i.rewards.registry import load_reward
    from textnorm_t2i.trainers import RLTrainer

    with pytest.raises(InputError, match="got NoneType"):
        load_reward("shapes-clip-a").score(None, ["a red circle"])
    with pytest.raises(InputError, match="got int"):
        RLTrainer(5)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(InputError, match="leads nowhere"):
        open_image(tmp_path / "a")
    with pytest.raises(InputError, match="not a regular file"):
        open_image("/dev/zero")


def test_a_report_that_fails_half_way_leaves_the_earlier_report_whole(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import textnorm_t2i.study.report as report

    out = tmp_path / "out"
    out.mkdir()
    for name in report.REPORT_FILES:
        (out / name).write_text(f"old {name}")

    def half(study, staging):
        (staging / "results.json").write_text("new")
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(report, "_write_report_files", half)
    with pytest.raises(RuntimeError):
        report.write_report(report.ReportInputs(SimpleNamespace(out=str(out), work="runs/s"), {}, tmp_path))
    assert {p.name: p.read_text() for p in out.iterdir()} == {n: f"old {n}" for n in report.REPORT_FILES}


def test_a_study_with_a_missing_generator_stops_before_any_stage(tmp_path, capsys):
    rc = main(["study", "run", "--set", f"work={tmp_path / 'w'}", "--set", f"out={tmp_path / 'o'}",
               "--set", "generator=nogen"])
    assert "nogen" in one_error_line(capsys, rc)
    assert list(tmp_path.iterdir()) == []
