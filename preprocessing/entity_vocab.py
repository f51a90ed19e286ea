"""The multilingual entity vocabulary: count links, merge languages by QID, rank, write, load.

The algorithm is the reference implementation's (studio-ousia/luke `build_entity_vocab` +
`build_multilingual_entity_vocab`): an entity is a link target, counted once per link after
redirect resolution, kept only if it is an existing article (page titles themselves are not
counted); titles of one Wikidata item share one id and their counts are summed; titles
without a QID stay per language; an entity must be linked in at least `min_num_languages`
languages; entities are ranked by total count and `size` ids are kept, the three special
entities [PAD]=0, [UNK]=1, [MASK]=2 included.

Outputs: `entity_vocab.jsonl`, LUKE's multilingual form (special entities list one
(token, lang) pair per language, as the reference's files do):
    {"id": 7, "entities": [["London", "en"], ["ロンドン", "ja"]], "count": 1234, "qid": "Q84"}
and `entity_vocab.json`, the flat map transformers' MLukeTokenizer loads, as written by its
mLUKE conversion script: special tokens as plain keys, "lang:title" for the rest, and
"[MASK2]" appended with the next id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from . import contract
from .contract import MASK2, SPECIAL_ENTITIES
from .titles import Redirects

log = logging.getLogger(__name__)

_MAX_LOGGED = 5
# pages.jsonl lines start with {"id": .., "title": ".."}: pass 1 needs only the title.
_TITLE = re.compile(r'^\{"id":\s*-?\d+,\s*"title":\s*("(?:[^"\\]|\\.)*")')


def _page_titles(pages: Path) -> set[str]:
    titles = set()
    with open(pages, encoding="utf-8") as f:
        for line in f:
            match = _TITLE.match(line)
            try:
                titles.add(json.loads(match.group(1)) if match else json.loads(line)["title"])
            except (ValueError, KeyError, TypeError):
                pass  # pass 2 reads the same line, and counts and logs it
    return titles


def _malformed(stats: dict, path: Path, lineno: int, why) -> None:
    stats["malformed"] += 1
    if stats["malformed"] <= _MAX_LOGGED:
        log.warning("%s line %d: malformed page skipped (%s)", path, lineno, why)


def count_entities(lang_dir, progress: bool = False,
                   wikidata_disambiguation: set[str] | None = None) -> tuple[Counter, dict]:
    """Link counts of one language's extract output: {title: n} for existing articles.

    Two passes over pages.jsonl so that memory grows with the number of articles, not with
    the number of distinct link targets (red links included). `wikidata_disambiguation`: titles
    of Wikidata's disambiguation items, never entities (the extract stage left out the pages
    their wikitext marks); stats count those among the pages.
    """
    lang_dir = Path(lang_dir)
    pages = lang_dir / "pages.jsonl"
    stats = {"pages": 0, "links": 0, "links_to_articles": 0, "malformed": 0}
    for path in (pages, lang_dir / "redirects.tsv", lang_dir / "disambiguation.txt"):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: rerun the extract stage for this language")
    redirects = Redirects.load(lang_dir / "redirects.tsv")
    disambiguation = set((lang_dir / "disambiguation.txt").read_text(encoding="utf-8").splitlines())
    titles = _page_titles(pages)
    flagged = titles & wikidata_disambiguation if wikidata_disambiguation is not None else set()
    articles = titles - disambiguation - flagged
    if wikidata_disambiguation is not None:  # a count only where Wikidata gave the signal
        stats["disambiguation_wikidata"] = len(flagged)
    counts: Counter = Counter()
    with open(pages, encoding="utf-8") as f:
        for lineno, line in enumerate(tqdm(f, desc=f"entity counts {lang_dir.name}", unit=" pages",
                                           disable=not progress, mininterval=1), 1):
            try:
                page = json.loads(line)
                links = [link[2] for p in page["paragraphs"] for link in p["links"]]
            except (ValueError, KeyError, TypeError, IndexError) as e:
                _malformed(stats, pages, lineno, e)
                continue
            stats["pages"] += 1
            stats["links"] += len(links)
            for target in links:
                target = redirects.resolve(target)
                if target in articles:
                    counts[target] += 1
    stats["links_to_articles"] = sum(counts.values())
    stats["entities"] = len(counts)
    return counts, stats


def _most_linked(counts: Counter, n: int) -> Counter:
    """The n most-linked titles (ties by title, so the cut does not depend on the order pages were read)."""
    if len(counts) <= n:
        return counts
    return Counter(dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:max(0, n)]))


def _count_job(args):
    return count_entities(*args)


def build_entity_vocab(
    pages_root, languages, out_jsonl, out_json, interwiki_dir=None, size: int = 1_200_000,
    min_num_languages: int = 3, progress: bool = True, num_workers: int = 1, per_language_size: int = 1_000_000,
) -> dict:
    """Build the vocabulary from pages_root/<lang>/ (+ interwiki/); return its stats.

    As the reference, each language's entities are first cut to its `per_language_size` most-linked ones
    (the reference's per-language vocabulary files hold that many entries, its 3 special ones included),
    then merged across languages by QID."""
    from .interwiki import load_disambiguation, load_interwiki

    languages = list(languages)
    jobs = [(Path(pages_root) / lang, progress and num_workers <= 1,
             load_disambiguation(interwiki_dir, lang) if interwiki_dir is not None else None)
            for lang in languages]
    if num_workers > 1 and len(languages) > 1:
        # fork: nothing big is loaded yet, and callers need no __main__ guard.
        with get_context("fork").Pool(min(num_workers, len(languages))) as pool:
            results = list(tqdm(pool.imap(_count_job, jobs), total=len(jobs), unit=" languages",
                                desc="entity counts", disable=not progress))
    else:
        results = [_count_job(job) for job in jobs]
    keep = per_language_size - len(SPECIAL_ENTITIES)
    counts = {lang: _most_linked(c, keep) for lang, (c, _) in zip(languages, results)}
    stats: dict = {"languages": {lang: s for lang, (_, s) in zip(languages, results)},
                   "dropped_per_language_size": {lang: len(c) - len(counts[lang]) for lang, (c, _) in
                                                 zip(languages, results)}}

    qids = {}
    if interwiki_dir is not None:
        keep = {lang: counts[lang].keys() for lang in languages}
        qids = load_interwiki(interwiki_dir, languages, keep=keep)

    # One group per QID, or per (lang, title) without one: [total count, [(title, lang)], qid].
    groups: dict = {}
    for lang in languages:
        for title, n in counts[lang].items():
            qid = qids.get((lang, title))
            group = groups.setdefault(qid or (lang, title), [0, [], qid])
            group[0] += n
            group[1].append((title, lang))
    del counts, qids
    candidates = []
    for total, entities, qid in groups.values():
        if len({lang for _, lang in entities}) >= min_num_languages:
            entities.sort(key=lambda e: (e[1], e[0]))
            candidates.append((total, entities, qid))
    # Rank by count; ties by the first (lang, title), which is unique to its entity.
    candidates.sort(key=lambda c: (-c[0], c[1][0][1], c[1][0][0]))
    kept = candidates[: max(0, size - len(SPECIAL_ENTITIES))]
    stats.update(
        candidates=len(groups), with_qid=sum(1 for g in groups.values() if g[2]),
        dropped_min_num_languages=len(groups) - len(candidates),
        dropped_size=len(candidates) - len(kept),
        entities=len(SPECIAL_ENTITIES) + len(kept),
    )
    if not kept:
        log.warning("the entity vocabulary has no entities besides [PAD] [UNK] [MASK]%s",
                    "" if interwiki_dir is not None or min_num_languages <= 1 else
                    f": without a Wikidata dump every entity is in one language, and "
                    f"min_num_languages={min_num_languages} drops them all")
    _write(out_jsonl, out_json, kept, sorted(languages))
    return stats


def _write(out_jsonl, out_json, kept, languages) -> None:
    with open(out_jsonl, "w", encoding="utf-8") as f:
        for ent_id, token in enumerate(SPECIAL_ENTITIES):
            item = {"id": ent_id, "entities": [[token, lang] for lang in languages], "count": 0}
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
        for ent_id, (total, entities, qid) in enumerate(kept, len(SPECIAL_ENTITIES)):
            item = {"id": ent_id, "entities": [list(e) for e in entities], "count": total}
            if qid:
                item["qid"] = qid
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(hf_entity_vocab(out_jsonl), f, ensure_ascii=False)


def hf_entity_vocab(jsonl_path) -> dict[str, int]:
    """entity_vocab.jsonl → MLukeTokenizer's flat map ("lang:title" → id, specials bare, [MASK2]
    appended), as transformers' mLUKE conversion (`load_original_entity_vocab`) builds it."""
    mapping: dict[str, int] = {}
    with open(jsonl_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            entry = json.loads(line)
            for title, lang in entry["entities"]:
                mapping[title if title in SPECIAL_ENTITIES else f"{lang}:{title}"] = entry["id"]
    mapping.setdefault(MASK2, max(mapping.values()) + 1)
    return mapping


class EntityVocab:
    """The entity vocabulary of entity_vocab.jsonl: (lang, title) → id."""

    PAD_ID, UNK_ID, MASK_ID = contract.PAD_ID, contract.UNK_ID, contract.MASK_ID

    def __init__(self, ids: dict[str, dict[str, int]], size: int, sha256: str):
        self._ids = ids  # lang -> title -> id: no tuple per key for millions of titles
        self._size = size
        self.sha256 = sha256

    @classmethod
    def load(cls, path) -> "EntityVocab":
        path = Path(path)
        digest = hashlib.sha256()
        ids: dict[str, dict[str, int]] = {}
        size = 0
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                digest.update(raw)
                try:
                    item = json.loads(raw)
                    ent_id, entities = item["id"], item["entities"]
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path} line {lineno}: not an entity vocabulary entry ({e})") from None
                if ent_id != size:
                    raise ValueError(
                        f"{path} line {lineno}: id {ent_id}, expected {size} (ids must be dense)")
                if ent_id < len(SPECIAL_ENTITIES) and entities[0][0] != SPECIAL_ENTITIES[ent_id]:
                    raise ValueError(f"{path} line {lineno}: id {ent_id} must be {SPECIAL_ENTITIES[ent_id]}")
                for title, lang in entities:
                    ids.setdefault(lang, {})[title] = ent_id
                size += 1
        return cls(ids, size, digest.hexdigest())

    def lookup(self, lang: str, title: str) -> int | None:
        titles = self._ids.get(lang)
        return None if titles is None else titles.get(title)

    def __len__(self) -> int:
        return self._size

    @property
    def mask2_id(self) -> int:
        return self._size
