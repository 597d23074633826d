"""`textnorm score`, `tia2 score`, `calibrate`, `prompts generate`, `rewards list` on tiny local models."""

import json

import numpy as np
import pytest
from PIL import Image

from textnorm_t2i.cli import main
from tiny_models import save_tiny_clip

PROMPTS = ["a photo of two red circles", "a photo of a blue square", "a photo of three cats", "a photo of a dog",
           "a photo of two books", "a photo of an apple"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """A small benchmark in the TIA2 layout, with images."""
    root = tmp_path_factory.mktemp("bench")
    rng = np.random.default_rng(0)
    (root / "human_annotations").mkdir()
    (root / "images" / "toy").mkdir(parents=True)
    labels = {}
    for p, prompt in enumerate(PROMPTS):
        for j in range(8):
            name = f"image_{p}_0_{j}.png"
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / "toy" / name)
            votes = [1, 1, 0] if j % 2 else [0, 0, int(rng.integers(0, 2))]
            labels[name] = {"image": name, "caption": prompt, "human_labels": votes}
    (root / "human_annotations" / "human_labels_toy.json").write_text(json.dumps(labels))
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_rewards_list(capsys):
    code, out, _ = run(capsys, "rewards", "list", "--json")
    assert code == 0 and {"clip", "pickscore", "blip2"} <= {e["name"] for e in json.loads(out)}


def test_tia2_score_then_eval(capsys, clip_dir, bench_dir, tmp_path):
    scores = tmp_path / "scores.jsonl"
    code, _, err = run(capsys, "tia2", "score", "--benchmark", bench_dir, "--images", bench_dir / "images",
                       "--reward", f"clip={clip_dir}", "-o", scores)
    assert code == 0, err
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 48 and {r["subset"] for r in rows} == {"toy"} and rows[0]["model"] == "clip"
    code, out, err = run(capsys, "tia2", "eval", "--benchmark", bench_dir, "--scores", scores, "--json")
    assert code == 0, err
    assert json.loads(out)["toy"]["clip"]["n_prompts"] == 6


def test_score_manifest_with_textnorm_and_unreadable(capsys, clip_dir, bench_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    imgs = sorted((bench_dir / "images" / "toy").iterdir())[:3]
    manifest.write_text("image,prompt\n" + "".join(f"{p},{PROMPTS[i]}\n" for i, p in enumerate(imgs))
                        + "broken.png,a photo of a dog\n")
    out_file = tmp_path / "s.jsonl"
    code, _, err = run(capsys, "score", "--manifest", manifest, "--reward", f"clip={clip_dir}", "--textnorm",
                       "--prompt-sets", "rules", "-o", out_file)
    assert code == 2 and "broken.png: unreadable image" in err and not out_file.exists()
    code, _, err = run(capsys, "score", "--manifest", manifest, "--reward", f"clip={clip_dir}", "--textnorm",
                       "--prompt-sets", "rules", "--skip-unreadable", "-o", out_file)
    assert code == 0 and "skipped 1" in err
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 3 and all(0 < r["score"] < 1 for r in rows) and rows[0]["model"] == "textnorm(clip)"


def test_calibrate_cv_and_oracle(capsys, clip_dir, bench_dir):
    common = ["calibrate", "--benchmark", bench_dir, "--subset", "toy", "--reward", f"clip={clip_dir}",
              "--prompt-sets", "rules", "--temperatures", "0.1", "1", "10", "--k", "3", "--json"]
    code, out, err = run(capsys, *common)
    assert code == 0, err
    res = json.loads(out)
    assert res["mode"] == "cv" and res["chosen"]["temperature"] in (0.1, 1.0, 10.0) and len(res["folds"]) == 3
    code, out, _ = run(capsys, *common, "--oracle")
    assert "ORACLE" in json.loads(out)["label"]
    code, out, _ = run(capsys, *common[:-1], "--reward", f"pickscore={clip_dir}", "--lams", "0", "1")
    assert code == 0 and "cross-validation" in out and "lam" in out


def test_prompts_generate_rules(capsys, tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("a photo of three books\na red circle to the left of a blue square\n")
    out = tmp_path / "sets.json"
    code, _, _ = run(capsys, "prompts", "generate", "--method", "rules", "--in", src, "-o", out)
    sets = json.loads(out.read_text())
    assert code == 0 and "a photo of two books" in sets["a photo of three books"]
    code, _, err = run(capsys, "prompts", "generate", "--method", "llm", "--in", src, "-o", tmp_path / "x.json")
    assert code == 2 and "--base-url" in err


def test_every_command_help_has_an_example_and_defaults():
    import argparse

    from textnorm_t2i.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{path} {name}".strip(), sub
                    yield from walk(sub, f"{path} {name}")

    missing = [path for path, sub in walk(build_parser(), "") if "example: textnorm" not in sub.format_help()]
    assert not missing, missing
    assert "(default: 8)" in dict(walk(build_parser(), ""))["generate"].format_help()


def test_help_examples_parse():
    """Every example shown in --help is a command line the parser accepts."""
    import shlex

    from textnorm_t2i.cli import EXAMPLES, build_parser

    for example in EXAMPLES.values():
        argv = shlex.split(example.replace(" [--resume]", ""))[1:]
        build_parser().parse_args(argv)


def test_finetune_help_lists_every_config_key(capsys):
    import dataclasses

    import pytest

    from textnorm_t2i.cli import main
    from textnorm_t2i.finetune.config import RLConfig

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert all(f.name in out for f in dataclasses.fields(RLConfig)) and "--print-config" in out
