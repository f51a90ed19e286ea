"""Page titles the way MediaWiki sees them, and redirect resolution.

A link target and a page title name the same page only after the normalization MediaWiki
applies (Title::newFromText): entities and percent-escapes decoded, NFC, underscores and
runs of whitespace → one space, direction marks dropped, `#section` cut, first letter
upper-cased (every Wikipedia has $wgCapitalLinks on; Turkish maps i → İ).
"""

from __future__ import annotations

import html
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

_SPACES = re.compile(r"[\s_\u00a0\u1680\u180e\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
_DIRECTION_MARKS = re.compile("[\u200e\u200f\u202a-\u202e]")
_TURKIC = {"tr", "az", "crh", "kaa", "kk", "tt"}
# Character references only with their ";", as MediaWiki's Sanitizer decodes them: a bare
# html.unescape also decodes legacy names without one ("Rock&reggae" → "Rock®gae").
_CHAR_REF = re.compile(r"&(?:#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")


# A title that is already normalized (most Wikidata sitelinks and link targets): no character
# any step below would change, single spaces between words, not starting with ":".
_KEPT = r"[^\s_&%#\u180e\u200e\u200f\u202a-\u202e]"
_PLAIN = re.compile(rf"(?!:){_KEPT}+(?: {_KEPT}+)*")


def normalize_title(title: str, lang: str | None = None) -> str:
    """Normalize a title or link target; returns "" when nothing is left (e.g. "#History")."""
    if _PLAIN.fullmatch(title) and unicodedata.is_normalized("NFC", title):
        first = title[0]  # the fast path: only the first letter can change
        upper = first.upper()
        if upper == first or len(upper) != 1:  # (Turkic "i" → "İ" is a change: not here)
            return title
    if "&" in title:
        title = _CHAR_REF.sub(lambda m: html.unescape(m.group()), title)
    if "%" in title:
        title = unquote(title)
    title = title.split("#", 1)[0]
    title = _DIRECTION_MARKS.sub("", title)
    title = _SPACES.sub(" ", title).strip()
    title = title.lstrip(":").strip()
    if not title:
        return ""
    title = unicodedata.normalize("NFC", title)
    first = title[0]
    if lang in _TURKIC and first == "i":
        upper = "İ"
    else:
        upper = first.upper()
        # MediaWiki keeps characters whose upper case is longer (e.g. "ß" stays "ß").
        if len(upper) != 1:
            upper = first
    return upper + title[1:]


class Redirects:
    """Redirect map of one wiki; `resolve` follows chains and stops on cycles."""

    MAX_HOPS = 10

    def __init__(self, mapping: dict[str, str] | None = None):
        self.mapping = mapping or {}

    @classmethod
    def load(cls, path: str | Path) -> "Redirects":
        mapping = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                source, sep, target = line.rstrip("\n").partition("\t")
                if sep and source and target:
                    mapping[source] = target
        return cls(mapping)

    def __len__(self) -> int:
        return len(self.mapping)

    def resolve(self, title: str) -> str:
        seen = {title}
        for _ in range(self.MAX_HOPS):
            target = self.mapping.get(title)
            if target is None or target in seen:
                return title
            seen.add(target)
            title = target
        return title
