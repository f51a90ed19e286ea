"""mLAMA-style cloze evaluation of an exported mLUKE (Ri et al. 2022, section on mLAMA).

Word prompts follow mLAMA as mLUKE's own evaluation does (studio-ousia/luke examples/mlama): the
template is cut into segments around [X] and [Y], each segment is tokenized on its own, [X] is
the subject's label and [Y] becomes k `<mask>` tokens. Every candidate object (the distinct
labels of the relation's objects in that language) with k tokens is scored on the k-mask input by
the mean log-probability of its tokens, one forward pass per distinct k, and the best-scoring
candidate over all k is the prediction.

Entity prompts give the subject as an entity (its id on the [X] span) and put the `[MASK]` entity
on a single `<mask>` word at [Y]; the prediction is the candidate object entity with the highest
entity logit. Both kinds use only transformers: `LukeForMaskedLM` and `MLukeTokenizer`.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import torch

from .facts import SLOT_RE, Entity, Facts

WORD, ENTITY = "word", "entity"


@dataclass
class _Prompt:
    """One fact asked in one language: template pieces in order, with the slots filled by labels."""
    relation: str
    lang: str
    pieces: list[str]  # [before, first slot, between, second slot, after]
    x_index: int  # 1 or 3: where [X] and [Y] are in `pieces`
    y_index: int
    gold: str  # the object's label
    subject: Entity
    object: Entity


def _split_template(template: str) -> tuple[list[str], str]:
    """'[X] is the capital of [Y] .' -> (['', '[X]', ' is the capital of ', '[Y]', ' .'], 'XY')."""
    first, second = SLOT_RE.finditer(template)
    pieces = [template[:first.start()], first.group(), template[first.end():second.start()],
              second.group(), template[second.end():]]
    return pieces, first.group()[1] + second.group()[1]


def _word_start(pieces: list[str], i: int) -> bool:
    """Whether piece i starts a new word, i.e. is tokenized with sentencepiece's '▁' marker
    (mLUKE's tokenize_segments rule: after whitespace, after an empty piece, or at the start)."""
    return i == 0 or pieces[i - 1] == "" or pieces[i - 1][-1:].isspace() or pieces[i][:1].isspace()


class _Tokens:
    """Token ids of prompt pieces, tokenized piece by piece as mLUKE's mLAMA evaluation does."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[tuple[str, bool], list[int]] = {}

    def __call__(self, text: str, word_start: bool) -> list[int]:
        key = (text, word_start)
        if key not in self.cache:
            text = re.sub(r"\s+", " ", text).strip()
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            # A piece glued to the previous text (e.g. "是[Y]" in Chinese) has no word-start
            # marker: drop the lone '▁' that the tokenizer's prepend-space step added.
            if not word_start and ids and self.tokenizer.convert_ids_to_tokens(ids[0]) == "▁":
                ids = ids[1:]
            self.cache[key] = ids
        return self.cache[key]


def _prompts(facts: Facts, languages: list[str], skipped: dict) -> list[_Prompt]:
    prompts = []
    for fact in facts.facts:
        subj, obj = facts.entities[fact.subject], facts.entities[fact.object]
        for lang in languages:
            if fact.languages is not None and lang not in fact.languages:
                continue
            template = facts.templates.get((fact.relation, lang))
            if template is None:
                skipped[lang]["no_template"] += 1
                continue
            if lang not in subj.labels or lang not in obj.labels:
                skipped[lang]["no_label"] += 1
                continue
            pieces, order = _split_template(template)
            x, y = (1, 3) if order == "XY" else (3, 1)
            pieces[x], pieces[y] = subj.labels[lang], obj.labels[lang]
            prompts.append(_Prompt(fact.relation, lang, pieces, x, y, obj.labels[lang], subj, obj))
    return prompts


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, :len(row)] = torch.tensor(row)
        mask[b, :len(row)] = 1
    return ids, mask


def _word_predictions(model, tokenizer, prompts: list[_Prompt], batch_size: int, device) -> list[str]:
    """Predicted object label per prompt (mLAMA candidate ranking over the relation's objects)."""
    tokens = _Tokens(tokenizer)
    candidates: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in prompts:
        candidates[p.relation, p.lang].add(p.gold)
    # (relation, lang, k) -> (labels, LongTensor [n, k]): candidates tokenized in the [Y] context
    groups: dict[tuple[str, str], dict[int, tuple[list[str], torch.Tensor]]] = {}
    for p in prompts:
        key = (p.relation, p.lang)
        if key in groups:
            continue
        by_k: dict[int, list[tuple[str, list[int]]]] = defaultdict(list)
        for label in sorted(candidates[key]):
            ids = tokens(label, _word_start(p.pieces, p.y_index))
            if ids:
                by_k[len(ids)].append((label, ids))
        groups[key] = {k: ([lab for lab, _ in c], torch.tensor([ids for _, ids in c])) for k, c in by_k.items()}

    jobs = []  # (prompt index, k, input ids, first mask position)
    for n, p in enumerate(prompts):
        for k in sorted(groups[p.relation, p.lang]):
            ids, start = [tokenizer.cls_token_id], None
            for i, piece in enumerate(p.pieces):
                if i == p.y_index:
                    start = len(ids)
                    ids += [tokenizer.mask_token_id] * k
                else:
                    ids += tokens(piece, _word_start(p.pieces, i))
            jobs.append((n, k, ids + [tokenizer.sep_token_id], start))

    best: list[tuple[float, str]] = [(-math.inf, "")] * len(prompts)
    for batch in _batches(jobs, batch_size):
        ids, mask = _pad([j[2] for j in batch], tokenizer.pad_token_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for b, (n, k, _, start) in enumerate(batch):
            p = prompts[n]
            labels, cand_ids = groups[p.relation, p.lang][k]
            log_probs = torch.log_softmax(logits[b, start:start + k].float(), dim=-1).cpu()
            scores = log_probs[torch.arange(k), cand_ids].mean(dim=-1)
            top = int(scores.argmax())  # the first of equal scores, candidates sorted by label
            if float(scores[top]) > best[n][0]:
                best[n] = (float(scores[top]), labels[top])
    return [label for _, label in best]


def entity_key(entity: Entity, lang: str, entity_vocab: dict) -> str | None:
    """The "lang:title" key of `entity` in the tokenizer's entity vocabulary: the prompt
    language's title first, then any other language's (all titles of one item share an id)."""
    langs = [lang] + sorted((set(entity.titles) | set(entity.labels)) - {lang})
    for other in langs:
        title = entity.title(other)
        if title is not None and f"{other}:{title}" in entity_vocab:
            return f"{other}:{title}"
    return None


def _entity_predictions(model, tokenizer, prompts: list[_Prompt], batch_size: int, device,
                        skipped: dict) -> list[tuple[_Prompt, int, int, str]]:
    """(prompt, predicted entity id, gold entity id, predicted QID) for every prompt whose subject
    and object are in the entity vocabulary; the others are counted in `skipped`."""
    vocab = tokenizer.entity_vocab
    candidates: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)  # entity id -> QID
    asked = []
    for p in sorted(prompts, key=lambda p: p.object.id):
        obj_key = entity_key(p.object, p.lang, vocab)
        if obj_key is not None:
            candidates[p.relation, p.lang].setdefault(vocab[obj_key], p.object.id)
    for p in prompts:
        obj_key = entity_key(p.object, p.lang, vocab)
        subj_key = entity_key(p.subject, p.lang, vocab)
        if subj_key is None:
            skipped[p.lang]["subject_not_in_entity_vocab"] += 1
        elif obj_key is None:
            skipped[p.lang]["object_not_in_entity_vocab"] += 1
        else:
            asked.append((p, subj_key, vocab[obj_key]))

    results = []
    for batch in _batches(asked, batch_size):
        texts, spans = [], []
        for p, _, _ in batch:
            pieces = list(p.pieces)
            pieces[p.y_index] = tokenizer.mask_token
            starts = [sum(len(s) for s in pieces[:i]) for i in range(len(pieces))]
            spans.append([(starts[i], starts[i] + len(pieces[i])) for i in (p.x_index, p.y_index)])
            texts.append("".join(pieces))
        enc = tokenizer(texts, entities=[[key, tokenizer.entity_mask_token] for _, key, _ in batch],
                        entity_spans=spans, padding=True, return_tensors="pt")
        enc.pop("token_type_ids", None)
        logits = model(**{k: v.to(device) for k, v in enc.items()}).entity_logits[:, 1].float().cpu()
        for b, (p, _, gold) in enumerate(batch):
            ids = candidates[p.relation, p.lang]
            cand = torch.tensor(sorted(ids))
            pred = int(cand[logits[b, cand].argmax()])
            results.append((p, pred, gold, ids[pred]))
    return results


def evaluate(model, tokenizer, facts: Facts, languages: list[str] | None = None, batch_size: int = 16,
             device: str | torch.device | None = None, predictions: bool = False) -> dict:
    """Top-1 accuracy per language of word and entity prompts; JSON-ready.

    Returns {"word": {lang: acc}, "entity": {lang: acc}, "counts": {kind: {lang: {"correct", "total"}}},
    "relations": {lang: {relation: {kind: [correct, total]}}}, "skipped": {lang: {reason: n}}}, plus,
    with `predictions`, "predictions": one {"language", "relation", "subject", "object", "word",
    "entity"} per prompt (the predicted label, and QID or null when the entity prompt was skipped)."""
    languages = list(languages) if languages else facts.languages
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    skipped: dict[str, dict[str, int]] = {lang: defaultdict(int) for lang in languages}
    prompts = _prompts(facts, languages, skipped)

    counts = {kind: {lang: [0, 0] for lang in languages} for kind in (WORD, ENTITY)}
    relations: dict[str, dict] = {lang: {} for lang in languages}

    def add(kind: str, p: _Prompt, correct: bool):
        per_relation = relations[p.lang].setdefault(p.relation, {WORD: [0, 0], ENTITY: [0, 0]})
        for c in (counts[kind][p.lang], per_relation[kind]):
            c[0] += int(correct)
            c[1] += 1

    records = [{"language": p.lang, "relation": p.relation, "subject": p.subject.id, "object": p.object.id,
                "word": None, "entity": None} for p in prompts]
    index = {id(p): n for n, p in enumerate(prompts)}
    with torch.inference_mode():
        for p, pred in zip(prompts, _word_predictions(model, tokenizer, prompts, batch_size, device)):
            add(WORD, p, pred == p.gold)
            records[index[id(p)]]["word"] = pred
        for p, pred, gold, qid in _entity_predictions(model, tokenizer, prompts, batch_size, device, skipped):
            add(ENTITY, p, pred == gold)
            records[index[id(p)]]["entity"] = qid

    out = {kind: {lang: c / t for lang, (c, t) in counts[kind].items() if t} for kind in (WORD, ENTITY)}
    out["counts"] = {kind: {lang: {"correct": c, "total": t} for lang, (c, t) in counts[kind].items()}
                     for kind in (WORD, ENTITY)}
    out["relations"] = relations
    out["skipped"] = {lang: dict(sorted(s.items())) for lang, s in skipped.items()}
    if predictions:
        out["predictions"] = records
    return out


def format_table(results: dict) -> str:
    """Per-language top-1 accuracy of both prompt kinds, with counts and skips."""
    rows = [("lang", "word prompts", "entity prompts", "skipped")]
    langs = sorted(results["counts"][WORD])
    total = {WORD: [0, 0], ENTITY: [0, 0]}

    def cell(c: int, t: int) -> str:
        return f"{100 * c / t:5.1f}% ({c}/{t})" if t else "-"

    for lang in langs:
        cells = []
        for kind in (WORD, ENTITY):
            c, t = results["counts"][kind][lang]["correct"], results["counts"][kind][lang]["total"]
            total[kind][0] += c
            total[kind][1] += t
            cells.append(cell(c, t))
        skips = ", ".join(f"{k}={v}" for k, v in results["skipped"].get(lang, {}).items()) or "-"
        rows.append((lang, *cells, skips))
    rows.append(("all", cell(*total[WORD]), cell(*total[ENTITY]), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
