"""Training rows in (lists, files, `datasets.Dataset`) and their tokenized features per task.

Featurizers follow transformers' example scripts: run_glue (classify), run_ner `tokenize_and_align_labels`
(ner), run_qa `prepare_train_features` (qa), run_mlm line by line (mlm) and run_clm `group_texts` (causal-lm).
Features are python lists and ints; collate.py pads them into tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend

from ..errors import ConfigError

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}  # suffix → datasets builder
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
IGNORE = -100  # the label cross-entropy skips


# --- rows ------------------------------------------------------------------------------------------------
def load_rows(source: Any, columns: dict[str, str] | None = None) -> Sequence[dict]:
    """Rows with canonical keys from a list of dicts, a .jsonl/.json/.csv/.parquet path or a `datasets.Dataset`.

    `columns` maps canonical names to the data's column names, e.g. `{"text": "sentence", "label": "y"}`;
    other columns are kept as they are. Files give a `datasets.Dataset` (a sequence of dicts)."""
    if isinstance(source, (str, os.PathLike)):
        rows, where = _load_file(Path(source)), str(source)
    elif isinstance(source, dict):
        raise ConfigError(f"Got a mapping with keys {list(source)[:5]}, not rows. Fix: pass one split, e.g. "
                          f"dataset['train'], or a list of dicts.")
    elif hasattr(source, "column_names") and hasattr(source, "rename_columns"):
        rows, where = source, "the dataset"
    elif isinstance(source, Sequence) and all(isinstance(row, dict) for row in source):
        rows, where = source, "the rows"
    else:
        raise ConfigError(f"Cannot read training rows from {type(source).__name__}. Fix: pass a list of dicts, "
                          f"a path to a {'/'.join(FORMATS)} file or a datasets.Dataset.")
    return _rename(rows, columns, where) if columns else rows


def _load_file(path: Path):
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise ConfigError(f"Unsupported data file {path}: use one of {', '.join(FORMATS)}.")
    if not path.is_file():
        raise ConfigError(f"Data file {path} does not exist. Fix: check the path (relative paths start at {Path.cwd()}).")
    try:
        import datasets
    except ImportError as err:
        raise ConfigError(f'Reading {path} needs the `datasets` library: pip install "hfkit[train]".') from err
    return datasets.load_dataset(builder, data_files=str(path), split="train")


def _rename(rows, columns: dict[str, str], where: str):
    if hasattr(rows, "column_names"):
        _require(columns, rows.column_names, where)
        shadowed = [name for name in columns if name in rows.column_names and name not in columns.values()]
        rows = rows.remove_columns(shadowed) if shadowed else rows
        renames = {column: name for name, column in columns.items() if column != name}
        return rows.rename_columns(renames) if renames else rows
    for index, row in enumerate(rows):
        _require(columns, row, f"row {index} of {where}")
    sources = set(columns.values())
    return [{**{k: v for k, v in row.items() if k not in sources}, **{n: row[c] for n, c in columns.items()}}
            for row in rows]


def _require(columns: dict[str, str], present, where: str) -> None:
    missing = [f"{column!r} (for {name!r})" for name, column in columns.items() if column not in present]
    if missing:
        raise ConfigError(f"Column {', '.join(missing)} not found in {where}; its columns: {', '.join(present)}. "
                          f"Fix: map each canonical name to one of those in columns={{...}}.")


def column(rows: Sequence[dict], key: str, task: str) -> list:
    """The `key` value of every row; a clear error naming the first row without it."""
    values = []
    for index, row in enumerate(rows):
        if key not in row:
            raise ConfigError(f"Row {index} has no {key!r}, which {task} needs (it has: {', '.join(row)}). Fix: "
                              f"rename the column, e.g. load_rows(..., columns={{{key!r}: '<your column>'}}).")
        values.append(row[key])
    return values


# --- labels ----------------------------------------------------------------------------------------------
def label_id(config: Any, label: Any) -> int:
    """A label name (via config.label2id) or id → the id."""
    if isinstance(label, str):
        if label in config.label2id:
            return config.label2id[label]
        raise ConfigError(f"Unknown label {label!r}; the model's labels are: {', '.join(config.label2id)}. Fix: load "
                          f"the model with id2label={{0: ..., 1: ...}} naming every label in the data.")
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(config.id2label):
        return label
    raise ConfigError(f"Label {label!r} is not a label name or an id in 0..{len(config.id2label) - 1}. Fix: use the "
                      f"names of config.id2label ({', '.join(config.label2id)}) or their ids.")


def classify_label(config: Any, label: Any) -> int | float | list[float]:
    """An id; a float for regression (one label); multi-hot floats for a list / multi-label problem."""
    problem = config.problem_type
    if problem == "regression" or (problem is None and len(config.id2label) == 1):
        if isinstance(label, bool) or not isinstance(label, (int, float)):
            raise ConfigError(f"Regression needs numeric labels, got {label!r}.")
        return float(label)
    if problem == "multi_label_classification" or isinstance(label, (list, tuple)):
        hot = [0.0] * len(config.id2label)
        for one in label if isinstance(label, (list, tuple)) else [label]:
            hot[label_id(config, one)] = 1.0
        return hot
    return label_id(config, label)


def _bio(config: Any, tag: str, first: bool) -> int:
    names = (f"B-{tag}", f"I-{tag}", tag) if first else (f"I-{tag}", tag, f"B-{tag}")
    for name in names:
        if name in config.label2id:
            return config.label2id[name]
    raise ConfigError(f"Entity label {tag!r} matches none of B-{tag}, I-{tag}, {tag} in the model's labels "
                      f"({', '.join(config.label2id)}). Fix: load the model with id2label covering it.")


def _first_piece(word_ids: list[int | None], word_labels: Sequence[int]) -> list[int]:
    """The label of its word on each word's first piece; -100 on continuation pieces and special tokens."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else word_labels[word])
        previous = word
    return labels


# --- featurizers -----------------------------------------------------------------------------------------
def _features(encoding, count: int) -> list[dict]:
    return [{key: encoding[key][i] for key in MODEL_INPUTS if key in encoding} for i in range(count)]


def _encode(tokenizer, texts, pairs=None, **kwargs):
    return tokenizer(texts, pairs, padding=False, return_tensors=None, **kwargs)


def featurize_classify(tokenizer, config, rows: Sequence[dict], max_length: int) -> list[dict]:
    texts, labels = column(rows, "text", "classify"), column(rows, "label", "classify")
    has_pair = ["text_pair" in row for row in rows]
    if any(has_pair) and not all(has_pair):
        raise ConfigError("Some rows have a 'text_pair' and some do not. Fix: give every row one (or none).")
    pairs = column(rows, "text_pair", "classify") if any(has_pair) else None
    encoding = _encode(tokenizer, texts, pairs, truncation=True, max_length=max_length)
    features = _features(encoding, len(texts))
    for feature, label in zip(features, labels):
        feature["labels"] = classify_label(config, label)
    return features


def featurize_ner(tokenizer, config, rows: Sequence[dict], max_length: int) -> list[dict]:
    """`{"tokens", "tags"}` rows (words as given) or `{"text", "entities"}` rows (char spans → BIO)."""
    if "O" not in config.label2id:
        raise ConfigError(f"NER needs an 'O' label; the model's labels are {', '.join(config.label2id)}.")
    if "tokens" in rows[0]:
        return _ner_words(tokenizer, config, rows, max_length)
    texts, entities = column(rows, "text", "ner (or 'tokens')"), column(rows, "entities", "ner (or 'tags')")
    encoding = _encode(tokenizer, texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    features = _features(encoding, len(texts))
    for i, (feature, spans) in enumerate(zip(features, entities)):
        words: dict[int, list[int]] = {}  # word → its char span in the text
        for word, (start, end) in zip(encoding.word_ids(i), encoding["offset_mapping"][i]):
            if word is not None:
                words.setdefault(word, [start, end])[1] = end
        tags = dict.fromkeys(words, config.label2id["O"])
        if not all(isinstance(e, dict) and {"start", "end", "label"} <= set(e) for e in spans):
            raise ConfigError(f"Row {i}: entities must be dicts with 'start', 'end' and 'label', got {spans!r}.")
        for entity in sorted(spans, key=lambda e: e["start"]):
            inside = [w for w, (s, e) in words.items() if s < entity["end"] and e > entity["start"]
                      and tags[w] == config.label2id["O"]]
            for k, word in enumerate(inside):
                tags[word] = _bio(config, entity["label"], k == 0)
        feature["labels"] = _first_piece(encoding.word_ids(i), tags)
    return features


def _ner_words(tokenizer, config, rows: Sequence[dict], max_length: int) -> list[dict]:
    words, tags = column(rows, "tokens", "ner"), column(rows, "tags", "ner")
    # hfkit's Tokenizer has no is_split_into_words: encode pre-split words on a private copy of its backend
    backend = Backend.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.enable_truncation(max_length, direction=tokenizer.truncation_side)
    encodings = backend.encode_batch([list(w) for w in words], is_pretokenized=True)
    names = tokenizer.model_input_names
    features = []
    for index, (encoding, row_words, row_tags) in enumerate(zip(encodings, words, tags)):
        if len(row_words) != len(row_tags):
            raise ConfigError(f"Row {index} has {len(row_words)} tokens but {len(row_tags)} tags; give one tag per token.")
        feature = {"input_ids": encoding.ids}
        if "token_type_ids" in names:
            feature["token_type_ids"] = encoding.type_ids
        if "attention_mask" in names:
            feature["attention_mask"] = encoding.attention_mask
        feature["labels"] = _first_piece(encoding.word_ids, [label_id(config, tag) for tag in row_tags])
        features.append(feature)
    return features


def featurize_qa(tokenizer, rows: Sequence[dict], max_length: int, doc_stride: int) -> list[dict]:
    """One feature per overflow window, with the first answer's token span (CLS index when not inside)."""
    questions = [q.lstrip() for q in column(rows, "question", "qa")]
    contexts, answers = column(rows, "context", "qa"), column(rows, "answers", "qa")
    try:
        encoding = _encode(tokenizer, questions, contexts, truncation="only_second", max_length=max_length,
                           stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    except Exception as err:  # tokenizers raises a bare Exception when a question leaves no room for context
        raise ConfigError(f"Cannot cut the contexts into windows of {max_length} tokens overlapping by {doc_stride}: "
                          f"{err}. Fix: raise max_length, lower doc_stride, or shorten the longest questions.") from err
    features = _features(encoding, len(encoding["input_ids"]))
    for i, feature in enumerate(features):
        ids, offsets, sequence_ids = feature["input_ids"], encoding["offset_mapping"][i], encoding.sequence_ids(i)
        anchor = next((t for t in (tokenizer.cls_token_id, tokenizer.bos_token_id) if t is not None and t in ids), None)
        cls_index = ids.index(anchor) if anchor is not None else 0
        answer = answers[encoding["overflow_to_sample_mapping"][i]]
        if not isinstance(answer, dict) or "answer_start" not in answer or "text" not in answer:
            raise ConfigError(f"'answers' must be SQuAD's {{'text': [...], 'answer_start': [...]}}, got {answer!r}.")
        feature["start_positions"] = feature["end_positions"] = cls_index
        if not answer["answer_start"]:
            continue  # unanswerable
        start_char = answer["answer_start"][0]
        end_char = start_char + len(answer["text"][0])
        first = sequence_ids.index(1)
        last = len(ids) - 1 - sequence_ids[::-1].index(1)
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            continue  # the answer is not fully inside this window
        while first < len(offsets) and offsets[first][0] <= start_char:
            first += 1
        while offsets[last][1] >= end_char:
            last -= 1
        feature["start_positions"], feature["end_positions"] = first - 1, last + 1
    return features


def featurize_mlm(tokenizer, rows: Sequence[dict], max_length: int) -> list[dict]:
    texts = column(rows, "text", "mlm")
    return _features(_encode(tokenizer, texts, truncation=True, max_length=max_length), len(texts))


def featurize_causal_lm(tokenizer, rows: Sequence[dict], eos_id: int, block_size: int) -> list[dict]:
    """Documents + EOS, concatenated and cut into `block_size` blocks; the short tail is dropped."""
    stream: list[int] = []
    for ids in _encode(tokenizer, column(rows, "text", "causal-lm"))["input_ids"]:
        stream += ids if ids and ids[-1] == eos_id else [*ids, eos_id]
    if len(stream) < block_size:
        raise ConfigError(f"The {len(rows)} documents hold {len(stream)} tokens, fewer than one block of {block_size}. "
                          f"Fix: lower block_size (or max_length), or add data.")
    blocks = [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    return [{"input_ids": block, "labels": list(block)} for block in blocks]
