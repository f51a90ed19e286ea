"""The stand-in tokenizer must behave exactly like XLM-R's: fairseq ids and character offsets."""

import pytest
import sentencepiece as spm
import torch
from transformers import AutoTokenizer, XLMRobertaForMaskedLM, XLMRobertaTokenizer

from pretrain.standin import SPM_FILE, build_standin_tokenizer, build_tiny_xlmr

TEXTS = [
    "Berlin is the capital and largest city of Germany.",
    "Paris is the capital of France, and London is the capital of England.",
    "東京は日本の首都です。大阪は日本の都市です。",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "नई दिल्ली भारत की राजधानी है।",
    "القاهرة هي عاصمة مصر.",
    "北京是中华人民共和国的首都。",
    "Москва — столица России.",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_standin_tokenizer(tmp_path_factory.mktemp("tok"), TEXTS * 3, vocab_size=300)


def _xlmr_ids(sp, text):
    """XLM-R's slow-tokenizer rule: <s> + (piece id + 1, with sentencepiece <unk> -> 3) + </s>."""
    return [0] + [3 if i == sp.unk_id() else i + 1 for i in sp.encode(text)] + [2]


@pytest.mark.parametrize("loader", [AutoTokenizer, XLMRobertaTokenizer])
def test_ids_match_sentencepiece_with_fairseq_offset(tok_dir, loader):
    tok = loader.from_pretrained(tok_dir)
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / SPM_FILE))
    assert tok.is_fast
    assert len(tok) == sp.get_piece_size() + 2
    assert len(tok) <= 300
    for text in TEXTS + ["Unseen: Zürich ☃ and 😀."]:
        assert tok(text)["input_ids"] == _xlmr_ids(sp, text), text


def test_special_tokens(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == len(tok) - 1
    assert tok.convert_ids_to_tokens(len(tok) - 1) == "<mask>"
    assert tok("☃")["input_ids"][-2] == 3  # a character never seen in training is <unk>


def test_offsets_point_at_the_characters_of_each_piece(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for text in TEXTS:
        enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
        pieces = tok.convert_ids_to_tokens(enc["input_ids"])
        assert "".join(pieces).replace("▁", " ").strip() == text
        for piece, (start, end) in zip(pieces, enc["offset_mapping"]):
            if piece == "▁":  # a lone word-boundary marker is aligned to the next character
                assert end == start + 1 and text[start] != " "
            else:
                assert text[start:end] == piece.lstrip("▁")


def test_tiny_xlmr_loads_offline_and_is_seeded(tok_dir, tmp_path):
    a = build_tiny_xlmr(tmp_path / "a", tok_dir, seed=0)
    b = build_tiny_xlmr(tmp_path / "b", tok_dir, seed=0)
    model = XLMRobertaForMaskedLM.from_pretrained(a)
    tok = AutoTokenizer.from_pretrained(a)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (32, 2, 2, 64)
    assert cfg.vocab_size == len(tok) and cfg.pad_token_id == 1 and cfg.max_position_embeddings == 514
    assert (a / SPM_FILE).exists()
    enc = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (2, enc["input_ids"].shape[1], len(tok))
    other = XLMRobertaForMaskedLM.from_pretrained(b).state_dict()
    assert all(torch.equal(v, other[k]) for k, v in model.state_dict().items())


def test_same_texts_give_the_same_tokenizer(tok_dir, tmp_path):
    again = build_standin_tokenizer(tmp_path / "again", TEXTS * 3, vocab_size=300)
    for name in (SPM_FILE, "tokenizer.json"):
        assert (again / name).read_bytes() == (tok_dir / name).read_bytes()


def test_too_small_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=20"):
        build_standin_tokenizer(tmp_path / "small", TEXTS, vocab_size=20)
