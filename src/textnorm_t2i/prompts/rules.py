"""Rule-based contrastive prompt sets: near misses that differ from the prompt in one checkable way.

- counting: "three books" -> counts n-2 .. n+2 except n (at least 1);
- composition: "X and Y" -> each object alone, count changes of either object, "an X-like Y" and
  "a Y-like X" hybrids;
- attributes: each colour word swapped for the other colours of :data:`COLORS`, and two objects'
  colours exchanged;
- spatial relations: left/right and above/below swapped, and the two objects exchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from textnorm_t2i.prompts.grammar import COUNT_OF, article, count_phrase, singularize_word

COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray")
_MEDIA = r"(?:photo|photograph|picture|image|painting|drawing|illustration|render|rendering|sketch|cartoon)"
_LEAD_IN = re.compile(rf"^((?:an?|the)\s+(?:[\w-]+\s+){{0,2}}?{_MEDIA}\s+of\s+)", re.IGNORECASE)
_COUNT = r"(?:an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_RELATIONS = {"to the left of": "to the right of", "to the right of": "to the left of",
              "left of": "right of", "right of": "left of", "above": "below", "below": "above",
              "on top of": "below", "under": "above"}
_REL_RE = re.compile(r"\s+(" + "|".join(sorted(map(re.escape, _RELATIONS), key=len, reverse=True)) + r")\s+")
_FUNCTION_WORDS = {"and", "or", "to", "of", "in", "on", "at", "with", "above", "below", "under", "left", "right"}
_OBJECT = re.compile(rf"^({_COUNT})\s+(.+)$", re.IGNORECASE)


@dataclass
class CountedObject:
    count: int
    noun: str          # as written (singular or plural)
    one_word: str | None  # "one" when the prompt said "one" instead of an article

    @property
    def singular(self) -> str:
        if self.count == 1:
            return self.noun
        words = self.noun.split(" ")
        words[-1] = singularize_word(words[-1])
        return " ".join(words)

    def with_count(self, n: int) -> str:
        return count_phrase(n, self.singular, self.one_word)


def _parse_object(text: str) -> CountedObject | None:
    m = _OBJECT.match(text.strip())
    if not m:
        return None
    word = m.group(1).lower()
    return CountedObject(COUNT_OF[word], m.group(2).strip(), "one" if word == "one" else None)


def _split_lead_in(prompt: str) -> tuple[str, str, str]:
    text = prompt.strip()
    trail = ""
    while text and text[-1] in ".!":
        trail = text[-1] + trail
        text = text[:-1]
    m = _LEAD_IN.match(text)
    return (m.group(1), text[m.end():], trail) if m else ("", text, trail)


def _nearby_counts(n: int) -> list[int]:
    return [c for c in (n - 2, n - 1, n + 1, n + 2) if c >= 1]


def counting_rule(prompt: str) -> list[str]:
    """Count changes for a single counted object ("a photo of three books").

    Example:
        >>> counting_rule("a realistic photo of an apple")
        ['a realistic photo of two apples', 'a realistic photo of three apples']
    """
    lead, body, trail = _split_lead_in(prompt)
    if " and " in body or _REL_RE.search(f" {body} "):
        return []
    obj = _parse_object(body)
    if obj is None:
        return []
    return [f"{lead}{obj.with_count(n)}{trail}" for n in _nearby_counts(obj.count)]


def composition_rule(prompt: str) -> list[str]:
    """Near misses of "X and Y": each alone, count changes of either, and hybrids.

    Example:
        >>> composition_rule("a photo of an apple and two cats")[:3]
        ['a photo of an apple', 'a photo of two cats', 'a photo of two apples and two cats']
    """
    lead, body, trail = _split_lead_in(prompt)
    parts = body.split(" and ")
    if len(parts) != 2:
        return []
    a, b = _parse_object(parts[0]), _parse_object(parts[1])
    if a is None or b is None:
        return []
    out = [f"{lead}{parts[0].strip()}{trail}", f"{lead}{parts[1].strip()}{trail}"]
    out += [f"{lead}{a.with_count(n)} and {parts[1].strip()}{trail}" for n in _nearby_counts(a.count)]
    out += [f"{lead}{parts[0].strip()} and {b.with_count(n)}{trail}" for n in _nearby_counts(b.count)]
    for x, y in ((a, b), (b, a)):
        hybrid = f"{x.singular}-like {y.singular}"
        out.append(f"{lead}{count_phrase(1, hybrid)}{trail}")
    return out


def attribute_rule(prompt: str, colors: Sequence[str] = COLORS) -> list[str]:
    """Colour swaps: each colour word replaced by every other colour; two colours exchanged.

    Example:
        >>> attribute_rule("a red circle and a blue square", colors=("red", "blue", "green"))
        ['a blue circle and a blue square', 'a green circle and a blue square', \
'a red circle and a red square', 'a red circle and a green square', 'a blue circle and a red square']
    """
    words = re.split(r"(\W+)", prompt)
    # A colour word is an attribute only when a noun follows it ("an orange" is a fruit).
    idx = [i for i, w in enumerate(words) if w.lower() in colors and i + 2 < len(words)
           and words[i + 1].strip() == "" and words[i + 2].lower() not in _FUNCTION_WORDS]

    def with_color(base: list[str], i: int, c: str) -> list[str]:
        new = base[:i] + [c] + base[i + 1:]
        if i >= 2 and new[i - 2].lower() in ("a", "an"):
            art = article(c)
            new[i - 2] = art.capitalize() if new[i - 2][0].isupper() else art
        return new

    out = []
    for i in idx:
        for c in colors:
            if c != words[i].lower():
                out.append("".join(with_color(words, i, c)))
    if len(idx) == 2 and words[idx[0]].lower() != words[idx[1]].lower():
        first, second = idx
        swapped = with_color(with_color(words, first, words[second].lower()), second, words[first].lower())
        out.append("".join(swapped))
    return out


def relation_rule(prompt: str) -> list[str]:
    """Spatial near misses of "A <relation> B": the opposite relation, and A and B exchanged.

    Example:
        >>> relation_rule("a red circle to the left of a blue square")
        ['a red circle to the right of a blue square', 'a blue square to the left of a red circle']
    """
    lead, body, trail = _split_lead_in(prompt)
    m = _REL_RE.search(body)
    if not m:
        return []
    a, rel, b = body[: m.start()], m.group(1), body[m.end():]
    return [f"{lead}{a} {_RELATIONS[rel]} {b}{trail}", f"{lead}{b} {rel} {a}{trail}"]


def rule_set(prompt: str, colors: Sequence[str] = COLORS) -> list[str]:
    """Every applicable rule's near misses, deduplicated, never the prompt itself.

    Example:
        >>> rule_set("a photo of three books")
        ['a photo of a book', 'a photo of two books', 'a photo of four books', 'a photo of five books']
    """
    out = counting_rule(prompt) + composition_rule(prompt) + attribute_rule(prompt, colors) + relation_rule(prompt)
    return [p for p in dict.fromkeys(out) if p.strip() and p.strip() != prompt.strip()]


def rule_sets(prompts: Iterable[str], colors: Sequence[str] = COLORS) -> dict[str, list[str]]:
    """``{prompt: rule_set(prompt)}`` for many prompts.

    Example:
        >>> rule_sets(["two dogs"])
        {'two dogs': ['a dog', 'three dogs', 'four dogs']}
    """
    return {p: rule_set(p, colors) for p in prompts}
