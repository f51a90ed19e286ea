"""XLM-R ids and offsets from sentencepiece itself, identical to the fast tokenizer's.

`tokenizers`' encode_batch is most of the dataset stage's time; sentencepiece's own encoder
(ids only) is several times faster. XLM-R's ids are sentencepiece's with the fairseq offset
(`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, every other piece id + 1). Offsets are not taken from
sentencepiece (its proto output is slow to read, and it aligns characters that the normalizer
expands differently): a sentence is accepted only if its pieces spell its characters exactly,
word-start markers standing for whitespace, so the offsets follow from the pieces' lengths.
Such a sentence is unchanged by the normalizer, so both tokenizers run the same unigram model on
the same words and find the same best segmentation, unless two segmentations score the same: the
two implementations break such ties differently ("III" → "II"+"I" or "I"+"II"). Ties of that
kind, adjacent different pieces that are powers of one string, are detected. Sentences that fail
(NFKC-changed characters, unknown pieces, whitespace that is no word boundary, a literal "▁",
a tie) are encoded by `tokenizers`.

`SentencePieceEncoder.for_tokenizer` checks the vocabulary mapping and compares both paths on
PROBE_TEXTS (the 24 languages of mLUKE, odd characters, digits, spacing); any difference, or a
missing sentencepiece model, leaves the caller on `tokenizers`, and the choice is logged.
"""

from __future__ import annotations

import itertools
import logging
import operator
from pathlib import Path

log = logging.getLogger(__name__)

SPACE = "▁"

PROBE_TEXTS = (
    "برلين هي عاصمة ألمانيا وأكبر مدنها، ويبلغ عدد سكانها 3٫8 مليون نسمة.",
    "বার্লিন জার্মানির রাজধানী ও বৃহত্তম শহর।",
    "Berlin ist die Hauptstadt der Bundesrepublik Deutschland – „die größte Stadt“.",
    "Το Βερολίνο είναι η πρωτεύουσα της Γερμανίας.",
    "Berlin is the capital of Germany (pop. 3,850,809 in 2021); U.S.A. Dr. Smith's \"quote\".",
    "Berlín es la capital de Alemania; ¿sabías que tiene 3,8 millones de habitantes?",
    "Berliini on Saksan pääkaupunki ja suurin kaupunki.",
    "Berlin est la capitale de l'Allemagne — « la ville » à 34 m d’altitude.",
    "बर्लिन जर्मनी की राजधानी और सबसे बड़ा शहर है।",
    "Berlin adalah ibu kota Jerman dan kota terbesarnya.",
    "Berlino è la capitale della Germania, città più popolosa dell'UE.",
    "ベルリンはドイツの首都であり、同国最大の都市である。人口は約380万人。",
    "베를린은 독일의 수도이자 최대 도시이다.",
    "Berlijn is de hoofdstad van Duitsland en telt ’s zomers veel toeristen.",
    "Berlin jest stolicą Niemiec i największym miastem kraju.",
    "Berlim é a capital da Alemanha e a sua maior cidade.",
    "Берлин — столица и крупнейший город Германии.",
    "Berlin är Tysklands huvudstad och största stad.",
    "Berlin ni mji mkuu wa Ujerumani na mji mkubwa zaidi.",
    "బెర్లిన్ జర్మనీ దేశ రాజధాని మరియు అతిపెద్ద నగరం.",
    "เบอร์ลินเป็นเมืองหลวงของประเทศเยอรมนี มีประชากรประมาณ 3.8 ล้านคน",
    "Berlin, Almanya'nın başkenti ve en kalabalık şehridir; İstanbul'dan uzaktır.",
    "Berlin là thủ đô và là thành phố lớn nhất của nước Đức.",
    "柏林是德国首都，也是德国最大的城市。",
    "ﬁnance ①②③ ＡＢＣ１２３ ½ ™ № ㍻ ＩＢＭ ｶﾀｶﾅ Ⅻ ⅷ x²+y²=z² 3×10⁸ m/s",
    "Tab\tseparated\nlines and  double   spaces",
    "  leading and trailing  ",
    "e\u0301tude cafe\u0301 Ha\u0300 No\u0323i",
    "zero\u200bwidth\u200djoiner non\u00a0breaking\u2009thin\u3000ideographic",
    "emoji 😀👍🏽 flags 🇩🇪 math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "1,234.56 2024-01-01 007 0x1F +49 (30) 123456 9.99€ $5 ¥100",
    "a▁b ▁lone and \u2028line separator and control\x1cchar",
    "مرحبا\u200fبالعالم עברית தமிழ் ქართული ꯃꯤꯇꯩ",
    "",
    " ",
)


class SentencePieceEncoder:
    """Encode with sentencepiece where that is provably what the fast tokenizer gives."""

    def __init__(self, model_file: str | Path, processor):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.processor = processor  # a PageProcessor: its tokenizers path encodes the rest
        n = self.sp.get_piece_size()
        if (self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (0, 1, 2):
            raise ValueError("sentencepiece ids <unk>, <s>, </s> are not 0, 1, 2 as in XLM-R's model")
        self.pieces = [self.sp.id_to_piece(i) for i in range(n)]
        self.ids = [3, 0, 2] + list(range(4, n + 1))  # the fairseq offset
        backend = processor.backend
        wrong = [i for i in range(3, n) if backend.id_to_token(i + 1) != self.pieces[i]]
        if wrong:
            raise ValueError(f"{len(wrong)} pieces have other ids than piece id + 1 (e.g. "
                             f"{self.pieces[wrong[0]]!r})")
        self.cover_spaces = processor.offsets_cover_spaces
        self.roots = _root_keys(self.pieces)
        self.space = [int(p.startswith(SPACE)) for p in self.pieces]
        self.lone = self.pieces.index(SPACE) if SPACE in self.pieces else -1

    @classmethod
    def for_tokenizer(cls, tokenizer, processor) -> SentencePieceEncoder | None:
        """The encoder if it matches the fast tokenizer on every probe text, else None."""
        name = getattr(tokenizer, "name_or_path", "")
        model = getattr(tokenizer, "vocab_file", None)
        if not model or not Path(model).is_file():
            log.info("tokenizer %s: no sentencepiece model file; tokenizing with tokenizers", name)
            return None
        try:
            encoder = cls(model, processor)
        except (OSError, RuntimeError, ValueError) as e:
            log.warning("tokenizer %s: sentencepiece path unusable (%s); tokenizing with tokenizers",
                        name, e)
            return None
        different = encoder.differences(PROBE_TEXTS)
        if different:
            log.warning("tokenizer %s: sentencepiece differs from tokenizers on %d probe texts "
                        "(e.g. %r); tokenizing with tokenizers", name, len(different), different[0])
            return None
        log.info("tokenizer %s: tokenizing with sentencepiece (identical to tokenizers on %d probe "
                 "texts)", name, len(PROBE_TEXTS))
        return encoder

    def differences(self, texts) -> list[str]:
        texts = list(texts)
        wanted = [True] * len(texts)
        ours = self.encode(texts, wanted)
        theirs = self.processor.encode_with_tokenizers(texts, wanted)
        return [t for t, a, b in zip(texts, ours, theirs) if [list(x) for x in a] != [list(x) for x in b]]

    def encode(self, texts, with_offsets):
        """[(ids, starts, ends)] as PageProcessor.encode_with_tokenizers gives them."""
        results, rest = [], []
        ids = self.ids.__getitem__
        encoded = self.sp.encode(list(texts))
        tied = self._ties(encoded)
        for i, (text, piece_ids, wanted) in enumerate(zip(texts, encoded, with_offsets)):
            offsets = None if i in tied else self._offsets(text, piece_ids, wanted)
            if offsets is None:
                results.append(None)
                rest.append(i)
            else:
                results.append((list(map(ids, piece_ids)), *offsets))
        if rest:
            encoded = self.processor.encode_with_tokenizers([texts[i] for i in rest],
                                                            [with_offsets[i] for i in rest])
            for i, result in zip(rest, encoded):
                results[i] = result
        return results

    def _ties(self, encoded) -> set[int]:
        """Indices of the sentences with two adjacent, different pieces of one root (in one pass
        over the whole batch)."""
        import numpy as np

        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
        if len(flat) < 2:
            return set()
        roots = self.roots[flat]
        tie = (roots[1:] == roots[:-1]) & (roots[1:] >= 0) & (flat[1:] != flat[:-1])
        ends = np.cumsum(lengths)
        across = ends[:-1] - 1  # pairs made of one sentence's last piece and the next one's first
        tie[across[(across >= 0) & (across < len(tie))]] = False
        return set(np.searchsorted(ends, np.nonzero(tie)[0], side="right").tolist())

    def _offsets(self, text: str, piece_ids: list[int], wanted: bool = True):
        """(starts, ends): character offsets of the pieces (a word's "▁" excluded; a lone "▁" gets
        the next character, as the fast tokenizer gives it), or None unless the pieces spell the
        text ((None, None) if the offsets are not `wanted`)."""
        if SPACE in text:
            return None
        words = list(map(self.pieces.__getitem__, piece_ids))
        if "".join(words) == SPACE + text.replace(" ", SPACE):  # the common case, checked at once
            if not wanted:
                return None, None
            # Positions in the pieces' string less 1 (its first "▁" is no character of the text).
            bounds = list(itertools.accumulate(map(len, words), initial=-1))
            ends = bounds[1:]
            starts = list(map(operator.add, bounds, map(self.space.__getitem__, piece_ids)))
            k, width = -1, 0 if self.cover_spaces else 1
            try:  # "▁" alone: empty once its space is cut (transformers: the next character)
                while True:
                    k = piece_ids.index(self.lone, k + 1)
                    ends[k] = starts[k] + width
            except ValueError:
                pass
            return starts, ends
        starts, ends, pos, n = [], [], 0, len(text)
        for word in words:
            body = word
            if word.startswith(SPACE):
                body = word[1:]
                start = pos
                while pos < n and text[pos].isspace():
                    pos += 1
                if pos == start and pos > 0:
                    return None  # a word boundary where the text has no whitespace
            if not text.startswith(body, pos) or any(c.isspace() for c in body):
                return None
            if not body and pos >= n:
                return None
            starts.append(pos)
            ends.append(pos + len(body) if body else pos + (0 if self.cover_spaces else 1))
            pos += len(body)
        if text[pos:].strip():
            return None
        return (starts, ends) if wanted else (None, None)


def _root_keys(pieces: list[str]):
    """Per piece id, a key shared by the pieces that are powers of one string ("I", "II", "III"),
    or -1 for a piece that commutes with no other piece."""
    import numpy as np

    roots = {}
    for i, piece in enumerate(pieces):
        n = len(piece)
        root = next((piece[:d] for d in range(1, n) if n % d == 0 and piece[:d] * (n // d) == piece), piece)
        roots.setdefault(root, []).append(i)
    keys = np.full(len(pieces), -1, dtype=np.int64)
    for key, ids in enumerate(roots.values()):
        if len(ids) > 1:
            keys[ids] = key
    return keys
