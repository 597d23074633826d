"""English helpers for prompt rules: number words, articles, singular/plural nouns."""

from __future__ import annotations

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]
COUNT_OF = {w: i for i, w in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}

_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "goose": "geese", "foot": "feet", "tooth": "teeth", "ox": "oxen", "bus": "buses",
              "cactus": "cacti", "die": "dice", "louse": "lice", "policeman": "policemen"}
_SINGULAR_OF = {v: k for k, v in _IRREGULAR.items()}
_UNCHANGED = {"deer", "sheep", "fish", "moose", "bison", "salmon", "trout", "aircraft", "species", "series",
              "shrimp", "swine", "elk", "cod"}
_F_TO_VES = {"knife": "knives", "wife": "wives", "life": "lives", "leaf": "leaves", "loaf": "loaves",
             "wolf": "wolves", "half": "halves", "shelf": "shelves", "calf": "calves", "thief": "thieves",
             "elf": "elves", "scarf": "scarves"}
_VES_TO_F = {v: k for k, v in _F_TO_VES.items()}
_O_ES = {"tomato", "potato", "hero", "echo", "mango", "volcano", "mosquito", "torpedo", "domino"}


def pluralize_word(word: str) -> str:
    """Plural of one English noun.

    Example:
        >>> [pluralize_word(w) for w in ["book", "deer", "cherry", "knife", "box", "tomato", "person"]]
        ['books', 'deer', 'cherries', 'knives', 'boxes', 'tomatoes', 'people']
    """
    low = word.lower()
    if low in _UNCHANGED:
        return word
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if low in _F_TO_VES:
        return _F_TO_VES[low]
    if low in _O_ES:
        return word + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return word[:-1] + "ies"
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def singularize_word(word: str) -> str:
    """Singular of one English plural noun (the inverse of :func:`pluralize_word`).

    Example:
        >>> [singularize_word(w) for w in ["books", "deer", "cherries", "knives", "boxes", "vases", "glasses"]]
        ['book', 'deer', 'cherry', 'knife', 'box', 'vase', 'glass']
    """
    low = word.lower()
    if low in _UNCHANGED:
        return word
    if low in _SINGULAR_OF:
        return _SINGULAR_OF[low]
    if low in _VES_TO_F:
        return _VES_TO_F[low]
    if low.endswith("oes") and low[:-2] in _O_ES:
        return word[:-2]
    if low.endswith("ies") and len(low) > 4:
        return word[:-3] + "y"
    if low.endswith(("sses", "xes", "zzes", "ches", "shes")):
        return word[:-2]
    if low.endswith("s") and not low.endswith("ss"):
        return word[:-1]
    return word


def article(word: str) -> str:
    """``a`` or ``an`` for the word that follows.

    Example:
        >>> article("apple"), article("umbrella"), article("unicorn"), article("teddy")
        ('an', 'an', 'a', 'a')
    """
    low = word.lower()
    if low.startswith(("uni", "use", "usu", "one", "eu", "ewe")):
        return "a"
    if low.startswith(("hour", "honest", "heir", "honor", "honour")):
        return "an"
    return "an" if low[:1] in set("aeiou") else "a"


def count_phrase(n: int, singular_noun: str, one_word: str | None = None) -> str:
    """``n`` things with the right number word and noun form (last word of a multi-word noun).

    ``one_word`` forces the word for 1 ("one"); by default an article is used.

    Example:
        >>> count_phrase(1, "apple"), count_phrase(3, "teddy bear"), count_phrase(2, "deer")
        ('an apple', 'three teddy bears', 'two deer')
    """
    if n == 1:
        return f"{one_word or article(singular_noun)} {singular_noun}"
    words = singular_noun.split(" ")
    words[-1] = pluralize_word(words[-1])
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {' '.join(words)}"
