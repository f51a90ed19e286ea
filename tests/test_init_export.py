"""Initialization from XLM-R and export to transformers' LukeForMaskedLM / LukeModel / MLukeTokenizer,
on a stand-in tokenizer and tiny XLM-R built here (no downloads)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, LukeForMaskedLM, LukeModel, MLukeTokenizer, XLMRobertaForMaskedLM

from preprocessing.entity_vocab import hf_entity_vocab
from pretrain.export import export_model, init_model_dir
from pretrain.masking import MaskingCollator, hf_inputs
from pretrain.standin import build_standin_tokenizer, build_tiny_xlmr
from pretrain.weights import entity_vocab_size, load_exported

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "London is the capital of England and the United Kingdom.",
    "Berlin is the capital of Germany; Paris is the capital of France.",
    "ロンドンはイギリスの首都です。ベルリンはドイツの首都です。",
    "Londres est la capitale du Royaume-Uni.",
] * 20
ENTITIES = [  # id, [(title, lang)]
    (0, [["[PAD]", None]]), (1, [["[UNK]", None]]), (2, [["[MASK]", None]]),
    (3, [["London", "en"], ["ロンドン", "ja"], ["Londres", "fr"]]), (4, [["Berlin", "en"], ["ベルリン", "ja"]]),
    (5, [["England", "en"]]), (6, [["Germany", "en"]]), (7, [["Paris", "en"]]),
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("h4")
    tokenizer = build_standin_tokenizer(root / "tokenizer", TEXTS, vocab_size=150)
    xlmr = build_tiny_xlmr(root / "xlmr", tokenizer, hidden_size=32, num_layers=2, num_heads=4,
                           intermediate_size=64, max_position_embeddings=130)
    vocab = root / "entity_vocab.jsonl"
    vocab.write_text("".join(json.dumps({"id": i, "entities": e, "count": 1}) + "\n" for i, e in ENTITIES))
    return {"root": root, "tokenizer": tokenizer, "xlmr": xlmr, "entity_vocab": vocab}


def test_entity_vocab_forms(assets, tmp_path):
    mapping = hf_entity_vocab(assets["entity_vocab"])
    assert mapping["[PAD]"] == 0 and mapping["[UNK]"] == 1 and mapping["[MASK]"] == 2 and mapping["[MASK2]"] == 8
    assert mapping["en:London"] == mapping["ja:ロンドン"] == mapping["fr:Londres"] == 3
    assert entity_vocab_size(assets["entity_vocab"]) == 9
    (tmp_path / "entity_vocab.json").write_text(json.dumps(mapping))
    assert entity_vocab_size(tmp_path / "entity_vocab.json") == 9


def test_init_equals_xlmr_without_entities(assets, tmp_path):
    out = init_model_dir(str(assets["xlmr"]), assets["entity_vocab"], tmp_path / "init", seed=1)
    xlmr = XLMRobertaForMaskedLM.from_pretrained(assets["xlmr"]).eval()
    tok = AutoTokenizer.from_pretrained(assets["tokenizer"])
    enc = tok(TEXTS[:3], padding=True, return_tensors="pt")
    ours = load_exported(out).eval()
    assert ours.config.vocab_size == len(tok) and ours.config.entity_vocab_size == 9
    with torch.no_grad():
        ref = xlmr(**enc, output_hidden_states=True)
        words, entities = ours.encode(enc["input_ids"], enc["attention_mask"])
        logits = ours.lm_head(words)
        hf = LukeForMaskedLM.from_pretrained(out).eval()(**enc)
    assert entities is None
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(words[real], ref.hidden_states[-1][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(hf.logits[..., : len(tok)][real], ref.logits[real], atol=1e-5, rtol=0)
    # entity parts as the reference initializes them
    table = ours.luke.entity_embeddings.entity_embeddings.weight
    assert torch.equal(table[8], table[2])  # [MASK2] = [MASK]
    assert 0.01 < table[3:8].std() < 0.03  # normal(0, initializer_range)
    # as published: plain attention, so no entity-aware queries in the file
    assert json.loads((out / "config.json").read_text())["use_entity_aware_attention"] is False
    assert not [k for k in load_file(out / "model.safetensors") if "_query." in k]


def trained_like_model(assets):
    """An initialized model with every weight perturbed, standing in for a trained one."""
    from pretrain.weights import init_from_xlmr

    model = init_from_xlmr(str(assets["xlmr"]), 9, entity_emb_size=16, seed=2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        table = model.luke.entity_embeddings.entity_embeddings.weight
        table[8] = table[2]
        model.entity_predictions.bias[8] = model.entity_predictions.bias[2]  # as the export sets [MASK2]
    return model.eval()


def test_export_loads_in_transformers_and_matches(assets, tmp_path):
    model = trained_like_model(assets)
    out = export_model(model, tmp_path / "hf", tokenizer_dir=assets["tokenizer"], entity_vocab=assets["entity_vocab"],
                       max_entity_length=8, max_mention_length=6)
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                               "sentencepiece.bpe.model", "entity_vocab.json", "tokenizer_config.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "luke" and config["use_entity_aware_attention"] is False  # as published
    assert config["vocab_size"] == model.config.vocab_size + 2 and config["entity_vocab_size"] == 9

    # The tokenizer: XLM-R word ids, our entity ids for "lang:title" keys, mention positions.
    xlmr_tok = AutoTokenizer.from_pretrained(assets["tokenizer"])
    tok = MLukeTokenizer.from_pretrained(out)
    # Spans end before a space: MLukeTokenizer encodes the text between spans separately, each piece
    # with a leading "▁" (as the published mLUKE tokenizer does), so "London," would differ from XLM-R.
    text = "London is the capital of England and Berlin is the capital of Germany"
    names = ["London", "England", "Berlin", "Germany"]
    spans = [(text.index(n), text.index(n) + len(n)) for n in names]
    enc = tok(text, entities=["en:London", "en:England", "ja:ベルリン", "en:Nowhere"], entity_spans=spans,
              return_tensors="pt")
    assert enc["input_ids"][0].tolist() == xlmr_tok(text)["input_ids"]
    assert enc["entity_ids"][0].tolist() == [3, 5, 4, 1]  # shared id across languages; unknown -> [UNK]
    offsets = xlmr_tok(text, return_offsets_mapping=True)["offset_mapping"]
    for (start, end), positions in zip(spans, enc["entity_position_ids"][0].tolist()):
        expected = [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]
        assert [p for p in positions if p != -1] == expected

    # HF models on the tokenizer's encoding equal ours (entity-aware queries are copies of `query`).
    hf = LukeForMaskedLM.from_pretrained(out).eval()
    base = LukeModel.from_pretrained(out).eval()
    with torch.no_grad():
        ref = hf(**enc)
        ref_base = base(**enc)
        words, entities = model.encode(**enc)
    torch.testing.assert_close(ref.logits[..., : model.config.vocab_size], model.lm_head(words), atol=1e-5, rtol=0)
    torch.testing.assert_close(ref.entity_logits, model.entity_predictions(entities), atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_base.last_hidden_state, words, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref_base.entity_last_hidden_state, entities, atol=1e-5, rtol=0)

    # And on a masked pretraining batch, losses included.
    rows = [{"word_ids": xlmr_tok(t)["input_ids"], "entity_ids": [3, 5], "entity_spans": [[1, 3], [6, 8]]}
            for t in TEXTS[:3]]
    batch = MaskingCollator.from_tokenizer(xlmr_tok, max_mention_length=6)(rows, generator=0)
    with torch.no_grad():
        ours_out = model(batch)
        inputs = hf_inputs(batch)
        ref = hf(**{k: v for k, v in inputs.items() if k != "labels"})
    torch.testing.assert_close(ref.mep_loss, ours_out.loss_mep, atol=1e-5, rtol=0)
    hf_word = ref.logits.view(-1, config["vocab_size"])[batch["mlm_positions"], : model.config.vocab_size]
    torch.testing.assert_close(torch.nn.functional.cross_entropy(hf_word, batch["mlm_labels"]), ours_out.loss_mlm,
                               atol=1e-5, rtol=0)

    # [MASK2] starts as [MASK]: embedding and prediction bias (HF's conversion copies both).
    bias = model.entity_predictions.bias.detach().clone()
    with torch.no_grad():
        model.entity_predictions.bias[8] = 1.0
    weights = load_file(export_model(model, tmp_path / "mask2", tokenizer_dir=assets["tokenizer"],
                                     entity_vocab=assets["entity_vocab"]) / "model.safetensors")
    with torch.no_grad():
        model.entity_predictions.bias.copy_(bias)
    for key in ("luke.entity_embeddings.entity_embeddings.weight", "entity_predictions.bias"):
        assert torch.equal(weights[key][8], weights[key][2]), key
    # Reading the export back gives the same model (marker rows dropped).
    again = load_exported(out)
    assert again.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k

    # Entity-aware attention on request (fine-tuning experiments): its queries start as copies of `query`,
    # so the model computes the same function.
    aware = export_model(model, tmp_path / "aware", tokenizer_dir=assets["tokenizer"],
                         entity_vocab=assets["entity_vocab"], entity_aware_attention=True)
    assert json.loads((aware / "config.json").read_text())["use_entity_aware_attention"] is True
    aware_weights = load_file(aware / "model.safetensors")
    for i in range(model.config.num_hidden_layers):
        prefix = f"luke.encoder.layer.{i}.attention.self."
        for q in ("w2e_query", "e2w_query", "e2e_query"):
            assert torch.equal(aware_weights[prefix + q + ".weight"], aware_weights[prefix + "query.weight"])
    with torch.no_grad():
        torch.testing.assert_close(LukeForMaskedLM.from_pretrained(aware).eval()(**enc).logits,
                                   LukeForMaskedLM.from_pretrained(out).eval()(**enc).logits, atol=1e-5, rtol=0)
    assert torch.equal(load_exported(aware, use_entity_aware_attention=False).state_dict()["lm_head.bias"],
                       model.state_dict()["lm_head.bias"])


def test_export_cli_and_errors(assets, tmp_path):
    model = trained_like_model(assets)
    first = export_model(model, tmp_path / "a", tokenizer_dir=assets["tokenizer"], entity_vocab=assets["entity_vocab"])
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "export.py"), f"checkpoint={first}", f"out={tmp_path / 'b'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    a, b = load_file(first / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "entity_vocab.json").read_text() == (tmp_path / "b" / "entity_vocab.json").read_text()
    tokenizer_config = json.loads((tmp_path / "b" / "tokenizer_config.json").read_text())
    assert (tokenizer_config["max_entity_length"], tokenizer_config["max_mention_length"]) == (32, 30)  # published

    bad = tmp_path / "small_vocab.jsonl"
    bad.write_text("".join(json.dumps({"id": i, "entities": e, "count": 1}) + "\n" for i, e in ENTITIES[:5]))
    with pytest.raises(ValueError, match="entity vocabulary has 6 ids"):
        export_model(model, tmp_path / "c", tokenizer_dir=assets["tokenizer"], entity_vocab=bad)
    assert not (tmp_path / "c").exists()
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "export.py"), "checkpoint=x"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode != 0 and "missing required argument(s): out=..." in result.stderr


def test_collator_from_tokenizer(assets):
    tok = AutoTokenizer.from_pretrained(assets["tokenizer"])
    collator = MaskingCollator.from_tokenizer(tok, whole_word=True)
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    assert collator.word_start.tolist() == [t.startswith("\u2581") for t in tokens]
    assert collator.mask_token_id == tok.mask_token_id and collator.pad_token_id == tok.pad_token_id
    assert set(collator.special_token_ids.tolist()) == set(tok.all_special_ids)
    rows = [{"word_ids": tok(t)["input_ids"], "entity_ids": [], "entity_spans": []} for t in TEXTS[:8]]
    batch = collator(rows, generator=0)
    chosen = batch["input_ids"].view(-1)[batch["mlm_positions"]]
    assert len(chosen) > 0 and not torch.isin(batch["mlm_labels"], collator.special_token_ids).any()
