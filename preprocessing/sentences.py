"""Locale-aware sentence splitting with ICU's sentence break iterator, as mLUKE's reference does.

Spans are character (code point) offsets into the paragraph, so link spans can be assigned to
sentences; a sentence boundary that falls inside a link is dropped (the two sentences merge),
so every link lies inside exactly one sentence. ICU has no sentence rules for Thai (which marks
sentences with spaces only), so Thai text is also split at its spaces — otherwise a whole
paragraph would be one "sentence", too long to pack — into pieces of at least MIN_CLAUSE_CHARS.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Sequence

from icu4py.breakers import SentenceBreaker
from icu4py.locale import Locale

# ICU's abbreviation suppressions ("Mr.", "e.g.") exist for these locales; the reference enables
# them exactly for this set.
_SUPPRESS_ABBREVIATIONS = {"en", "de", "es", "it", "pt"}
# Scripts whose sentences are delimited by a space and which ICU does not split: Thai, Lao.
_SPACE_DELIMITED = {"th", "lo"}
_SPACES = re.compile(r"\s+")
MIN_CLAUSE_CHARS = 64  # ~15-20 XLM-R tokens of Thai
# Wikipedia codes that are not the language's ICU (BCP 47) code; the rest are used as they are.
_ICU_CODES = {"simple": "en", "zh-yue": "yue", "zh-classical": "lzh", "zh-min-nan": "nan",
              "be-tarask": "be", "be-x-old": "be", "bat-smg": "sgs", "fiu-vro": "vro",
              "roa-rup": "rup", "nds-nl": "nds", "map-bms": "jv", "cbk-zam": "cbk"}


def icu_locale_id(lang: str) -> str:
    """The ICU locale of a Wikipedia code. ICU falls back to its root locale (the default
    Unicode sentence rules) for a language it has no data for, which is right for most."""
    code = _ICU_CODES.get(lang, lang)
    return f"{code}@ss=standard" if code in _SUPPRESS_ABBREVIATIONS else code


@functools.lru_cache(maxsize=None)
def _locale(lang: str) -> Locale:
    # icu4py's Locale cannot be pickled, so each process builds its own from the language code.
    locale = Locale(icu_locale_id(lang))
    return Locale("") if locale.bogus else locale  # "": the root locale


def _boundaries(text: str, lang: str) -> list[int]:
    """End offsets of the ICU sentences of `text`, in code points.

    icu4py's `segments()` counts UTF-16 code units (wrong after any non-BMP character such as
    an emoji), so offsets come from the lengths of the yielded sentence strings instead.
    """
    ends = []
    pos = 0
    for sentence in SentenceBreaker(text, _locale(lang)):
        pos += len(sentence)
        ends.append(pos)
    if pos != len(text):  # would mean spans no longer index the paragraph: fail loudly
        raise ValueError(f"ICU sentence segments cover {pos} of {len(text)} characters")
    return ends


def sentence_spans_many(
    texts: Sequence[str], lang: str, links: Sequence[Iterable[Sequence[int]]] | None = None
) -> list[list[tuple[int, int]]]:
    """`sentence_spans` of several paragraphs at once (one ICU call: creating a break iterator
    costs far more than running it). A line feed always ends an ICU sentence (rule SB4) and no
    rule looks across one, so paragraphs joined by "\n" split exactly as they do one by one."""
    ends = _boundaries("\n".join(texts), lang)
    result = []
    offset = 0
    i = 0
    for k, text in enumerate(texts):
        end = offset + len(text)
        boundaries = []
        while i < len(ends) and ends[i] <= end:
            if ends[i] < end:
                boundaries.append(ends[i] - offset)
            i += 1
        if i < len(ends) and ends[i] == end + 1:  # the break after the joining "\n"
            i += 1
        if lang in _SPACE_DELIMITED:
            boundaries = _clause_boundaries(text, boundaries)
        result.append(_spans(text, boundaries, links[k] if links is not None else ()))
        offset = end + 1
    return result


def _clause_boundaries(text: str, icu: list[int]) -> list[int]:
    """ICU's boundaries plus the spaces of space-delimited text, except spaces that would leave a
    piece under MIN_CLAUSE_CHARS: a space also separates short clauses and list items, and
    pieces of a few tokens would be dropped as too-short sentences (a quarter of the Thai links
    of the sample were lost so)."""
    icu_set = set(icu)
    spaces = {m.end() for m in _SPACES.finditer(text) if 0 < m.end() < len(text)}
    kept, last = [], 0
    for b in sorted(icu_set | spaces):
        if b in icu_set or (b - last >= MIN_CLAUSE_CHARS and len(text) - b >= MIN_CLAUSE_CHARS):
            kept.append(b)
            last = b
    return kept


def sentence_spans(
    text: str, lang: str, links: Iterable[Sequence[int]] = ()
) -> list[tuple[int, int]]:
    """Split `text` into sentences; returns [(start, end)] with surrounding whitespace excluded.

    `links` are (start, end, ...) character spans; no returned boundary falls strictly inside one.
    """
    return sentence_spans_many([text], lang, [links])[0]


def _spans(text, boundaries, links):
    if boundaries:
        for link in links:
            start, end = link[0], link[1]
            lo = bisect.bisect_right(boundaries, start)
            hi = bisect.bisect_left(boundaries, end)
            if lo < hi:
                del boundaries[lo:hi]
    spans = []
    for start, end in zip([0, *boundaries], [*boundaries, len(text)]):
        sentence = text[start:end]
        stripped = sentence.strip()
        if stripped:
            start += len(sentence) - len(sentence.lstrip())
            spans.append((start, start + len(stripped)))
    return spans
