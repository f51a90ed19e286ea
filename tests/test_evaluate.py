"""Cloze evaluation: exact scores on an exported tiny mLUKE whose predictions are constructed, the
exact inputs it is given, the fact file format, and the mLAMA / X-FACTR converters."""

import json

import pytest
import torch
from transformers import LukeConfig, LukeForMaskedLM, MLukeTokenizer

from pretrain.evaluation.cloze import entity_key, evaluate, format_table
from pretrain.evaluation.facts import (
    Entity,
    Fact,
    Facts,
    FactsError,
    convert_mlama,
    convert_xfactr,
    load_facts,
    write_facts,
)
from pretrain.export import export_model
from pretrain.model import MLukeForPretraining
from pretrain.standin import build_standin_tokenizer

EN = {"Q183": "Germany", "Q64": "Berlin", "Q142": "France", "Q90": "Paris", "Q17": "Japan", "Q1490": "Tokyo",
      "Q38": "Italy", "Q220": "Rome", "Q668": "India", "Q987": "New Delhi"}
JA = {"Q183": "ドイツ", "Q64": "ベルリン", "Q142": "フランス", "Q90": "パリ", "Q17": "日本", "Q1490": "東京",
      "Q38": "イタリア", "Q220": "ローマ", "Q668": "インド", "Q987": "ニューデリー"}
DE = {"Q183": "Deutschland", "Q64": "Berlin", "Q142": "Frankreich", "Q90": "Paris"}
TEMPLATES = {"en": "The capital of [X] is [Y].", "ja": "[X]の首都は[Y]です。", "de": "Die Hauptstadt von [X] ist [Y]."}
CAPITALS = [("Q183", "Q64"), ("Q142", "Q90"), ("Q17", "Q1490"), ("Q38", "Q220"), ("Q668", "Q987")]
# Entity vocabulary: Italy (a subject) and New Delhi (an object) are missing; ja titles only for
# Paris and Tokyo, so the other ja prompts find their entities through the en titles.
ENTITY_VOCAB = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "en:Germany": 3, "en:Berlin": 4, "en:France": 5,
                "en:Paris": 6, "ja:パリ": 6, "en:Japan": 7, "en:Tokyo": 8, "ja:東京": 8, "en:India": 9,
                "en:Rome": 10, "[MASK2]": 11}
# Entity logits are these biases exactly (the entity embeddings, tied to the decoder, are zero):
# Germany is the top entity but never a candidate object; Tokyo wins wherever it is a candidate.
ENTITY_BIAS = {3: 10.0, 8: 5.0, 6: 3.0}


def sample_facts() -> Facts:
    facts = Facts()
    facts.templates = {("P36", lang): t for lang, t in TEMPLATES.items()}
    facts.entities = {q: Entity(q, {"en": EN[q], "ja": JA[q], **({"de": DE[q]} if q in DE else {})}) for q in EN}
    facts.facts = [Fact("P36", s, o) for s, o in CAPITALS]
    return facts


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    words = list(EN.values()) + list(JA.values()) + list(DE.values())
    texts = [t.replace("[X]", s).replace("[Y]", o) for t in TEMPLATES.values() for s in words for o in words[:4]]
    return build_standin_tokenizer(tmp_path_factory.mktemp("tok"), texts + words * 20, vocab_size=300)


def word_ids(tok, text, word_start=True):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ids if word_start or tok.convert_ids_to_tokens(ids[0]) != "▁" else ids[1:]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer_dir):
    """An exported tiny mLUKE whose word logits are the lm_head bias and entity logits the entity bias.

    Word biases: 12 on each of the k >= 2 tokens of "New Delhi", 11.5 on the one token of "Paris", 4 on
    the tokens of ja "東京" (in context: no '▁'), 0 elsewhere. With almost all probability on those
    tokens, New Delhi has the higher mean log-probability per token and Paris the higher sum (mLAMA
    and mLUKE rank by the mean)."""
    from transformers import AutoTokenizer

    xlmr = AutoTokenizer.from_pretrained(tokenizer_dir)
    paris, delhi, tokyo = word_ids(xlmr, "Paris"), word_ids(xlmr, "New Delhi"), word_ids(xlmr, "東京", False)
    assert len(paris) == 1 and len(delhi) >= 2 and not set(delhi) & set(paris), (paris, delhi)
    others = {i for q in EN if q not in ("Q90", "Q987") for i in word_ids(xlmr, EN[q])}
    others |= {i for q in JA if q != "Q1490" for i in word_ids(xlmr, JA[q], False)}
    assert not (set(paris) | set(delhi) | set(tokyo)) & others  # no other candidate gets a bias

    config = LukeConfig(vocab_size=len(xlmr), entity_vocab_size=len(set(ENTITY_VOCAB.values())), hidden_size=16,
                        entity_emb_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, use_entity_aware_attention=False)
    torch.manual_seed(0)
    model = MLukeForPretraining(config)
    state = model.state_dict()
    state["luke.embeddings.word_embeddings.weight"].zero_()  # tied to the word decoder
    state["luke.entity_embeddings.entity_embeddings.weight"].zero_()  # tied to the entity decoder
    bias = torch.zeros(len(xlmr))
    bias[delhi] = 12.0
    bias[paris] = 11.5
    bias[tokyo] = 4.0
    state["lm_head.decoder.bias"].copy_(bias)
    state["lm_head.bias"].copy_(bias)
    entity_bias = torch.zeros(config.entity_vocab_size)
    for i, b in ENTITY_BIAS.items():
        entity_bias[i] = b
    state["entity_predictions.bias"].copy_(entity_bias)
    model.load_state_dict(state)
    vocab_file = tmp_path_factory.mktemp("vocab") / "entity_vocab.json"
    vocab_file.write_text(json.dumps(ENTITY_VOCAB, ensure_ascii=False))
    out = export_model(model, tmp_path_factory.mktemp("export") / "hf", tokenizer_dir=tokenizer_dir,
                       entity_vocab=vocab_file)
    return out


@pytest.fixture(scope="module")
def loaded(exported):
    return LukeForMaskedLM.from_pretrained(str(exported)), MLukeTokenizer.from_pretrained(str(exported))


def test_exact_scores(loaded):
    model, tok = loaded
    results = evaluate(model, tok, sample_facts(), device="cpu", predictions=True)
    # word: New Delhi wins every en prompt, 東京 every ja prompt, Paris both de prompts (de has labels
    # for two facts only); entity: Tokyo wins en and ja, Paris in de, where Tokyo is no candidate
    by_lang = {}
    for p in results["predictions"]:
        by_lang.setdefault(p["language"], []).append((p["subject"], p["word"], p["entity"]))
    assert by_lang == {
        "en": [("Q183", "New Delhi", "Q1490"), ("Q142", "New Delhi", "Q1490"), ("Q17", "New Delhi", "Q1490"),
               ("Q38", "New Delhi", None), ("Q668", "New Delhi", None)],
        "ja": [("Q183", "東京", "Q1490"), ("Q142", "東京", "Q1490"), ("Q17", "東京", "Q1490"),
               ("Q38", "東京", None), ("Q668", "東京", None)],
        "de": [("Q183", "Paris", "Q90"), ("Q142", "Paris", "Q90")],
    }
    assert results["counts"] == {
        "word": {"de": {"correct": 1, "total": 2}, "en": {"correct": 1, "total": 5},
                 "ja": {"correct": 1, "total": 5}},
        "entity": {"de": {"correct": 1, "total": 2}, "en": {"correct": 1, "total": 3},
                   "ja": {"correct": 1, "total": 3}},
    }
    assert results["word"] == {"de": 0.5, "en": 0.2, "ja": 0.2}
    assert results["entity"] == {"de": 0.5, "en": 1 / 3, "ja": 1 / 3}
    assert results["skipped"] == {
        "de": {"no_label": 3},
        "en": {"object_not_in_entity_vocab": 1, "subject_not_in_entity_vocab": 1},
        "ja": {"object_not_in_entity_vocab": 1, "subject_not_in_entity_vocab": 1},
    }
    assert results["relations"]["en"] == {"P36": {"word": [1, 5], "entity": [1, 3]}}
    table = format_table(results).splitlines()
    assert table[0].split() == ["lang", "word", "prompts", "entity", "prompts", "skipped"]
    assert table[2].split()[:5] == ["en", "20.0%", "(1/5)", "33.3%", "(1/3)"]
    assert table[-1].split() == ["all", "25.0%", "(3/12)", "37.5%", "(3/8)"]


def test_languages_and_per_fact_languages(loaded):
    model, tok = loaded
    facts = sample_facts()
    facts.facts[2] = Fact("P36", "Q17", "Q1490", frozenset({"ja"}))  # Japan->Tokyo asked in ja only
    results = evaluate(model, tok, facts, languages=["en"], device="cpu")
    assert set(results["counts"]["word"]) == {"en"}
    assert results["counts"]["word"]["en"] == {"correct": 1, "total": 4}  # New Delhi still wins
    # Tokyo is no longer an en candidate, so Paris (bias 3) wins the entity prompts
    assert results["counts"]["entity"]["en"] == {"correct": 1, "total": 2}


def test_object_before_subject(loaded):
    model, tok = loaded
    facts = sample_facts()
    facts.templates[("P36", "de")] = "[Y] ist die Hauptstadt von [X]."
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    try:
        results = evaluate(model, tok, facts, languages=["de"], batch_size=64, device="cpu", predictions=True)
    finally:
        hook.remove()
    assert [(p["subject"], p["word"], p["entity"]) for p in results["predictions"]] == [
        ("Q183", "Paris", "Q90"), ("Q142", "Paris", "Q90")]
    entity_call = calls[-1]
    ids = entity_call["input_ids"][0].tolist()
    subject, mask = ([p for p in span if p >= 0] for span in entity_call["entity_position_ids"][0].tolist())
    assert tok.decode([ids[p] for p in subject]).strip() == "Deutschland"
    assert ids[mask[-1]] == tok.mask_token_id and mask[-1] < subject[0]


def test_model_inputs(loaded):
    """Word prompts: one input per candidate length, masks at [Y], pieces tokenized as mLUKE's
    mLAMA code does; entity prompts: subject entity on [X], [MASK] entity on the <mask> at [Y]."""
    model, tok = loaded
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    facts = sample_facts()
    facts.facts = [Fact("P36", "Q183", "Q64")]
    try:
        evaluate(model, tok, facts, languages=["ja"], batch_size=64, device="cpu")
    finally:
        hook.remove()
    word_call, entity_call = calls
    lengths = sorted({len(word_ids(tok, JA["Q64"], False))})  # the only candidate: ベルリン
    m = tok.mask_token_id
    expected = ([tok.cls_token_id] + word_ids(tok, "ドイツ") + word_ids(tok, "の首都は", False) + [m] * lengths[0]
                + word_ids(tok, "です。", False) + [tok.sep_token_id])
    assert word_call["input_ids"].tolist() == [expected]
    assert entity_call["entity_ids"].tolist() == [[ENTITY_VOCAB["en:Germany"], ENTITY_VOCAB["[MASK]"]]]
    ids = entity_call["input_ids"][0].tolist()
    positions = entity_call["entity_position_ids"][0].tolist()
    subject = [p for p in positions[0] if p >= 0]
    mask = [p for p in positions[1] if p >= 0]
    assert tok.decode([ids[p] for p in subject]).strip() == "ドイツ"
    assert ids[mask[-1]] == m and ids.count(m) == 1


def test_entity_key_falls_back_to_other_languages():
    vocab = {"en:Tokyo": 8, "ja:東京都": 9}
    tokyo = Entity("Q1490", {"en": "Tokyo", "ja": "東京", "de": "Tokio"}, {"ja": "東京都"})
    assert entity_key(tokyo, "ja", vocab) == "ja:東京都"  # titles win over labels
    assert entity_key(tokyo, "de", vocab) == "en:Tokyo"
    assert entity_key(Entity("Q1", {"en": "Nowhere"}), "en", vocab) is None


def test_fact_file_round_trip_and_errors(tmp_path):
    facts = sample_facts()
    facts.entities["Q1490"].titles = {"ja": "東京都"}
    facts.facts.append(Fact("P36", "Q183", "Q64", frozenset({"de", "en"})))
    path = tmp_path / "facts.jsonl"
    write_facts(path, facts)
    again = load_facts(path)
    assert again == facts
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1]) == {
        "type": "fact", "relation": "P36", "subject": "Q183", "object": "Q64", "languages": ["de", "en"]}

    bad = tmp_path / "bad.jsonl"
    for line, message in [
        ('{"type": "template", "relation": "P36", "language": "en", "template": "[X] is [X]."}', "bad.jsonl:1: template"),
        ('{"type": "entity", "id": "Q1", "labels": {"en": 3}}', "bad.jsonl:1: 'labels'"),
        ('{"type": "fact", "relation": "P36", "subject": "Q1"}', "bad.jsonl:1: missing or non-string field(s) object"),
        ('{"type": "thing"}', "bad.jsonl:1: 'type'"),
        ("not json", "bad.jsonl:1: not JSON"),
        ('{"type": "fact", "relation": "P36", "subject": "Q1", "object": "Q2"}', "refers to Q1"),
    ]:
        bad.write_text(line + "\n")
        with pytest.raises(FactsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_facts(bad)


def test_sample_facts_file_loads():
    from pathlib import Path

    facts = load_facts(Path(__file__).resolve().parents[1] / "sample" / "facts-sample.jsonl")
    assert facts.languages == ["ar", "de", "en", "fr", "hi", "ja", "th"]
    assert len(facts.facts) == 8 and len(facts.templates) == 14
    assert facts.entities["Q1490"].title("ja") == "東京都" and facts.entities["Q1490"].labels["ja"] == "東京"


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_convert_mlama(tmp_path):
    root = tmp_path / "mlama1.1"
    _jsonl(root / "en" / "templates.jsonl", [
        {"relation": "P36", "template": "The capital of [X] is [Y] .", "label": "capital"},
        {"relation": "P19", "template": "[X] was born in [Y] ."}])
    _jsonl(root / "en" / "P36.jsonl", [
        {"sub_uri": "Q183", "obj_uri": "Q64", "sub_label": "Germany", "obj_label": "Berlin", "uuid": "a"},
        {"sub_uri": "Q17", "obj_uri": "Q1490", "sub_label": "Japan", "obj_label": "Tokyo"}])
    _jsonl(root / "ja" / "templates.jsonl", [{"relation": "P36", "template": "[X] の首都は [Y] です 。"}])
    _jsonl(root / "ja" / "P36.jsonl", [{"sub_uri": "Q183", "obj_uri": "Q64", "sub_label": "ドイツ", "obj_label": "ベルリン"}])
    facts, stats = convert_mlama(root)
    assert facts.templates == {("P36", "en"): "The capital of [X] is [Y] .", ("P36", "ja"): "[X] の首都は [Y] です 。"}
    assert facts.entities["Q64"] == Entity("Q64", {"en": "Berlin", "ja": "ベルリン"})
    assert facts.facts == [Fact("P36", "Q183", "Q64", frozenset({"en", "ja"})),
                           Fact("P36", "Q17", "Q1490", frozenset({"en"}))]
    assert stats == {"templates": 2, "entities": 4, "facts": 2, "skipped": {"template_without_facts_file": 1}}
    out = tmp_path / "facts.jsonl"
    write_facts(out, facts)
    assert load_facts(out) == facts
    only_ja, _ = convert_mlama(root, languages=["ja"])
    assert only_ja.facts == [Fact("P36", "Q183", "Q64", frozenset({"ja"}))]

    _jsonl(root / "en" / "P36.jsonl", [{"sub_uri": "Q183", "obj_uri": "Q64"}])
    with pytest.raises(FactsError, match=r"P36.jsonl:1: needs sub_uri"):
        convert_mlama(root)
    with pytest.raises(FactsError, match="no <lang>/templates.jsonl"):
        convert_mlama(tmp_path / "nowhere")


def test_convert_xfactr_and_cli(tmp_path, loaded, exported):
    data = tmp_path / "X-FACTR" / "data"
    (data / "mTRExf" / "sub").mkdir(parents=True)
    (data / "TREx_prompts.csv").write_text(
        "pid,relation,en,ja,fr\n"
        "P36,capital,The capital of [X] is [Y] .,[X]の首都は[Y]です。,La capitale [PREPDEF;X] [X] est [Y] .\n"
        "P19,place of birth,[X] was born in [Y] .,,\n", encoding="utf-8")
    _jsonl(data / "mTRExf" / "sub" / "P36.jsonl", [
        {"uuid": "u1", "predicate_id": "P36", "sub_uri": "Q183", "sub_label": "Germany", "obj_uri": "Q64",
         "obj_label": "Berlin", "count": 3},
        {"uuid": "u2", "predicate_id": "P36", "sub_uri": "Q142", "sub_label": "France", "obj_uri": "Q90",
         "obj_label": "Paris", "count": 2}])
    (data / "mTRExf_unicode_escape.txt").write_text(
        'Q183\t"Germany"@en\t"ドイツ"@ja\t"Allemagne"@fr\n'
        'Q64\t"Berlin"@en\t"ベルリン"@ja\n'
        'Q142\t"France"@en\t"フランス"@ja\n'
        'Q90\t"Paris"@en\n', encoding="utf-8")
    facts, stats = convert_xfactr(tmp_path / "X-FACTR")
    assert facts.templates == {("P36", "en"): "The capital of [X] is [Y] .", ("P36", "ja"): "[X]の首都は[Y]です。",
                               ("P19", "en"): "[X] was born in [Y] ."}
    assert facts.facts == [Fact("P36", "Q183", "Q64", frozenset({"en", "ja"})),
                           Fact("P36", "Q142", "Q90", frozenset({"en"}))]
    assert facts.entities["Q183"].labels == {"en": "Germany", "ja": "ドイツ"}
    assert stats["skipped"] == {"template_with_inflection_markup": 1, "relation_without_facts_file": 1,
                                "fact_without_label_in_language": 1}

    from launch.convert_facts import main as convert_main
    from launch.evaluate import main as evaluate_main

    facts_file, results_file = tmp_path / "xfactr.jsonl", tmp_path / "out" / "results.json"
    assert convert_main(["source=xfactr", f"root={tmp_path / 'X-FACTR'}", f"out={facts_file}"]) == 0
    assert load_facts(facts_file) == facts
    assert evaluate_main([f"model={exported}", f"facts={facts_file}", f"out={results_file}", "languages=en"]) == 0
    results = json.loads(results_file.read_text(encoding="utf-8"))
    # en candidates Berlin and Paris: Paris wins both prompt kinds
    assert results["counts"]["word"]["en"] == {"correct": 1, "total": 2}
    assert results["entity"] == {"en": 0.5}
    assert results["model"] == str(exported.resolve())
    assert evaluate_main([f"model={exported}", f"facts={facts_file}", "languages=xx"]) == 1
