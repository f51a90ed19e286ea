"""The fact file of the cloze evaluation (format in docs/cloze.md) and converters from the public
mLAMA and X-FACTR releases.

One JSON-lines file holds three kinds of records, told apart by "type":

    {"type": "template", "relation": "P36", "language": "en", "template": "The capital of [X] is [Y]."}
    {"type": "entity", "id": "Q64", "labels": {"en": "Berlin", "ja": "ベルリン"}, "titles": {"en": "Berlin"}}
    {"type": "fact", "relation": "P36", "subject": "Q183", "object": "Q64", "languages": ["en", "ja"]}

Labels fill the [X]/[Y] slots of word prompts; titles (Wikipedia page titles, default: the labels)
find the entity in the model's entity vocabulary for entity prompts. A fact's optional
"languages" limits where it is asked (the converters keep each release's per-language fact sets).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SLOT_RE = re.compile(r"\[[XY]\]")
MARKUP_RE = re.compile(r"\[[^\]]*\]")


class FactsError(ValueError):
    """A malformed fact file or release directory; the message names the file (and line)."""


@dataclass
class Entity:
    id: str
    labels: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)

    def title(self, lang: str) -> str | None:
        return self.titles.get(lang) or self.labels.get(lang)


@dataclass(frozen=True)
class Fact:
    relation: str
    subject: str
    object: str
    languages: frozenset[str] | None = None  # None: every language with labels and a template


@dataclass
class Facts:
    templates: dict[tuple[str, str], str] = field(default_factory=dict)  # (relation, lang) -> template
    entities: dict[str, Entity] = field(default_factory=dict)
    facts: list[Fact] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        return sorted({lang for _, lang in self.templates})


def check_template(template: str) -> str | None:
    """None if `template` has exactly one [X] and one [Y], else what is wrong with it."""
    slots = SLOT_RE.findall(template)
    if sorted(slots) != ["[X]", "[Y]"]:
        return f"needs exactly one [X] and one [Y], has {slots or 'none'}"
    return None


def _require(record: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if not isinstance(record.get(k), str) or not record[k]]
    if missing:
        raise FactsError(f"{where}: missing or non-string field(s) {', '.join(missing)}")


def _str_map(value, name: str, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise FactsError(f"{where}: {name!r} must map language codes to non-empty strings")
    return dict(value)


def load_facts(path: str | Path) -> Facts:
    """Read a fact file; raises FactsError naming the file and line of the first bad record."""
    path = Path(path)
    out = Facts()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FactsError(f"{path}: cannot read fact file ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except ValueError as e:
            raise FactsError(f"{where}: not JSON ({e})") from None
        kind = record.get("type") if isinstance(record, dict) else None
        if kind == "template":
            _require(record, ("relation", "language", "template"), where)
            problem = check_template(record["template"])
            if problem:
                raise FactsError(f"{where}: template {record['template']!r} {problem}")
            out.templates[record["relation"], record["language"]] = record["template"]
        elif kind == "entity":
            _require(record, ("id",), where)
            out.entities[record["id"]] = Entity(
                record["id"], _str_map(record.get("labels"), "labels", where),
                _str_map(record.get("titles"), "titles", where))
        elif kind == "fact":
            _require(record, ("relation", "subject", "object"), where)
            langs = record.get("languages")
            if langs is not None and not (isinstance(langs, list) and all(isinstance(x, str) for x in langs)):
                raise FactsError(f"{where}: 'languages' must be a list of language codes")
            out.facts.append(Fact(record["relation"], record["subject"], record["object"],
                                  frozenset(langs) if langs is not None else None))
        else:
            raise FactsError(f"{where}: 'type' must be template, entity or fact, got {kind!r}")
    for fact in out.facts:
        for qid in (fact.subject, fact.object):
            if qid not in out.entities:
                raise FactsError(f"{path}: fact {fact.relation} {fact.subject}->{fact.object} "
                                 f"refers to {qid}, which has no entity record")
    return out


def write_facts(path: str | Path, facts: Facts) -> None:
    """Write `facts` in the fact-file format: templates, then entities, then facts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        def put(record):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        for (relation, lang), template in sorted(facts.templates.items()):
            put({"type": "template", "relation": relation, "language": lang, "template": template})
        for entity in facts.entities.values():
            record = {"type": "entity", "id": entity.id, "labels": dict(sorted(entity.labels.items()))}
            if entity.titles:
                record["titles"] = dict(sorted(entity.titles.items()))
            put(record)
        for fact in facts.facts:
            record = {"type": "fact", "relation": fact.relation, "subject": fact.subject, "object": fact.object}
            if fact.languages is not None:
                record["languages"] = sorted(fact.languages)
            put(record)
    tmp.replace(path)


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except ValueError as e:
                    raise FactsError(f"{path}:{n}: not JSON ({e})") from None


class _Builder:
    """Collects templates, entity labels and per-language fact sets; counts what it skips."""

    def __init__(self):
        self.out = Facts()
        self.fact_langs: dict[tuple[str, str, str], set[str]] = {}
        self.skipped: Counter = Counter()

    def template(self, relation: str, lang: str, template: str) -> bool:
        if MARKUP_RE.search(SLOT_RE.sub("", template)):  # X-FACTR's [X.Nom], [DEF;Y], [né;X-Gender=MASC|...]
            self.skipped["template_with_inflection_markup"] += 1
            return False
        if check_template(template) is not None:
            self.skipped["template_without_plain_x_y"] += 1
            return False
        self.out.templates[relation, lang] = template
        return True

    def label(self, qid: str, lang: str, label: str) -> None:
        entity = self.out.entities.setdefault(qid, Entity(qid))
        if entity.labels.setdefault(lang, label) != label:
            self.skipped["conflicting_label"] += 1  # the first label seen is kept

    def fact(self, relation: str, subject: str, obj: str, lang: str) -> None:
        self.fact_langs.setdefault((relation, subject, obj), set()).add(lang)

    def finish(self) -> tuple[Facts, dict]:
        self.out.facts = [Fact(r, s, o, frozenset(langs)) for (r, s, o), langs in self.fact_langs.items()]
        stats = {"templates": len(self.out.templates), "entities": len(self.out.entities),
                 "facts": len(self.out.facts), "skipped": dict(self.skipped)}
        return self.out, stats


def convert_mlama(root: str | Path, languages: list[str] | None = None) -> tuple[Facts, dict]:
    """Read the mLAMA release layout: ROOT/<lang>/templates.jsonl ({"relation", "template"}) and
    ROOT/<lang>/<relation>.jsonl ({"sub_uri", "obj_uri", "sub_label", "obj_label"}).

    ROOT is the `mlama1.1` directory. Facts are kept per language exactly as the release lists them."""
    root = Path(root)
    lang_dirs = sorted(p for p in root.iterdir() if (p / "templates.jsonl").is_file()) if root.is_dir() else []
    if not lang_dirs:
        raise FactsError(f"{root}: no <lang>/templates.jsonl below it; give the mlama1.1 directory")
    build = _Builder()
    for lang_dir in lang_dirs:
        lang = lang_dir.name
        if languages and lang not in languages:
            continue
        for n, record in _read_jsonl(lang_dir / "templates.jsonl"):
            if not isinstance(record.get("relation"), str) or not isinstance(record.get("template"), str):
                raise FactsError(f"{lang_dir / 'templates.jsonl'}:{n}: needs 'relation' and 'template'")
            relation = record["relation"]
            data = lang_dir / f"{relation}.jsonl"
            if not data.is_file():
                build.skipped["template_without_facts_file"] += 1
                continue
            if not build.template(relation, lang, record["template"]):
                continue
            for m, fact in _read_jsonl(data):
                keys = ("sub_uri", "obj_uri", "sub_label", "obj_label")
                if not all(isinstance(fact.get(k), str) and fact[k] for k in keys):
                    raise FactsError(f"{data}:{m}: needs {', '.join(keys)}")
                build.label(fact["sub_uri"], lang, fact["sub_label"])
                build.label(fact["obj_uri"], lang, fact["obj_label"])
                build.fact(relation, fact["sub_uri"], fact["obj_uri"], lang)
    return build.finish()


def convert_xfactr(root: str | Path, languages: list[str] | None = None) -> tuple[Facts, dict]:
    """Read X-FACTR's layout: ROOT/data/TREx_prompts.csv (columns pid, relation, one per language),
    ROOT/data/mTRExf/sub/<pid>.jsonl ({"sub_uri", "obj_uri", ...}) and
    ROOT/data/mTRExf_unicode_escape.txt (`QID<TAB>"label"@lang<TAB>...`).

    ROOT is a clone of jzbjyb/X-FACTR. Templates with X-FACTR's inflection markup ([X.Nom],
    [DEF;Y], [né;X-Gender=MASC|...]) need its per-language morphology code and are skipped and
    counted; a fact is asked in a language when both entities have a label in it."""
    data = Path(root) / "data"
    prompts, facts_dir, labels = data / "TREx_prompts.csv", data / "mTRExf" / "sub", data / "mTRExf_unicode_escape.txt"
    for p in (prompts, facts_dir, labels):
        if not p.exists():
            raise FactsError(f"{p}: missing; give the root of an X-FACTR clone")
    build = _Builder()
    with open(prompts, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        langs = [c for c in (reader.fieldnames or []) if c not in ("pid", "relation")]
        if "pid" not in (reader.fieldnames or []):
            raise FactsError(f"{prompts}: no 'pid' column")
        langs = [lang for lang in langs if not languages or lang in languages]
        for row in reader:
            for lang in langs:
                if (row.get(lang) or "").strip():
                    build.template(row["pid"], lang, " ".join(row[lang].split()))
    wanted = set(langs)
    entity_labels: dict[str, dict[str, str]] = {}
    with open(labels, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if not parts[0]:
                continue
            for chunk in parts[1:]:
                label, sep, lang = chunk.rpartition("@")
                if not sep:
                    raise FactsError(f"{labels}:{n}: expected '\"label\"@lang', got {chunk!r}")
                if lang in wanted:
                    entity_labels.setdefault(parts[0], {})[lang] = label.strip('"')
    relations = sorted({relation for relation, _ in build.out.templates})
    for relation in relations:
        path = facts_dir / f"{relation}.jsonl"
        if not path.is_file():
            build.skipped["relation_without_facts_file"] += 1
            continue
        for m, fact in _read_jsonl(path):
            if not isinstance(fact.get("sub_uri"), str) or not isinstance(fact.get("obj_uri"), str):
                raise FactsError(f"{path}:{m}: needs sub_uri and obj_uri")
            sub, obj = entity_labels.get(fact["sub_uri"], {}), entity_labels.get(fact["obj_uri"], {})
            for lang in sorted(wanted):
                if (relation, lang) not in build.out.templates:
                    continue
                if lang not in sub or lang not in obj:
                    build.skipped["fact_without_label_in_language"] += 1
                    continue
                build.label(fact["sub_uri"], lang, sub[lang])
                build.label(fact["obj_uri"], lang, obj[lang])
                build.fact(relation, fact["sub_uri"], fact["obj_uri"], lang)
    return build.finish()
