"""The synthetic world: grammar, rendering, the oracle (also on an independent renderer), annotators."""

import json
import random

import numpy as np
import pytest
from PIL import Image

from independent_renderer import draw as draw_independent
from independent_renderer import place as place_independent
from textnorm_t2i.bench.tia2 import load_subset
from textnorm_t2i.cli import main
from textnorm_t2i.errors import InputError
from textnorm_t2i.world import (
    annotate,
    judge,
    near_misses,
    parse,
    render,
    sample_prompts,
    sample_scene,
    simulate_votes,
    write_subset,
)
from textnorm_t2i.world.check import Obj, check
from textnorm_t2i.world.grammar import Clause, Relation
from textnorm_t2i.world.perturb import add_noise, blur, color_jitter, perturb_all
from textnorm_t2i.world.scene import draw_scene

SUBSETS = ("counting", "composition", "comprehensive")


def test_parse_variants():
    a = parse("A photo of two blue squares and a yellow triangle.")
    assert a.clauses == (Clause("square", "blue", 2), Clause("triangle", "yellow", 1))
    assert a.subset == "composition" and a.lead_in == "a photo of"
    assert parse("an image of THREE circles!").clauses == (Clause("circle", None, 3),)
    r = parse("a red circle left of a blue square")
    assert r.relation == Relation("left") and r.subset == "comprehensive"
    assert parse("a picture of one green triangle above an yellow circle").relation.kind == "above"
    assert parse("two circles").subset == "counting"


@pytest.mark.parametrize("subset", SUBSETS)
def test_prompt_spec_round_trip(subset):
    for p in sample_prompts(subset, 40, seed=3):
        spec = parse(p)
        assert parse(spec.to_prompt()) == spec and spec.subset == subset


@pytest.mark.parametrize("bad,match", [
    ("a purple circle", "unsupported word.*'purple'"),
    ("three red hexagons", "'hexagons'"),
    ("red circles", "must start with a count word"),
    ("three circles and two squares", "at most 4 objects"),
    ("two red circles left of a square", "single objects"),
    ("a photo of", "no object"),
    ("a red", "expected"),
])
def test_bad_prompts(bad, match):
    with pytest.raises(InputError, match=match):
        parse(bad)


def test_sample_prompts_is_seeded_and_varied():
    assert sample_prompts("composition", 20, seed=1) == sample_prompts("composition", 20, seed=1)
    assert sample_prompts("composition", 20, seed=1) != sample_prompts("composition", 20, seed=2)
    assert len({parse(p).clauses for p in sample_prompts("composition", 50)}) == 50


def test_render_respects_design():
    for i, p in enumerate(sample_prompts("composition", 30)):
        for size in (32, 64):
            scene = sample_scene(parse(p), random.Random(i), size)
            scale = size / 32
            boxes = [o.bbox for o in scene.objects]
            for x0, y0, x1, y1 in boxes:
                assert 6 * scale - 1 <= x1 - x0 <= 10 * scale + 1 and 0 <= x0 and x1 <= size
                assert x1 - x0 == y1 - y0 and 0 <= y0 and y1 <= size
            for a in range(len(boxes)):
                for b in range(a + 1, len(boxes)):
                    p1, p2 = boxes[a], boxes[b]
                    assert p1[2] + 1 <= p2[0] or p2[2] + 1 <= p1[0] or p1[3] + 1 <= p2[1] or p2[3] + 1 <= p1[1]
    img = np.asarray(render("a red square", seed=0))
    assert (img.reshape(-1, 3) == 0).all(axis=1).mean() > 0.8  # black background


PERTURB = {"clean": lambda im, i: im, "noise": lambda im, i: add_noise(im, seed=i), "blur": lambda im, i: blur(im),
           "jitter": lambda im, i: color_jitter(im, seed=i), "all": lambda im, i: perturb_all(im, seed=i)}


@pytest.mark.parametrize("perturbation", sorted(PERTURB))
@pytest.mark.parametrize("size", [32, 64])
def test_round_trip_and_near_misses(perturbation, size):
    positives = negatives = hits = rejections = 0
    kinds = set()
    for subset in SUBSETS:
        for i, p in enumerate(sample_prompts(subset, 15, seed=size)):
            spec = parse(p)
            scene = sample_scene(spec, random.Random(i), size)
            img = PERTURB[perturbation](draw_scene(scene), i)
            truth = [Obj(o.shape, o.color, o.center) for o in scene.objects]
            positives += 1
            hits += judge(img, spec).aligned
            for kind, misses in near_misses(spec).items():
                for miss in misses:
                    if check(miss, truth)[0]:
                        continue  # this "near miss" happens to be true of the scene
                    kinds.add(kind)
                    negatives += 1
                    rejections += not judge(img, miss).aligned
    assert kinds == {"count", "color", "shape", "relation"}
    assert hits >= positives - 1 and rejections >= negatives - 1, (hits, positives, rejections, negatives)


@pytest.mark.parametrize("size", [32, 48, 64, 100])
def test_oracle_on_independent_renderer(size):
    rng = random.Random(size)
    correct = total = 0
    for subset in ("counting", "composition"):
        for p in sample_prompts(subset, 25, seed=size):
            spec = parse(p)
            kinds = [(c.shape, c.color or rng.choice(["red", "green", "blue", "yellow"]))
                     for c in spec.clauses for _ in range(c.count)]
            img = draw_independent(place_independent(kinds, size, rng), size)
            total += 1
            correct += judge(img, spec).aligned
            wrong = near_misses(spec)["count"][0]
            total += 1
            correct += not judge(img, wrong).aligned
    assert correct == total


def test_specks_ignored_and_merged_blobs_not_split():
    img = np.asarray(render("a red circle", seed=2)).copy()
    img[0, 0] = img[31, 31] = (230, 30, 30)  # single-pixel specks
    assert judge(Image.fromarray(img), "a red circle").aligned
    merged = np.zeros((32, 32, 3), dtype=np.uint8)
    merged[10:18, 4:12] = merged[10:18, 12:20] = (30, 200, 30)  # two touching green squares
    v = judge(Image.fromarray(merged), "two green squares")
    assert not v.aligned and len(v.objects) == 1


def test_judge_rejects_bad_images():
    with pytest.raises(InputError, match="square image"):
        judge(Image.new("RGB", (40, 32)), "a red circle")
    with pytest.raises(InputError, match="at least 32"):
        judge(Image.new("RGB", (16, 16)), "a red circle")


def test_annotators_statistics():
    votes = simulate_votes([True] * 20000, flip=0.1, unsure=0.03, seed=0)
    assert votes.shape == (20000, 3)
    assert abs((votes == -1).mean() - 0.03) < 0.005 and abs((votes == 0).mean() - 0.1) < 0.01
    assert (simulate_votes([True] * 10, seed=1) == simulate_votes([True] * 10, seed=1)).all()


def test_tia2_schema_writer_read_back_and_evaluated(tmp_path, capsys):
    prompts = sample_prompts("counting", 4, seed=0)
    names, captions, images = [], [], []
    for p_idx, p in enumerate(prompts):
        for j in range(10):
            # Half the images follow the prompt, half a near miss, so every prompt has both classes.
            target = p if j % 2 else near_misses(parse(p))["count"][0]
            images.append(render(target, seed=j))
            names.append(f"image_{p_idx}_0_{j}.png")
            captions.append(p)
    votes = annotate(images, captions, flip=0.0, unsure=0.0)
    write_subset(tmp_path, "counting", names, captions, votes, {p: [] for p in prompts}, images)
    on_disk = json.loads((tmp_path / "human_annotations" / "human_labels_counting.json").read_text())
    assert on_disk["image_0_0_1.png"] == {"image": "image_0_0_1.png", "caption": prompts[0], "human_labels": [1, 1, 1]}
    s = load_subset("counting", benchmark=tmp_path)
    assert len(s.evaluated_prompts) == 4 and s.image_path("image_0_0_1.png").exists()
    scores = tmp_path / "s.csv"
    scores.write_text("subset,image,score\n" + "".join(f"counting,{n},{int(a)}\n" for n, a in zip(names, s.aligned)))
    assert main(["tia2", "eval", "--benchmark", str(tmp_path), "--scores", str(scores), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counting"]["score"]["auroc"] == 1.0


def test_world_cli(tmp_path, capsys):
    out = tmp_path / "scene.png"
    assert main(["world", "render", "--prompt", "two red circles", "--seed", "3", "--size", "64", "-o", str(out)]) == 0
    assert Image.open(out).size == (64, 64)
    assert main(["world", "judge", "--prompt", "two red circles", str(out), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["aligned"] is True and {"shape", "color", "bbox"} <= set(verdict["objects"][0])
    assert main(["world", "judge", "--prompt", "three red circles", str(out), str(out), "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [v["aligned"] for v in both] == [False, False] and "found 2" in both[0]["reasons"][0]
    assert main(["world", "prompts", "--subset", "comprehensive", "--n", "5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    assert main(["world", "render", "--prompt", "a purple hexagon", "-o", str(tmp_path / "x.png")]) == 2
    assert "unsupported word" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
