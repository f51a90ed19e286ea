"""Wikitext → clean paragraphs with hyperlink character spans, and disambiguation detection.

Two passes. A fast regex scanner first cuts what never reaches the text — comments, <ref>s and
other non-text tags, templates, tables, headings, list markers — so mwparserfromhell's tokenizer
sees ~60% of the page (on template-heavy pages it is 3x slower on the full text). Templates are
dropped whole, as in the reference LUKE pipeline: the few that carry running text
({{lang|..}}, {{nihongo|..}}) are not worth a template expander. Then mwparserfromhell's C
tokenizer finds links, HTML tags, entities and what the scanner left; one linear walk over its
tokens assembles the text (building mwparserfromhell's node tree, in Python, cost more than
everything else together).

Paragraphs are blocks separated by blank lines; a heading, list item, table or block tag also
ends a paragraph. Inside a paragraph whitespace runs become one space. Each link is
(start, end, target): `text[start:end]` is the visible anchor (piped text, link trail
included) and `target` is the `normalize_title`d page name (redirects not resolved).
"""

from __future__ import annotations

import html
import re
import sys
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache, partial
from urllib.parse import unquote

from mwparserfromhell.parser import Parser, tokens

from .titles import normalize_title


@dataclass(slots=True)
class Paragraph:
    text: str
    links: list[tuple[int, int, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Namespaces. A dump's own <siteinfo> names them in its language (every real dump has one): those
# names come first. The tables below are the fallback for dumps without one, and hold what a
# siteinfo never lists: the English canonical names, which work on every wiki, and old aliases
# (Image/Bild) of the 24 mLUKE languages.

FILE_NS = {  # namespace 6 (files) and -2 (Media:, a direct link to a file): dropped with content
    "ar": "ملف صورة ميديا",
    "bn": "চিত্র ফাইল মিডিয়া",
    "de": "Datei Bild Medium",
    "el": "Αρχείο Εικόνα Μέσο",
    "es": "Archivo Imagen Medio",
    "fi": "Tiedosto Kuva",
    "fr": "Fichier Média",
    "hi": "चित्र फ़ाइल मीडिया",
    "id": "Berkas Gambar",
    "it": "Immagine",
    "ja": "ファイル 画像 メディア",
    "ko": "파일 그림 미디어",
    "nl": "Bestand Afbeelding",
    "pl": "Plik Grafika",
    "pt": "Ficheiro Arquivo Imagem Multimédia",
    "ru": "Файл Изображение Медиа",
    "sv": "Fil Bild",
    "sw": "Picha Faili",
    "te": "దస్త్రం ఫైలు బొమ్మ మీడియా",
    "th": "ไฟล์ ภาพ สื่อ",
    "tr": "Dosya Resim Ortam",
    "vi": "Tập_tin Hình Phương_tiện",
    "zh": "文件 檔案 档案 图像 圖像 媒体 媒體",
}
CATEGORY_NS = {  # namespace 14: dropped
    "ar": "تصنيف",
    "bn": "বিষয়শ্রেণী",
    "de": "Kategorie",
    "el": "Κατηγορία",
    "es": "Categoría",
    "fi": "Luokka",
    "fr": "Catégorie",
    "hi": "श्रेणी",
    "id": "Kategori",
    "it": "Categoria",
    "ja": "カテゴリ",
    "ko": "분류",
    "nl": "Categorie",
    "pl": "Kategoria",
    "pt": "Categoria",
    "ru": "Категория",
    "sv": "Kategori",
    "sw": "Jamii Kategoria",
    "te": "వర్గం",
    "th": "หมวดหมู่",
    "tr": "Kategori",
    "vi": "Thể_loại",
    "zh": "分类 分類 類別",
}
# Other namespaces (link text kept, no link): English canonical names and common local ones.
OTHER_NS = (
    "Talk User User_talk Wikipedia Project Project_talk WP File_talk Image_talk MediaWiki "
    "Template Template_talk Help Help_talk Category_talk Portal Portal_talk Draft Draft_talk "
    "Module Module_talk TimedText Special Book Education_Program Gadget Gadget_definition Topic "
    "Wikiproyecto Plantilla Ayuda Portal Anexo Vorlage Hilfe Benutzer Diskussion Modèle Aide "
    "Utilisateur Projet Portail Modello Aiuto Utente Progetto Predefinição Ajuda Usuário "
    "Predefinicao Szablon Pomoc Wikiprojekt Sjabloon Gebruiker Mall Hjälp Användare Malline "
    "Ohje Käyttäjä Шаблон Справка Участник Википедия Портал Проект Şablon Yardım Kullanıcı "
    "Vikipedi Bản_mẫu Trợ_giúp Thành_viên Templat Bantuan Pengguna Πρότυπο Βοήθεια Χρήστης "
    "Βικιπαίδεια Kigezo Msaada Mtumiaji قالب مساعدة مستخدم ويكيبيديا بوابة साँचा सहायता सदस्य "
    "विकिपीडिया প্রবেশদ্বার টেমপ্লেট সাহায্য ব্যবহারকারী উইকিপিডিয়া మూస సహాయం వాడుకరి "
    "వికీపీడియా แม่แบบ วิธีใช้ ผู้ใช้ วิกิพีเดีย สถานีย่อย テンプレート ヘルプ 利用者 ノート プロジェクト ポータル "
    "Template 模板 帮助 幫助 用户 使用者 维基百科 維基百科 主题 틀 도움말 사용자 위키백과 포털"
)
# Interwiki prefixes to sister projects: link text kept, no link.
INTERWIKI = (
    "wikt wiktionary commons c s wikisource q wikiquote b wikibooks n wikinews v wikiversity "
    "voy wikivoyage species wikispecies m meta mw mediawikiwiki d wikidata w wikipedia "
    "foundation wmf phab phabricator doi incubator outreach metawikimedia"
)
# Wikipedia language codes: [[xx:Title]] without a leading colon is an interlanguage link.
WIKI_LANGUAGES = (
    "aa ab ace ady af ak als alt am ami an ang anp ar arc ary arz as ast atj av avk awa ay az "
    "azb ba ban bar bat-smg bcl be be-tarask be-x-old bg bh bi bjn blk bm bn bo bpy br bs bug "
    "bxr ca cbk-zam cdo ce ceb ch cho chr chy ckb co cr crh cs csb cu cv cy da dag de din diq "
    "dsb dty dv dz ee el eml en eo es et eu ext fa fat ff fi fiu-vro fj fo fon fr frp frr fur "
    "fy ga gag gan gcr gd gl glk gn gom gor got gpe gu guc gur guw gv ha hak haw he hi hif ho "
    "hr hsb ht hu hy hyw hz ia id ie ig ii ik ilo inh io is it iu ja jam jbo jv ka kaa kab kbd "
    "kbp kcg kg ki kj kk kl km kn ko koi kr krc ks ksh ku kv kw ky la lad lb lbe lez lfn lg li "
    "lij lld lmo ln lo lrc lt ltg lv mad mai map-bms mdf mg mh mhr mi min mk ml mn mni mnw mo "
    "mr mrj ms mt mus mwl my myv mzn na nah nap nds nds-nl ne new ng nia nl nn no nov nqo nrm "
    "nso nv ny oc olo om or os pa pag pam pap pcd pcm pdc pfl pi pih pl pms pnb pnt ps pt pwn "
    "qu rm rmy rn ro roa-rup roa-tara ru rue rw sa sah sat sc scn sco sd se sg sh shi shn si "
    "simple sk skr sl sm smn sn so sq sr srn ss st stq su sv sw szl szy ta tay tcy te tet tg th "
    "ti tk tl tn to tpi tr trv ts tt tum tw ty tyv udm ug uk ur uz ve vec vep vi vls vo wa war "
    "wo wuu xal xh xmf yi yo yue za zea zgh zh zh-classical zh-min-nan zh-yue zu "
    # Wikipedias opened since 2022, and aliases in the interwiki map (lzh = zh-classical, ...).
    "ann bbc bew btm dga iba igl kge knc kus mos nr nup rsk syl tdd tig tly lzh nan rup sgs vro"
)

_FILE, _CATEGORY, _OTHER, _LANGLINK = "file", "category", "other", "langlink"


def _ns_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


@lru_cache(maxsize=None)
def _namespace_table(lang: str, extra: tuple[tuple[int, str], ...] = ()) -> dict[str, str]:
    """Map a casefolded namespace prefix to what a link into it becomes."""
    table = {}
    for name in WIKI_LANGUAGES.split():
        table[name] = _LANGLINK
    for name in INTERWIKI.split() + OTHER_NS.split():
        table[_ns_key(name)] = _OTHER
    for name in ["File", "Image", "Media", *FILE_NS.get(lang, "").split()]:
        table[_ns_key(name)] = _FILE
    for name in ["Category", *CATEGORY_NS.get(lang, "").split()]:
        table[_ns_key(name)] = _CATEGORY
    for key, name in extra:  # <siteinfo> names of this very wiki: they win
        if key != 0 and name:
            table[_ns_key(name)] = _FILE if key in (6, -2) else _CATEGORY if key == 14 else _OTHER
    return table


# ---------------------------------------------------------------------------------------------
# Link trails: letters right after a link join its anchor ([[bar]]s → "bars"). MediaWiki's rule
# is per language; letters of any alphabet approximate it, except those of scripts written
# without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan), where a trail
# would swallow the words after the link on any wiki (zh-yue, wuu, lo, my...). Japanese, Chinese,
# Thai and Korean (whose particles attach to nouns) get no trail at all, as on those wikis.
_NO_TRAIL = {"ja", "zh", "th", "ko"}
_NO_SPACE_SCRIPTS = ("\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\u3040-\u30ff"
                     "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
                     "\U00020000-\U0003134f")


def _mark_class() -> str:
    """A regex class of the combining marks (Mn, Mc, Me): Python's \\w has none of them, yet in
    Indic and Arabic scripts they belong to the word (a vowel sign, harakat). A trail that
    stopped before one would cut a letter from its mark ("[[भारत]]वासी" → anchor "भारतव")."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in ("Mn", "Mc", "Me"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


_MARKS = _mark_class()
_TRAIL = re.compile(rf"(?:(?![{_NO_SPACE_SCRIPTS}])(?:[^\W\d_]|[{_MARKS}]))+")

# ---------------------------------------------------------------------------------------------
# Pre-cut scanner (regexes on the raw wikitext).

# Tags whose content is not running text (code, formulas, galleries, references, ...).
_DROP_TAGS = (
    "ref references gallery math chem ce score timeline syntaxhighlight source pre graph mapframe "
    "maplink imagemap templatedata templatestyles hiero inputbox categorytree charinsert "
    "indicator section includeonly"
).split()
_CUT = re.compile(
    r"<!--.*?(?:-->|\Z)"  # comments (an unclosed one runs to the end, as in MediaWiki)
    rf"|<(?:{'|'.join(_DROP_TAGS)})\b[^>]*?/>"  # self-closing, e.g. <ref name=x />
    # (the body stops at the next opening of the same tag: many unclosed <ref>s stay linear)
    rf"|<({'|'.join(_DROP_TAGS)})\b[^>]*>[^<]*(?:<(?!/?\1\b)[^<]*)*</\1\s*>",
    re.DOTALL | re.IGNORECASE,
)
_BRACES = re.compile(r"\{\{|\}\}")
# A table never closed (MediaWiki closes it at the end of the page): its opening line and the
# row/cell lines right after it, so that its markup does not become text.
_UNCLOSED_TABLE = re.compile(r"\n[ \t:]*\{\|[^\n]*(?:\n[ \t]*[|!][^\n]*)*")
# Patterns anchored on "\n" rather than a MULTILINE "^": the regex engine then skips ahead to
# newlines instead of trying every position (5x faster); precut() adds a leading "\n".
_TABLE = re.compile(r"\n[ \t:]*(\{\||\|\})")
# Line-level block markup → paragraph breaks: headings, list/indent markers, rules.
_BLOCK = re.compile(r"\n(?:=+[^\n]*=+[ \t]*(?=\n|\Z)|[*#:;]+[ \t]*|-{4,})")
# Behaviour switches: __NOTOC__ and local aliases (__KEIN_INHALTSVERZEICHNIS__, __目次非表示__,
# __БЕЗ_ОГЛАВЛЕНИЯ__). Only all-caps or caseless words: "__init__" in prose stays.
_MAGIC = re.compile(rf"__[^\W_](?:\w|[{_MARKS}])*?__")
_EMPTY_PARENS = re.compile(r"[(（][\s,;、，']*[)）]")  # ' for italics around a template
_STRAY_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\b[^<>\n]*>")
_STYLE = re.compile(r"'{2,}")


def _balanced_spans(text: str, opener_closer: re.Pattern, opener: str) -> list[tuple[int, int]]:
    """Outermost closed spans of a nested construct ({{ }} or {| |}); unclosed openers stay text."""
    stack, spans = [], []
    for m in opener_closer.finditer(text):
        if m.group().lstrip("\n \t:").startswith(opener):
            stack.append(m.start())
        elif stack:
            spans.append((stack.pop(), m.end()))
    if not spans:
        return []
    spans.sort()
    outer = [spans[0]]
    for s, e in spans[1:]:
        if s >= outer[-1][1]:
            outer.append((s, e))
        elif e > outer[-1][1]:  # overlapping: merge
            outer[-1] = (outer[-1][0], e)
    return outer


def _cut(text: str, spans: list[tuple[int, int]], repl: str = "") -> str:
    if not spans:
        return text
    parts, pos = [], 0
    for s, e in spans:
        parts.append(text[pos:s])
        parts.append(repl)
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


def _drop_empty_parens(text: str) -> str:
    """Remove what "Berlin ({{IPA|..}}) is" leaves: " ()". The spaces before are found by hand:
    a regex starting with optional spaces is tried at every space and is 7x slower."""
    spans = []
    for m in _EMPTY_PARENS.finditer(text):
        start = m.start()
        while start > 0 and text[start - 1] in " \t":
            start -= 1
        spans.append((start, m.end()))
    return _cut(text, spans)


def _drop_magic_word(m: re.Match) -> str:
    word = m.group()
    return "" if word == word.upper() else word


_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)\b[^<>]*?(/?)>")
# Tags that need no closing tag (mwparserfromhell's single tags): never "unclosed".
_SINGLE_TAGS = {"br", "wbr", "hr", "meta", "link", "img", "li", "dt", "dd", "th", "td", "tr"}


def _drop_unclosed_tags(text: str) -> str:
    """Remove opening tags that are never closed ("<small>", "<p>" as a line break). MediaWiki's
    sanitizer drops or auto-closes them; mwparserfromhell retries each one to the end of the
    page: 30,000 list lines with an unclosed <span> took minutes to tokenize (quadratic)."""
    opened: dict[str, list[re.Match]] = {}
    for m in _TAG.finditer(text):
        closing, name, self_closing = m.groups()
        name = name.lower()
        if self_closing or name in _SINGLE_TAGS:
            continue
        if closing:
            if opened.get(name):
                opened[name].pop()
        else:
            opened.setdefault(name, []).append(m)
    unclosed = sorted((m for stack in opened.values() for m in stack), key=lambda m: m.start())
    if not unclosed:
        return text
    parts, pos = [], 0
    for m in unclosed:  # a block tag still ends the paragraph
        parts += [text[pos:m.start()], "\n\n\n" if m.group(2).lower() in _BLOCK_TAGS else ""]
        pos = m.end()
    parts.append(text[pos:])
    return "".join(parts)


def precut(wikitext: str) -> str:
    """Remove comments, non-text tags, templates, tables and line-level block markup."""
    text = _CUT.sub("", "\n" + wikitext)
    if "{{" in text:
        text = _cut(text, _balanced_spans(text, _BRACES, "{{"))
        text = _drop_empty_parens(text)
    if "{|" in text:
        text = _cut(text, _balanced_spans(text, _TABLE, "{|"), "\n\n\n")
        text = _UNCLOSED_TABLE.sub("\n\n\n", text)
    text = _BLOCK.sub("\n\n\n", text)
    if "<" in text:
        text = _drop_unclosed_tags(text)
    if "__" in text:
        text = _MAGIC.sub(_drop_magic_word, text)
    return text


# Chinese variant conversion markup, -{...}- (LanguageConverter): zhwiki writes both scripts
# inline, "-{zh-hans:计算机; zh-hant:電腦;}-", and hides conversion rules with -{H|...}-. One
# variant is shown (Simplified first, as the reference extractor's zh-hans text), rules dropped.
# (the body cannot hold "-{": an unclosed "-{" scans only up to the next one, never quadratic)
_VARIANT_BLOCK = re.compile(r"-\{((?:[^}-]|-(?!\{)|\}(?!-))*)\}-")
_VARIANT_FLAGS = re.compile(r"\s*([ATRDHN-](?:\s*;\s*[ATRDHN-])*)\s*;?\s*\|")
_VARIANT_RULE = re.compile(r"(?:^|;)\s*(zh(?:-[a-z]+)?)\s*:")
_VARIANT_ORDER = ("zh-hans", "zh-cn", "zh", "zh-sg", "zh-my", "zh-hant", "zh-tw", "zh-hk", "zh-mo")


def _variant_text(m: re.Match) -> str:
    body = m.group(1)
    flags = _VARIANT_FLAGS.match(body)
    if flags:
        if set(flags.group(1)) & set("HT-"):  # a hidden rule, a title rule, a rule removal
            return ""
        body = body[flags.end():]
        if "R" in flags.group(1):  # raw: shown as written
            return body
    rules = list(_VARIANT_RULE.finditer(body))
    if not rules or rules[0].start() != 0:
        return body  # -{text}-: protected from conversion, shown as is
    texts = {}
    for rule, following in zip(rules, rules[1:] + [None]):
        end = following.start() if following else len(body)
        texts.setdefault(rule.group(1), body[rule.end():end].strip())
    variant = next((v for v in _VARIANT_ORDER if v in texts), rules[0].group(1))
    return texts[variant]


def convert_variants(text: str) -> str:
    return _VARIANT_BLOCK.sub(_variant_text, text) if "-{" in text else text


# ---------------------------------------------------------------------------------------------
# The walk over mwparserfromhell's token stream. Its C tokenizer is fast; building the node tree
# from the tokens (in Python) took most of the time, so one linear pass renders the tokens here.

# Tags rendered as their own block: they end the paragraph.
_BLOCK_TAGS = {"p", "div", "blockquote", "center", "li", "ul", "ol", "dl", "dd", "dt", "table",
               "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "poem", "hr"}
_SKIP_TAGS = set(_DROP_TAGS)

(_TEXT, _LINK_OPEN, _LINK_SEP, _LINK_CLOSE, _TEMPLATE_OPEN, _TEMPLATE_CLOSE, _COMMENT_START,
 _COMMENT_END, _HEADING_START, _HEADING_END, _ENTITY_START, _ENTITY_END, _EXT_OPEN, _EXT_SEP,
 _EXT_CLOSE, _TAG_OPEN_OPEN, _TAG_CLOSE_OPEN, _TAG_CLOSE_SELF, _TAG_OPEN_CLOSE,
 _TAG_CLOSE_CLOSE) = range(20)
_KIND = {
    tokens.Text: _TEXT, tokens.WikilinkOpen: _LINK_OPEN, tokens.WikilinkSeparator: _LINK_SEP,
    tokens.WikilinkClose: _LINK_CLOSE, tokens.TemplateOpen: _TEMPLATE_OPEN,
    tokens.ArgumentOpen: _TEMPLATE_OPEN, tokens.TemplateClose: _TEMPLATE_CLOSE,
    tokens.ArgumentClose: _TEMPLATE_CLOSE, tokens.CommentStart: _COMMENT_START,
    tokens.CommentEnd: _COMMENT_END, tokens.HeadingStart: _HEADING_START,
    tokens.HeadingEnd: _HEADING_END, tokens.HTMLEntityStart: _ENTITY_START,
    tokens.HTMLEntityEnd: _ENTITY_END, tokens.ExternalLinkOpen: _EXT_OPEN,
    tokens.ExternalLinkSeparator: _EXT_SEP, tokens.ExternalLinkClose: _EXT_CLOSE,
    tokens.TagOpenOpen: _TAG_OPEN_OPEN, tokens.TagCloseOpen: _TAG_CLOSE_OPEN,
    tokens.TagCloseSelfclose: _TAG_CLOSE_SELF, tokens.TagOpenClose: _TAG_OPEN_CLOSE,
    tokens.TagCloseClose: _TAG_CLOSE_CLOSE,
}
_ENTITY_PREFIX = {tokens.HTMLEntityNumeric: "#", tokens.HTMLEntityHex: "x"}


class _Render:
    """One page: renders tokens[i:] into text pieces and links (offsets into the joined text)."""

    __slots__ = ("parser", "toks", "kinds", "parts", "length", "links", "mute", "in_link", "trail")

    def __init__(self, parser: "WikitextParser", toks: list):
        self.parser = parser
        self.toks = toks
        self.kinds = list(map(_KIND.get, map(type, toks)))  # None: a token kind not handled
        self.parts: list[str] = []
        self.length = 0
        self.links: list[list] = []  # [start, end, target]
        self.mute = 0  # > 0 inside templates, comments, files, skipped tags: no text
        self.in_link = 0  # > 0 inside a link's text: nested links give text only
        self.trail = None  # the link just closed, whose anchor a following trail extends

    def add(self, s: str) -> None:
        if s and not self.mute:
            self.parts.append(s)
            self.length += len(s)

    def seq(self, i: int, stops: tuple[int, ...]) -> int:
        """Render until a token whose kind is in `stops`; return its index."""
        toks, kinds, n = self.toks, self.kinds, len(self.toks)
        while i < n:
            kind = kinds[i]
            if kind in stops:
                self.trail = None  # "<span>[[a]]</span>s": no trail across a closing tag
                return i
            if kind == _TEXT:
                value = toks[i]["text"]
                if self.trail is not None:
                    trail = self.parser.trail
                    m = trail.match(value) if trail is not None and not self.mute else None
                    if m:
                        self.add(m.group())
                        self.trail[1] = self.length
                        value = value[m.end():]
                    self.trail = None
                if "<" in value:  # stray or unclosed tags, which MediaWiki's sanitizer drops
                    value = _STRAY_TAG.sub("", value)
                if "''" in value:
                    value = _STYLE.sub("", value)
                if value and not self.mute:
                    self.parts.append(value)
                    self.length += len(value)
                i += 1
                continue
            self.trail = None
            if kind == _LINK_OPEN:
                i = self.link(i + 1)
            elif kind == _TEMPLATE_OPEN:
                self.mute += 1
                i = self.seq(i + 1, (_TEMPLATE_CLOSE,)) + 1
                self.mute -= 1
            elif kind == _COMMENT_START:
                self.mute += 1
                i = self.seq(i + 1, (_COMMENT_END,)) + 1
                self.mute -= 1
            elif kind == _HEADING_START:
                self.add("\n\n")
                self.mute += 1
                i = self.seq(i + 1, (_HEADING_END,)) + 1
                self.mute -= 1
                self.add("\n\n")
            elif kind == _ENTITY_START:
                i += 1
                entity = ["&"]
                while i < n and kinds[i] != _ENTITY_END:
                    tok = toks[i]  # "&", ["#", ["x"]], name or number, ";"
                    entity.append(tok["text"] if kinds[i] == _TEXT
                                  else _ENTITY_PREFIX.get(type(tok), ""))
                    i += 1
                self.add(html.unescape("".join(entity) + ";"))
                i += 1
            elif kind == _EXT_OPEN:
                brackets = toks[i].get("brackets")
                self.mute += 1  # the URL
                i = self.seq(i + 1, (_EXT_SEP, _EXT_CLOSE))
                self.mute -= 1
                if i < n and kinds[i] == _EXT_SEP:
                    if not brackets:
                        self.mute += 1
                    i = self.seq(i + 1, (_EXT_CLOSE,))
                    if not brackets:
                        self.mute -= 1
                i += 1
            elif kind == _TAG_OPEN_OPEN:
                i = self.tag(i + 1)
            else:  # stray separators/closers (cannot happen in a balanced stream) and the rest
                i += 1
        return n

    def tag(self, i: int) -> int:
        toks, kinds, n = self.toks, self.kinds, len(self.toks)
        name = toks[i]["text"].strip().lower() if i < n and kinds[i] == _TEXT else ""
        while i < n and kinds[i] not in (_TAG_CLOSE_OPEN, _TAG_CLOSE_SELF):
            i += 1  # name and attributes
        block = name in _BLOCK_TAGS
        if block:
            self.add("\n\n")
        elif name == "br":
            self.add(" ")
        if i < n and kinds[i] == _TAG_CLOSE_OPEN:
            skip = name in _SKIP_TAGS
            self.mute += skip
            i = self.seq(i + 1, (_TAG_OPEN_CLOSE,))
            self.mute -= skip
            while i < n and kinds[i] != _TAG_CLOSE_CLOSE:
                i += 1  # the closing tag's name
        if block:
            self.add("\n\n")
        return i + 1

    def link(self, i: int) -> int:
        toks, kinds, n = self.toks, self.kinds, len(self.toks)
        if i + 1 < n and kinds[i] == _TEXT and kinds[i + 1] in (_LINK_SEP, _LINK_CLOSE):
            title = toks[i]["text"].strip()  # the common case: plain text
            i += 1
        else:  # render the title on its own (entities decoded, markup dropped)
            parts, length, mute = self.parts, self.length, self.mute
            self.parts, self.length, self.mute = [], 0, 0
            self.in_link += 1
            i = self.seq(i, (_LINK_SEP, _LINK_CLOSE))
            self.in_link -= 1
            title = "".join(self.parts).strip()
            self.parts, self.length, self.mute = parts, length, mute
        colon = title.startswith(":")  # [[:Category:X]] / [[:fr:Paris]] show a plain link
        if colon:
            title = title[1:].strip()
        kind, name = None, title  # name: the page linked to
        prefix, sep, rest = title.partition(":")
        if sep:
            kind = self.parser.namespaces.get(_ns_key(prefix))
            if kind == _LANGLINK and _ns_key(prefix) == self.parser.lang:
                # The wiki's own language prefix is a local link: [[:en:Paris]] on enwiki.
                name, colon = rest.strip(), True
                prefix, sep, _ = name.partition(":")
                kind = self.parser.namespaces.get(_ns_key(prefix)) if sep else None
        hidden = kind in (_FILE, _CATEGORY, _LANGLINK) and not colon
        start = self.length
        self.mute += hidden
        self.in_link += 1
        if i < n and kinds[i] == _LINK_SEP:
            i = self.seq(i + 1, (_LINK_CLOSE,))
        else:  # MediaWiki shows an unpiped target %-decoded: [[Caf%C3%A9]] → "Café"
            self.add(unquote(title) if "%" in title else title)
        self.in_link -= 1
        self.mute -= hidden
        if hidden or self.mute or self.in_link or kind is not None or name.startswith("#"):
            return i + 1  # other namespace, sister project, same-page section: text only
        target = self.parser.target(name)
        if target and self.length > start:
            self.trail = [start, self.length, target]
            self.links.append(self.trail)
        return i + 1


class WikitextParser:
    """Parser for one language (and optionally the namespace names of its dump's <siteinfo>)."""

    def __init__(self, lang: str, namespaces: dict[int, str] | None = None):
        self.lang = lang
        self.siteinfo = dict(namespaces or {})
        self.namespaces = _namespace_table(lang, tuple(sorted(self.siteinfo.items())))
        self.trail = None if lang in _NO_TRAIL else _TRAIL
        self._tokenizer = Parser()._tokenizer
        # Link targets repeat a lot within and across pages.
        self.target = lru_cache(maxsize=1 << 16)(partial(normalize_title, lang=lang))

    def parse(self, wikitext: str) -> list[Paragraph]:
        text = precut(wikitext)
        if self.lang == "zh":
            text = convert_variants(text)
        toks = self._tokenizer.tokenize(text, 0, True)  # skip_style_tags: '' stay text
        render = _Render(self, toks)
        render.seq(0, ())
        return _paragraphs("".join(render.parts), render.links)


_PARA_BREAK = re.compile(r"\n[^\S\n]*\n\s*")


def _paragraphs(raw: str, links: list[list]) -> list[Paragraph]:
    """Split at blank lines, collapse whitespace, and move link offsets along."""
    out: list[Paragraph] = []
    li = 0
    pos = 0
    bounds = [(m.start(), m.end()) for m in _PARA_BREAK.finditer(raw)] + [(len(raw), len(raw))]
    for brk_start, brk_end in bounds:
        chunk_links = []
        while li < len(links) and links[li][0] < brk_start:
            if links[li][1] <= brk_start:
                chunk_links.append(links[li])
            li += 1  # a link that spans a paragraph break is dropped (its anchor is split)
        para = _normalize(raw, pos, brk_start, chunk_links)
        if para is not None:
            out.append(para)
        pos = brk_end
    return out


def _normalize(raw: str, start: int, end: int, links: list[list]) -> Paragraph | None:
    """Collapse whitespace runs in raw[start:end] to single spaces, moving link offsets along."""
    chunk = raw[start:end]
    text = " ".join(chunk.split())
    if not text:
        return None
    if not links:
        return Paragraph(text)
    # Offsets shift only where whitespace is removed: the leading run, and each run of 2+.
    lead = len(chunk) - len(chunk.lstrip())
    ends, removed, total = [lead], [lead], lead
    for m in _WS_RUN.finditer(chunk, lead):
        total += m.end() - m.start() - 1
        ends.append(m.end())
        removed.append(total)
    new_links = []
    for s, e, target in links:
        while s < e and raw[s].isspace():  # anchors never start or end with a space
            s += 1
        while s < e and raw[e - 1].isspace():
            e -= 1
        if s == e:
            continue
        s, e = s - start, e - start
        if total:  # (s >= lead: anchors start on a non-space)
            s -= removed[bisect_right(ends, s) - 1]
            e -= removed[bisect_right(ends, e) - 1]
        new_links.append((s, e, target))
    return Paragraph(text, new_links)


_WS_RUN = re.compile(r"\s\s+")


@lru_cache(maxsize=64)
def _parser(lang: str) -> WikitextParser:
    return WikitextParser(lang)


def parse_wikitext(wikitext: str, lang: str) -> list[Paragraph]:
    """Paragraphs (text, links) of one article's wikitext."""
    return _parser(lang).parse(wikitext)


# ---------------------------------------------------------------------------------------------
# Disambiguation pages are recognised in their wikitext by, in this order, a template, the
# Disambiguator extension's magic word __DISAMBIG__ (which those templates emit; a page may also
# carry it directly), or a category. (Wikidata's Q4167410 items are the language-independent
# fourth signal: see interwiki.py.) Names below are the main templates and redirects to them on
# the 24 wikis; English ones are used across many wikis.
DISAMBIGUATION_TEMPLATES = {
    "*": "Disambiguation|Disambig|Dab|Disamb|Hndis|Geodis|Human name disambiguation|"
         "Place name disambiguation|Disambiguation page",
    "ar": "توضيح|صفحة توضيح",
    "bn": "দ্ব্যর্থতা নিরসন|দ্ব্যর্থতা",
    "de": "Begriffsklärung|BKL",
    "el": "Αποσαφήνιση",
    "es": "Desambiguación|Desambig|Des",
    "fi": "Täsmennyssivu|Täsmennys",
    "fr": "Homonymie|Bandeau homonymie|Patronymie|Toponymie|Homonymie de personnes",
    "hi": "बहुविकल्पी|बहुविकल्पी शब्द",
    "id": "Disambiguasi",
    "it": "Disambigua|Disambiguazione",
    "ja": "曖昧さ回避|Aimai|人名の曖昧さ回避|地名の曖昧さ回避",
    "ko": "동음이의|동음이의어",
    "nl": "Dp|Dpintro|Dpb|Doorverwijspagina",
    "pl": "Ujednoznacznienie|Disambigation",
    "pt": "Desambiguação|Desambig",
    "ru": "Неоднозначность|Значения|Многозначность|Омонимы",
    "sv": "Förgrening|Gren|Betydelselista",
    "sw": "Maana",
    "te": "అయోమయ నివృత్తి",
    "th": "แก้ความกำกวม",
    "tr": "Anlam ayrımı",
    "vi": "Trang định hướng|Định hướng",
    "zh": "消歧义|消歧義|消歧義頁|消歧义页",
}
# The Disambiguator extension's magic word and its local aliases (Disambiguator.i18n.magic.php).
# Every wiki also accepts the English __DISAMBIG__: a language without a template list here
# relies on it.
DISAMBIGUATION_MAGIC_WORDS = (
    "DISAMBIG|توضيح|DƏQİQLƏŞDİRMƏ|ROZCESTNÍK|BEGRIFFSKLÄRUNG|DISAMBIGUACIÓN|DISAMBIGUACION|"
    "TÄPSUSTUS|ابهام\u200cزدایی|ابهامزدایی|HOMONYMIE|HOMÓNIMOS|HOMONIMOS|דף_פירושונים|פירושונים|"
    "बहुवि|曖昧さ回避|동음이의|ПОЈАСНУВАЊЕ|വിവക്ഷ|निःसंदिग्ध|PEKER|FLEIRTYDING|ДИСАМБИГ|ضد_ابہام|"
    "ĐỊNH_HƯỚNG|ĐỊNHHƯỚNG|消歧义|消除歧义"
)
# English Wikipedia's many topic variants, also used elsewhere: "Hospital disambiguation",
# "Species Latin name disambiguation"... ("Disambiguation needed" is a cleanup tag: no match).
_TOPIC_DISAMBIGUATION = r"[^{}|\n]*[ _]disambiguation"
# Words found in the names of disambiguation categories.
DISAMBIGUATION_CATEGORY_WORDS = (
    "disambiguation|begriffsklärung|homonymie|desambiguación|desambiguação|disambigua|"
    "täsmennyssivu|ujednoznacznienie|неоднозначн|многозначн|förgrening|αποσαφήνιση|"
    "曖昧さ回避|消歧义|消歧義|동음이의|توضيح|बहुविकल्पी|แก้ความกำกวม|anlam ayrımı|"
    "trang định hướng|disambiguasi|দ্ব্যর্থতা|అయోమయ|maana"
)


@lru_cache(maxsize=64)
def _disambiguation_regexes(lang: str, category_ns: str = "") -> tuple[tuple[str, re.Pattern], ...]:
    """(signal, regex) pairs, tried in this order; category_ns: the <siteinfo> name of ns 14."""
    names = {*DISAMBIGUATION_TEMPLATES["*"].split("|"),
             *DISAMBIGUATION_TEMPLATES.get(lang, "").split("|")}
    names = sorted(filter(None, names), key=len, reverse=True)  # longest first
    alternatives = "|".join(re.escape(n).replace(r"\ ", "[ _]+") for n in names)
    template = re.compile(
        rf"\{{\{{\s*(?:Template:)?(?:{alternatives}|{_TOPIC_DISAMBIGUATION})\s*[|}}]", re.IGNORECASE)
    # diq's alias is written with single underscores (_MANEYOBİN_).
    magic_word = re.compile(rf"__(?:{DISAMBIGUATION_MAGIC_WORDS})__|_MANEYOBİN_", re.IGNORECASE)
    categories = {"Category", *CATEGORY_NS.get(lang, "").split(), *filter(None, [category_ns])}
    cat_names = "|".join(re.escape(c).replace("_", "[ _]").replace(r"\ ", "[ _]")
                         for c in sorted(categories))
    category = re.compile(
        rf"\[\[\s*(?:{cat_names})\s*:[^\]|]*(?:{DISAMBIGUATION_CATEGORY_WORDS})", re.IGNORECASE
    )
    return ("template", template), ("magic_word", magic_word), ("category", category)


def disambiguation_signal(wikitext: str, lang: str,
                          namespaces: dict[int, str] | None = None) -> str | None:
    """What marks the page as a disambiguation page ("template", "magic_word", "category"; see
    contract.DISAMBIGUATION_SIGNALS), or None. `namespaces`: the dump's <siteinfo> names."""
    for signal, regex in _disambiguation_regexes(lang, (namespaces or {}).get(14, "")):
        if regex.search(wikitext):
            return signal
    return None


def is_disambiguation(wikitext: str, lang: str) -> bool:
    return disambiguation_signal(wikitext, lang) is not None
