"""`textnorm tia2 ...` end to end: JSON schema, agreement with an independent evaluator, bad input."""

import json

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from textnorm_t2i.bench.metrics import METRICS
from textnorm_t2i.bench.tia2 import load_benchmark
from textnorm_t2i.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def bench():
    return load_benchmark()


def independent_eval(subset, scores):
    """A plain per-prompt loop over scikit-learn/scipy, written from the conventions in the README."""
    per = {m: [] for m in METRICS}
    for prompt in subset.prompts:
        imgs = [(img, v) for img, cap, v in zip(subset.images, subset.captions, subset.votes) if cap == prompt]
        y = np.array([sum(x == 1 for x in v) >= 2 for _, v in imgs])
        if y.all() or not y.any():
            continue
        h = np.array([sum(x == 1 for x in v) / len(v) for _, v in imgs])
        s = np.array([scores[img] for img, _ in imgs])
        per["auroc"].append(roc_auc_score(y, s))
        per["auprc"].append(average_precision_score(y, s))
        order = sorted(range(len(s)), key=lambda i: (-s[i], imgs[i][0]))
        for key, k in (("ap5", 5), ("ap10", 10), ("ap25", 25)):
            hits, precs = 0, []
            for r, i in enumerate(order[:k], 1):
                if y[i]:
                    hits += 1
                    precs.append(hits / r)
            per[key].append(np.mean(precs) if precs else 0.0)
        rho, tau = spearmanr(s, h).statistic, kendalltau(s, h).statistic
        per["spearman"].append(0.0 if np.isnan(rho) else rho)
        per["kendall"].append(0.0 if np.isnan(tau) else tau)
    return {m: float(np.mean(v)) for m, v in per.items()}, len(per["auroc"])


def test_info_json(capsys):
    code, out, _ = run(capsys, "tia2", "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["counting"]["evaluated_prompts"] == 146


def test_table_published_json_matches_shipped_means(capsys, bench):
    code, out, _ = run(capsys, "tia2", "table", "--published", "--json")
    table = json.loads(out)
    assert code == 0 and set(table) == {"counting", "composition", "comprehensive"}
    for name, s in bench.items():
        for model, row in table[name].items():
            vals = [e[model] for e in s.published.values()]
            assert row["n_prompts"] == len(vals)
            for m in METRICS:
                assert row[m] == pytest.approx(np.mean([v[m] for v in vals]), abs=1e-15)
                assert len(row["ci"][m]) == 2
    assert {"clip", "blip2", "imagereward", "pickscore", "textnorm_ur"} <= set(table["counting"])


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv"])
def test_table_formats(capsys, fmt, tmp_path):
    out_file = tmp_path / f"t.{fmt}"
    code, out, _ = run(capsys, "tia2", "table", "--published", "--format", fmt, "-o", str(out_file))
    assert code == 0 and "pickscore" in out and out_file.read_text() == out


def write_random_scores(path, bench, models=("a", "b"), fmt="jsonl", levels=7, seed=0):
    rng = np.random.default_rng(seed)
    truth = {}
    rows = []
    for model in models:
        for name, s in bench.items():
            sc = {img: float(v) for img, v in zip(s.images, rng.integers(0, levels, len(s.images)) / levels)}
            truth[(name, model)] = sc
            rows += [(name, img, v, model) for img, v in sc.items()]
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"subset": a, "image": b, "score": c, "model": d}) + "\n"
                                for a, b, c, d in rows))
    else:
        path.write_text("model,subset,image,score\n" + "".join(f"{d},{a},{b},{c!r}\n" for a, b, c, d in rows))
    return truth


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_eval_matches_independent_implementation(capsys, bench, tmp_path, fmt):
    f = tmp_path / f"scores.{fmt}"
    truth = write_random_scores(f, bench, fmt=fmt)
    code, out, err = run(capsys, "tia2", "eval", "--scores", str(f), "--json")
    assert code == 0, err
    res = json.loads(out)
    for (name, model), sc in truth.items():
        expected, n = independent_eval(bench[name], sc)
        row = res[name][model]
        assert row["n_prompts"] == n
        for m in METRICS:
            assert row[m] == pytest.approx(expected[m], abs=1e-12), (name, model, m)


def test_eval_without_model_column_is_named_score(capsys, bench, tmp_path):
    s = bench["comprehensive"]
    f = tmp_path / "s.csv"
    f.write_text("subset,image,score\n" + "".join(f"comprehensive,{i},{k % 5}\n" for k, i in enumerate(s.images)))
    code, out, _ = run(capsys, "tia2", "eval", "--scores", str(f), "--json")
    assert code == 0 and list(json.loads(out)) == ["comprehensive"]
    assert list(json.loads(out)["comprehensive"]) == ["score"]


ROW = '{"subset": "counting", "image": "image_0_0_0.jpg", "score": 1}\n'
BAD = {
    "malformed.jsonl": (ROW + "{oops\n", ":2: malformed JSON"),
    "unknown_subset.jsonl": ('{"subset": "nope", "image": "image_0_0_0.jpg", "score": 1}\n', ":1: unknown subset"),
    "unknown_image.csv": ("subset,image,score\ncounting,image_0_0_0.jpg,1\ncounting,x.jpg,1\n", ":3: unknown image"),
    "duplicate.csv": ("subset,image,score\ncounting,image_0_0_0.jpg,1\ncounting,image_0_0_0.jpg,2\n", ":3: duplicate"),
    "missing_col.csv": ("subset,image\ncounting,image_0_0_0.jpg\n", ":1: missing column(s) score"),
    "missing_key.jsonl": ('{"subset": "counting", "image": "image_0_0_0.jpg"}\n', ":1: missing key(s) score"),
    "text.csv": ("subset,image,score\ncounting,image_0_0_0.jpg,abc\n", ":2: score is not a number"),
    "nan.csv": ("subset,image,score\ncounting,image_0_0_0.jpg,nan\n", ":2: score must be finite"),
    "inf.jsonl": (ROW.replace("1}", "Infinity}"), ":1: score must be finite"),
    "empty.csv": ("", "file is empty"),
    "short_row.csv": ("subset,image,score\ncounting,image_0_0_0.jpg\n", ":2: expected 3 fields"),
    "incomplete.csv": ("subset,image,score\ncounting,image_0_0_0.jpg,1\n", "have no score"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_one_line_error_no_output(capsys, tmp_path, name):
    content, expected = BAD[name]
    f = tmp_path / name
    f.write_text(content)
    out_file = tmp_path / "out.json"
    code, out, err = run(capsys, "tia2", "eval", "--scores", str(f), "-o", str(out_file), "--json")
    assert code == 2
    assert out == "" and not out_file.exists()
    assert err.count("\n") == 1 and err.startswith("textnorm: error: ") and expected in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [f]


def test_allow_missing_reports_dropped(capsys, bench, tmp_path):
    s = bench["counting"]
    f = tmp_path / "s.csv"
    f.write_text("subset,image,score\n" + "".join(f"counting,{i},{k % 3}\n" for k, i in enumerate(s.images[:-10])))
    code, out, err = run(capsys, "tia2", "eval", "--scores", str(f), "--allow-missing", "--json")
    assert code == 0 and "dropped 10 image(s)" in err
    assert json.loads(out)["counting"]["score"]["n_prompts"] == 146


def test_score_shipped_shapes_needs_no_images_flag(tmp_path, capsys):
    """TIA2-Shapes ships its images: `tia2 score --benchmark shapes` finds them itself."""
    out = tmp_path / "s.jsonl"
    assert main(["tia2", "score", "--benchmark", "shapes", "--subset", "counting", "--reward", "shapes-clip-a",
                 "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2000 and {r["subset"] for r in rows} == {"counting"}
