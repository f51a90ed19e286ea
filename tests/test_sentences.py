"""ICU sentence spans: exact character offsets per script, and no boundary inside a link."""

import multiprocessing

import pytest
from icu4py.breakers import SentenceBreaker

from preprocessing.config import LANGUAGES
from preprocessing.sentences import _locale, sentence_spans, sentence_spans_many


def sentences(text, lang, links=()):
    return [text[a:b] for a, b in sentence_spans(text, lang, links)]


@pytest.mark.parametrize("lang, text, expected", [
    ("en", "Berlin is a city. It is in Germany! Is it big? Yes.",
     ["Berlin is a city.", "It is in Germany!", "Is it big?", "Yes."]),
    ("ja", "東京は日本の首都です。大阪は都市です。京都も！",
     ["東京は日本の首都です。", "大阪は都市です。", "京都も！"]),
    ("zh", "北京是中国的首都。上海是城市！你好吗？",
     ["北京是中国的首都。", "上海是城市！", "你好吗？"]),
    ("hi", "नई दिल्ली भारत की राजधानी है। मुंबई एक शहर है।",
     ["नई दिल्ली भारत की राजधानी है।", "मुंबई एक शहर है।"]),
    ("ar", "القاهرة هي عاصمة مصر. هل هي كبيرة؟ نعم",
     ["القاهرة هي عاصمة مصر.", "هل هي كبيرة؟", "نعم"]),
    # ICU has no Thai sentence rules: spaces inside a Thai paragraph are not boundaries.
    ("th", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่ใหญ่ที่สุด ประเทศไทยอยู่ในเอเชียตะวันออกเฉียงใต้และมีประชากรมากกว่าหกสิบล้านคน",
     # ICU has no Thai rules; a space is Thai's sentence delimiter.
     ["กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่ใหญ่ที่สุด",
      "ประเทศไทยอยู่ในเอเชียตะวันออกเฉียงใต้และมีประชากรมากกว่าหกสิบล้านคน"]),
])
def test_sentences_per_script(lang, text, expected):
    assert sentences(text, lang) == expected


def test_spans_are_exact_offsets_without_surrounding_whitespace():
    text = "  First one.\nSecond one.   Third.  "
    assert sentence_spans(text, "en") == [(2, 12), (13, 24), (27, 33)]
    assert sentence_spans("", "en") == [] and sentence_spans(" \n ", "en") == []


def test_offsets_count_code_points_after_non_bmp_characters():
    # ICU counts UTF-16 units; an emoji is two of them but one Python character.
    text = "I like 😀 a lot. 𠮷野家 is a shop. End."
    assert sentences(text, "en") == ["I like 😀 a lot.", "𠮷野家 is a shop.", "End."]


def test_abbreviations_are_not_boundaries_where_icu_knows_them():
    assert sentences("Mr. Smith went to Washington. He left.", "en") == [
        "Mr. Smith went to Washington.", "He left."]


def test_no_boundary_inside_a_link():
    text = "He met Dr. Jones there. Then he left. Fine."
    assert sentences(text, "en") == ["He met Dr.", "Jones there.", "Then he left.", "Fine."]
    dr_jones = (7, 16, "Dr. Jones")
    assert text[7:16] == "Dr. Jones"
    assert sentences(text, "en", [dr_jones]) == ["He met Dr. Jones there.", "Then he left.", "Fine."]
    # A link spanning several boundaries merges all the sentences it touches.
    assert sentences(text, "en", [(8, 28)]) == ["He met Dr. Jones there. Then he left.", "Fine."]
    # Links ending or starting exactly at a boundary change nothing.
    assert sentences(text, "en", [(0, 10), (24, 37)]) == sentences(text, "en")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_splits(lang):
    text = "One two three. Four five six."
    assert sentence_spans(text, lang) == [(0, 14), (15, 29)]


def test_thai_space_boundaries_respect_links_and_keep_short_clauses_together():
    clause = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย" * 2  # 76 characters
    text = " ".join([clause, clause, clause])
    assert sentence_spans(text, "th") == [(0, 76), (77, 153), (154, 230)]
    assert sentence_spans(text, "th", [(0, 100)]) == [(0, 153), (154, 230)]
    # Short pieces (a word, a list item) join their neighbours instead of becoming sentences
    # too short to keep.
    text = " ".join([clause, "และ", clause, "ใหญ่"])
    assert sentence_spans(text, "th") == [(0, 76), (77, len(text))]


def _split_in_worker(args):
    return sentence_spans(*args)


def test_usable_in_worker_processes():
    jobs = [("東京です。大阪です。", "ja"), ("One. Two.", "en")]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_split_in_worker, jobs) == [[(0, 5), (5, 10)], [(0, 4), (5, 9)]]


def _alone(text, lang):
    """ICU on one paragraph by itself, whitespace stripped: what the batched call must match."""
    spans, pos = [], 0
    for sentence in SentenceBreaker(text, _locale(lang)):
        if sentence.strip():
            start = pos + len(sentence) - len(sentence.lstrip())
            spans.append((start, start + len(sentence.strip())))
        pos += len(sentence)
    return spans


@pytest.mark.parametrize("lang", ["en", "ja", "zh", "hi", "ar"])
def test_many_paragraphs_split_as_one_by_one(lang):
    texts = ["Mr. Smith left. Then he came back", "lowercase start. and more. ", "", "東京です。大阪です",
             "ends with CR.\r", "ends with LF.\n", "inner\nline feed. x", "😀 emoji. 𠮷 after.", "U.S. citizens."]
    assert sentence_spans_many(texts, lang) == [_alone(t, lang) for t in texts]
    links = [[(4, 12)], [], [], [], [], [], [], [], []]
    assert sentence_spans_many(texts, lang, links)[0] == sentence_spans(texts[0], lang, links[0])
