"""Contrastive prompt sets: rules (against the shipped TIA2 counting sets), files, and the LLM client."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from textnorm_t2i.bench.tia2 import load_subset
from textnorm_t2i.errors import InputError
from textnorm_t2i.prompts.files import load_prompt_sets
from textnorm_t2i.prompts.grammar import pluralize_word, singularize_word
from textnorm_t2i.prompts.llm import LLMError, OpenAIChatGenerator, parse_reply
from textnorm_t2i.prompts.rules import composition_rule, relation_rule, rule_set


def test_rules_reproduce_shipped_counting_sets():
    s = load_subset("counting")
    assert len(s.prompt_sets) == 150
    for prompt, shipped in s.prompt_sets.items():
        assert set(rule_set(prompt)) == set(shipped), prompt


@pytest.mark.parametrize("word", ["book", "deer", "sheep", "cherry", "knife", "box", "bus", "person", "mouse",
                                  "glass", "peach", "tomato", "wolf", "fish", "child"])
def test_plural_round_trip(word):
    assert singularize_word(pluralize_word(word)) == word


def test_counting_with_multiword_and_irregular_nouns():
    assert set(rule_set("a photo of two teddy bears")) == {
        "a photo of a teddy bear", "a photo of three teddy bears", "a photo of four teddy bears"}
    assert rule_set("one sheep") == ["two sheep", "three sheep"]


def test_composition_and_relations():
    out = composition_rule("a photo of an airplane and an apple")
    assert "a photo of an airplane" in out and "a photo of an apple" in out
    assert "a photo of two airplanes and an apple" in out and "a photo of an airplane and two apples" in out
    assert "a photo of an airplane-like apple" in out and "a photo of an apple-like airplane" in out
    assert relation_rule("a cat above a dog") == ["a cat below a dog", "a dog above a cat"]
    assert "a blue circle to the left of a red square" in rule_set("a red circle to the left of a blue square")


def test_rule_sets_never_contain_the_prompt():
    for p in ["a red circle and a red square", "two circles", "a blue square below a blue circle"]:
        assert p not in rule_set(p) and all(rule_set(p))


def test_files(tmp_path):
    assert "a realistic photo of three books" in load_prompt_sets("tia2")
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"a cat": ["a dog"]}))
    assert load_prompt_sets(good) == {"a cat": ["a dog"]}
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"a cat": "a dog"}))
    with pytest.raises(InputError, match="expected a list of strings"):
        load_prompt_sets(bad)


def test_parse_reply_validation():
    assert parse_reply('Sure! ["two cats", "two cats", "", "A cat."]', "a cat") == ["two cats"]
    for bad in ["no list here", '["a cat"]', "[1, 2]", '["unterminated'] :
        with pytest.raises(ValueError):
            parse_reply(bad, "a cat")


class FakeLLM(BaseHTTPRequestHandler):
    """Replies by the prompt: 'good' -> valid list; 'malformed' -> junk twice, then valid; 'slow' -> sleeps."""

    counts: dict = {}
    seen_auth: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        message = body["messages"][0]["content"]
        FakeLLM.seen_auth.append(self.headers.get("Authorization"))
        key = message.rsplit("Prompt: ", 1)[1]
        FakeLLM.counts[key] = FakeLLM.counts.get(key, 0) + 1
        if key.startswith("slow"):
            time.sleep(2.5)
        if key.startswith("malformed") and FakeLLM.counts[key] <= 2:
            content = "I think [two cats, three cats"
        elif key.startswith("always-bad"):
            content = "[]"
        else:
            content = json.dumps([f"{key} variant 1", f"{key} variant 2", key])
        data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    FakeLLM.counts, FakeLLM.seen_auth = {}, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_llm_client_good_malformed_slow_and_cache(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-123")
    # A timeout far from both the fast replies and the slow one's 2.5 s, so a loaded machine (parallel test workers)
    # does not turn a fast reply into a timeout.
    gen = OpenAIChatGenerator(server, "fake", api_key_env="FAKE_KEY", timeout=1.0, backoff=0.01,
                              max_retries=3, cache_dir=tmp_path / "cache")
    assert gen("good one") == ["good one variant 1", "good one variant 2"]
    assert gen("malformed one") == ["malformed one variant 1", "malformed one variant 2"]
    assert FakeLLM.counts["malformed one"] == 3
    with pytest.raises(LLMError, match="after 4 attempt"):
        gen("slow one")  # every attempt times out
    with pytest.raises(LLMError, match="no usable"):
        gen("always-bad one")
    calls = gen.calls
    assert gen("good one") == ["good one variant 1", "good one variant 2"]  # from the disk cache
    assert gen.calls == calls and FakeLLM.counts["good one"] == 1
    assert FakeLLM.seen_auth[0] == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(gen) and "sk-secret" not in caplog.text
    other = OpenAIChatGenerator(server, "fake", template="Different. Prompt: {prompt}", cache_dir=tmp_path / "cache")
    other("good one")
    assert FakeLLM.counts["good one"] == 2  # the cache is keyed by template too
