"""Contrastive prompt sets from a language model.

Two backends share one loop (:class:`LLMGenerator`): ask, parse the reply as a JSON list of strings,
validate, deduplicate, drop the original prompt and empty strings, retry (bounded) on malformed
replies and on timeouts/server errors, and cache good answers on disk keyed by prompt, model and
template.

- :class:`OpenAIChatGenerator`: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM,
  Ollama, ...). The API key is read from an environment variable and never logged.
- :class:`LocalLMGenerator`: a transformers causal LM loaded from a local folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from textnorm_t2i.errors import InputError
from textnorm_t2i.io import write_json_atomic
from textnorm_t2i.rewards.hub import load_pretrained

DEFAULT_TEMPLATE = (
    "You write contrastive prompts for testing whether an image matches its text. Given a prompt, write "
    "{n} prompts that each describe a visibly different image by changing exactly one detail (a count, a "
    "colour, an object, a spatial relation or an attribute) and keeping everything else identical. "
    "Reply with only a JSON list of strings.\nPrompt: {prompt}"
)


class LLMError(InputError):
    """The language model gave no usable reply within the retry budget."""


def parse_reply(reply: str, prompt: str) -> list[str]:
    """The contrastive prompts in an LLM reply: a JSON list of strings (code fences allowed).

    Strips whitespace, drops empty strings and copies of ``prompt`` (ignoring case and final
    punctuation), deduplicates; raises ``ValueError`` if nothing valid remains.

    Example:
        >>> parse_reply('```json\\n["two cats", "a cat", " ", "two cats", "A dog."]\\n```', "a dog")
        ['two cats', 'a cat']
    """
    m = re.search(r"\[.*\]", reply, flags=re.DOTALL)
    if not m:
        raise ValueError("no JSON list in the reply")
    try:
        items = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed JSON list: {e.msg}") from None
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError("the reply is not a list of strings")

    def key(s: str) -> str:
        return s.strip().rstrip(".!").strip().lower()

    out = list(dict.fromkeys(s.strip() for s in items if s.strip() and key(s) != key(prompt)))
    if not out:
        raise ValueError("the reply holds no usable contrastive prompt")
    return out


class LLMGenerator:
    """Shared ask-parse-retry-cache loop; subclasses implement :meth:`complete`.

    Example:
        >>> class Echo(LLMGenerator):
        ...     model = "echo"
        ...     def complete(self, message): return '["two dogs", "three dogs"]'
        >>> Echo(cache_dir=None)("a dog")
        ['two dogs', 'three dogs']
    """

    model: str = "llm"

    def __init__(self, template: str = DEFAULT_TEMPLATE, n: int = 8, max_retries: int = 3, backoff: float = 0.5,
                 cache_dir: str | os.PathLike | None = "~/.cache/textnorm/llm"):
        if "{prompt}" not in template:
            raise InputError("the LLM template must contain {prompt}")
        self.template, self.n, self.max_retries, self.backoff = template, n, max_retries, backoff
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.calls = 0  # requests actually sent (cache hits excluded)

    def complete(self, message: str) -> str:
        raise NotImplementedError

    def _cache_path(self, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([prompt, self.model, self.template, self.n]).encode()).hexdigest()
        return self.cache_dir / f"{key}.json"

    def __call__(self, prompt: str) -> list[str]:
        cache = self._cache_path(prompt)
        if cache is not None and cache.exists():
            return json.loads(cache.read_text())["contrastive"]
        message = self.template.replace("{n}", str(self.n)).replace("{prompt}", prompt)
        problems = []
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                self.calls += 1
                result = parse_reply(self.complete(message), prompt)
            except (ValueError, TimeoutError, urllib.error.URLError, ConnectionError) as e:
                problems.append(self._redacted(f"{type(e).__name__}: {e}"))
                continue
            if cache is not None:
                write_json_atomic(cache, {"prompt": prompt, "model": self.model, "contrastive": result})
            return result
        raise LLMError(f"{self.model}: no valid contrastive set for {prompt!r} after {len(problems)} attempt(s); "
                       f"last problem: {problems[-1]}")

    def _redacted(self, text: str) -> str:
        """``text`` with the API key (if any) cut out: error messages end up in logs."""
        env = getattr(self, "_api_key_env", None)
        key = (os.environ.get(env) or "").strip() if env else ""
        return text.replace(key, "***") if len(key) >= 4 else text

    def generate(self, prompts: list[str]) -> dict[str, list[str]]:
        """``{prompt: contrastive set}`` for many prompts, with a progress bar."""
        from tqdm.auto import tqdm

        return {p: self(p) for p in tqdm(prompts, desc=f"prompt sets ({self.model})", unit="prompt")}


class OpenAIChatGenerator(LLMGenerator):
    """An OpenAI-compatible chat-completions client (stdlib HTTP, no SDK needed).

    Example:
        >>> gen = OpenAIChatGenerator("http://localhost:8000/v1", "my-model", api_key_env="NO_SUCH_KEY")
        >>> gen.model
        'my-model'
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 temperature: float = 0.7, **kwargs: Any):
        super().__init__(**kwargs)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.temperature = temperature
        self._api_key_env = api_key_env  # the key itself is read per request and never stored or logged

    def __repr__(self) -> str:
        return f"OpenAIChatGenerator(url={self.url!r}, model={self.model!r}, key from ${self._api_key_env})"

    def complete(self, message: str) -> str:
        body = json.dumps({"model": self.model, "temperature": self.temperature,
                           "messages": [{"role": "user", "content": message}]}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self._api_key_env)
        if key:
            key = key.strip()  # a key read from a CRLF env file ends in '\r'
            if not key.isprintable() or " " in key:
                # Said without the key: a header error would quote it, and messages reach logs.
                raise LLMError(f"${self._api_key_env} holds spaces or control characters; it cannot be a key")
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404):
                hint = f"check the URL, model and ${self._api_key_env}"
                raise LLMError(f"{self.url}: HTTP {e.code} {e.reason} ({hint})") from None
            raise ConnectionError(f"HTTP {e.code} {e.reason}") from None
        except json.JSONDecodeError:
            raise ValueError("the server's response is not JSON") from None
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError("the server's response has no choices[0].message.content") from None


class LocalLMGenerator(LLMGenerator):
    """A local transformers causal LM (folder with safetensors weights), greedy decoding.

    Example:
        >>> gen = LocalLMGenerator("/models/qwen2.5-1.5b-instruct")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, max_new_tokens: int = 256, device: str = "cpu", **kwargs: Any):
        super().__init__(**kwargs)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = str(path)
        self.tokenizer = load_pretrained(AutoTokenizer, str(path), "llm")
        self.lm = load_pretrained(AutoModelForCausalLM, str(path), "llm").to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens

    def complete(self, message: str) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = message + "\n"
        enc = tok(text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.lm.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                   pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
