"""Text statistics for the example jobs: sentences, chunks, keywords and an extractive summary.

Pure, deterministic functions over strings; the job handlers in ``examples.docs`` call them chunk
by chunk and report progress in between.

>>> sentences = split_sentences("Pears ripen late. Plums ripen early! Apples keep well.")
>>> chunk_text(sentences, 40)
['Pears ripen late. Plums ripen early!', 'Apples keep well.']
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from typing_extensions import TypedDict  # pydantic validates checkpoints with it on Python 3.11

WORDS_PER_MINUTE = 238
"""Average silent reading speed of adults for non-fiction (Brysbaert, 2019)."""

TERMS_PER_CHUNK = 25
"""How many of a chunk's most frequent terms it keeps: bounds the size of a checkpoint."""

MIN_SUMMARY_WORDS = 6
"""Shorter sentences (headings, fragments) are picked for a summary only if nothing else is left."""

_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")  # inner ' (or typographic ') and -
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)\]])\s+|\n\s*\n")

_STOPWORD_LIST = """
    a about above after again against all almost also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each either
    every few for from further had has have having he her here hers herself him himself his how
    however i if in into is it its itself just least less let like made make many may me might
    more most much must my myself near neither no nor not now of off often on once one only or
    other our ours ourselves out over own per quite rather same several she should since so some
    still such than that the their theirs them themselves then there these they this those though
    through thus to too under until up upon us very was we well were what when where whether which
    while who whom whose why will with within without would yet you your yours yourself
"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())


class ChunkStats(TypedDict):
    """What one chunk contributes to the document's statistics (JSON, so it can be checkpointed)."""

    words: int
    terms: dict[str, int]


def split_sentences(text: str) -> list[str]:
    """The text's sentences, whitespace collapsed; blank lines also end a sentence (headings)."""
    parts = (" ".join(part.split()) for part in _SENTENCE_BREAK.split(text))
    return [part for part in parts if part]


def words(text: str) -> list[str]:
    """Every word of the text, as written (letters and digits, inner apostrophes and hyphens)."""
    return _WORD.findall(text)


def terms(text: str) -> list[str]:
    """The words that carry meaning: lower-cased, possessive dropped, no stopwords or numbers."""
    found = []
    for word in words(text):
        term = word.lower().replace("\u2019", "'").removesuffix("'s")
        if len(term) >= 3 and term not in STOPWORDS and not term.isdigit():
            found.append(term)
    return found


def chunk_text(sentences: Sequence[str], size: int) -> list[str]:
    """Whole sentences packed greedily into chunks of at most ``size`` characters.

    A sentence longer than ``size`` is cut at spaces (a word longer than ``size`` is cut too), so
    every chunk fits and the chunks joined by spaces give back the sentences.
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for sentence in sentences:
        for piece in _pieces(sentence, size):
            if current and length + 1 + len(piece) > size:
                chunks.append(" ".join(current))
                current, length = [], 0
            length += len(piece) + (1 if current else 0)
            current.append(piece)
    if current:
        chunks.append(" ".join(current))
    return chunks


def _pieces(sentence: str, size: int) -> Iterator[str]:
    if len(sentence) <= size:
        yield sentence
        return
    line = ""
    for word in sentence.split(" "):
        while len(word) > size:
            if line:
                yield line
                line = ""
            yield word[:size]
            word = word[size:]
        if line and len(line) + 1 + len(word) > size:
            yield line
            line = ""
        line = f"{line} {word}" if line else word
    if line:
        yield line


def analyze_chunk(chunk: str) -> ChunkStats:
    """The chunk's word count and its ``TERMS_PER_CHUNK`` most frequent terms (ties: a-z)."""
    counts = Counter(terms(chunk))
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TERMS_PER_CHUNK]
    return {"words": len(words(chunk)), "terms": dict(top)}


def keyword_weights(stats: Sequence[ChunkStats]) -> dict[str, float]:
    """TF-IDF over chunks: a term's total count times its smoothed inverse chunk frequency.

    Terms that run through every chunk weigh less than terms that dominate a few of them, so the
    topics of a section stand out against the words the whole document repeats.
    """
    total: Counter[str] = Counter()
    spread: Counter[str] = Counter()
    for chunk in stats:
        total.update(chunk["terms"])
        spread.update(chunk["terms"].keys())
    n = len(stats)
    return {
        term: count * (math.log((1 + n) / (1 + spread[term])) + 1) for term, count in total.items()
    }


def top_keywords(weights: Mapping[str, float], count: int) -> list[str]:
    """The ``count`` heaviest terms, heaviest first (ties: a-z)."""
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    return [term for term, _ in ranked[:count]]


def summarize(sentences: Sequence[str], weights: Mapping[str, float], count: int) -> list[str]:
    """An extractive summary: the ``count`` best sentences, in the order the text has them.

    A sentence scores the weights of its distinct terms, divided by the square root of its length
    so long sentences do not win by size alone. Ties go to the earlier sentence.
    """
    long_enough = [i for i, s in enumerate(sentences) if len(words(s)) >= MIN_SUMMARY_WORDS]
    candidates = long_enough or list(range(len(sentences)))
    scored = [(_sentence_score(sentences[i], weights), i) for i in candidates]
    best = sorted(scored, key=lambda item: (-item[0], item[1]))[:count]
    return [sentences[i] for i in sorted(i for _, i in best)]


def _sentence_score(sentence: str, weights: Mapping[str, float]) -> float:
    found = terms(sentence)
    if not found:
        return 0.0
    return sum(weights.get(term, 0.0) for term in set(found)) / math.sqrt(len(found))


def reading_minutes(word_count: int) -> float:
    """Minutes an adult takes to read ``word_count`` words, to one decimal."""
    return round(word_count / WORDS_PER_MINUTE, 1)
