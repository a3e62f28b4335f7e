"""hfkit.tasks against the transformers pipelines, on tiny seeded random models saved locally (BERT with the
MiniLM tokenizer, RoBERTa with a byte-level BPE trained here; see `dirs` in conftest.py): text and token
classification, fill-mask, question answering and `pipeline`. Every task runs on transformers and on hfkit
models/tokenizers loaded from the same folders. Sentence embeddings are in test_embeddings.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers

from hfkit.tasks import TaskInputError, answer, classify, fill_mask, pipeline, tag

from .conftest import (
    EMBED_TEXTS,
    IMPLS,
    LONG_TEXT,
    SENTENCES,
    _load,
    _sentence_transformer,
    packaged_minilm,
)

MINILM = packaged_minilm()

pytestmark = pytest.mark.usefixtures("one_thread")


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
