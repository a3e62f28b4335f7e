"""Tokenizer over the `tokenizers` library: the ids, masks, offsets and text of transformers' fast tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import AddedToken, Encoding, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, WordPiece

from . import hub
from .errors import HfkitError, ModelNotFoundError

VERY_LARGE_INTEGER = int(1e30)  # transformers' "no length limit"
LARGE_INTEGER = int(1e20)
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
BERT_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}

# `model_input_names` as transformers' tokenizer classes declare them; every other class: DEFAULT_INPUT_NAMES.
_BERT_INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
_DEBERTA_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
MODEL_INPUT_NAMES = {
    **dict.fromkeys(("Bert", "ConvBert", "Electra", "LayoutLM", "MarkupLM", "MobileBert", "SqueezeBert"), _BERT_INPUTS),
    **dict.fromkeys(("Canine", "Deberta", "DebertaV2", "LayoutLMv2", "Tapas"), _DEBERTA_INPUTS),
    "FNet": ["input_ids", "token_type_ids"],
}
DEFAULT_INPUT_NAMES = ["input_ids", "attention_mask"]
# transformers' clean_up_tokenization: (before, after) replacements
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class TokenizerError(HfkitError, ValueError):
    """Tokenizer input or settings that cannot be honoured."""


class BatchEncoding(dict):
    """`{"input_ids": ..., "attention_mask": ...}` plus the `tokenizers.Encoding` of each row."""

    def __init__(self, data: dict, encodings: list[Encoding] | None = None):
        super().__init__(data)
        self.encodings = encodings or []

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, index: int = 0) -> list[int | None]:
        return self.encodings[index].word_ids

    def sequence_ids(self, index: int = 0) -> list[int | None]:
        return self.encodings[index].sequence_ids

    def tokens(self, index: int = 0) -> list[str]:
        return self.encodings[index].tokens

    def to(self, device) -> BatchEncoding:
        """Move every tensor to `device` in place; returns self."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _content(token) -> str | None:
    return token["content"] if isinstance(token, dict) else token


def _added_token(token) -> AddedToken:
    if isinstance(token, dict):  # serialized AddedToken: keep its lstrip/rstrip/normalized flags
        return AddedToken(**{k: v for k, v in token.items() if k not in ("__type", "special")}, special=True)
    return AddedToken(token, special=True)


def _bert_from_vocab(vocab_file: Path, config: dict, specials: dict) -> Backend:
    """A BERT WordPiece backend from vocab.txt, as transformers' BertTokenizer builds it."""
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    backend = Backend(WordPiece(vocab, unk_token=specials["unk_token"]))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens([_added_token(specials[name]) for name in SPECIAL_TOKENS if specials.get(name)])
    cls, sep = _content(specials["cls_token"]), _content(specials["sep_token"])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
    return backend


class Tokenizer:
    """A `tokenizers.Tokenizer` with the special tokens, limits and call conventions of tokenizer_config.json.

    Like transformers, it sets the backend's padding/truncation per call: share one instance across threads only
    if calls do not overlap.
    """

    bos_token: str | None
    eos_token: str | None
    unk_token: str | None
    sep_token: str | None
    pad_token: str | None
    cls_token: str | None
    mask_token: str | None
    bos_token_id: int | None  # the *_token_id properties are defined below the class
    eos_token_id: int | None
    unk_token_id: int | None
    sep_token_id: int | None
    pad_token_id: int | None
    cls_token_id: int | None
    mask_token_id: int | None

    def __init__(self, backend: Backend, config: dict, specials: dict, extra_special_tokens: list[str],
                 chat_template: str | None = None):
        self._backend = backend
        for name in SPECIAL_TOKENS:
            setattr(self, name, _content(specials.get(name)))
        self.extra_special_tokens = extra_special_tokens
        present = {token.content for token in backend.get_added_tokens_decoder().values()}
        missing = [_added_token(specials[name]) for name in SPECIAL_TOKENS if specials.get(name) is not None]
        missing += [AddedToken(token, special=True) for token in extra_special_tokens]
        missing = [token for token in missing if token.content not in present]
        if missing:  # transformers registers every declared special token with the backend
            backend.add_special_tokens(missing)

        limit = config.get("model_max_length")
        self.model_max_length = VERY_LARGE_INTEGER if limit is None or limit > LARGE_INTEGER else int(limit)
        cls_name = (config.get("tokenizer_class") or "").removesuffix("Fast").removesuffix("Tokenizer")
        self.model_input_names = list(config.get("model_input_names") or MODEL_INPUT_NAMES.get(cls_name, DEFAULT_INPUT_NAMES))
        # tokenizer.json's own padding/truncation only supply defaults, as in transformers
        padding, truncation = backend.padding or {}, backend.truncation or {}
        if self.pad_token is None:
            self.pad_token = padding.get("pad_token")
        self.padding_side = config.get("padding_side") or padding.get("direction") or "right"
        self.truncation_side = config.get("truncation_side") or truncation.get("direction") or "right"
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.chat_template = chat_template
        backend.no_padding()
        backend.no_truncation()
        self._state: tuple = (None, None)  # the (padding, truncation) settings the backend holds now
        self.source_dir: Path | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool | None = None,
                        token: str | bool | None = None) -> Tokenizer:
        """Load from a local folder, the HF cache or the Hub."""
        return cls.from_dir(hub.resolve(name_or_path, revision, cache_dir, local_files_only, token))

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load tokenizer.json (or a BERT vocab.txt) with tokenizer_config.json from a local folder."""
        directory = Path(directory)
        config = _read_json(directory / "tokenizer_config.json")
        specials = {name: config[name] for name in SPECIAL_TOKENS if name in config}
        extras = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        if "added_tokens_decoder" not in config:  # legacy folders: special_tokens_map.json overrides
            special_map = _read_json(directory / "special_tokens_map.json")
            specials.update({name: special_map[name] for name in SPECIAL_TOKENS if name in special_map})
            extras = extras or special_map.get("additional_special_tokens") or []
        extras = [_content(token) for token in (extras.values() if isinstance(extras, dict) else extras)]

        if (directory / "tokenizer.json").is_file():
            backend = Backend.from_file(str(directory / "tokenizer.json"))
        elif (directory / "vocab.txt").is_file():
            specials = {**BERT_DEFAULTS, **specials}
            config = {"tokenizer_class": "BertTokenizer", **config}
            backend = _bert_from_vocab(directory / "vocab.txt", config, specials)
        else:
            where = f"{directory} does not exist" if not directory.is_dir() else f"no tokenizer files in {directory}"
            raise ModelNotFoundError(
                f"Cannot load a tokenizer: {where} (looked for tokenizer.json, or vocab.txt for a BERT WordPiece "
                f"tokenizer). Fix: pass the model folder that holds them, or re-save the tokenizer with "
                f"transformers' `save_pretrained`, which writes tokenizer.json."
            )

        template_file = directory / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
        if isinstance(template, list):  # [{"name": ..., "template": ...}]: keep the default one
            template = {t["name"]: t["template"] for t in template}.get("default")
        tokenizer = cls(backend, config, specials, extras, template)
        tokenizer.source_dir = directory  # its files are what an export copies beside the weights
        return tokenizer

    @property
    def backend_tokenizer(self) -> Backend:
        """The `tokenizers.Tokenizer` underneath (its padding/truncation settings change per call)."""
        return self._backend

    # --- vocabulary ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def _token_id(self, token: str | None) -> int | None:
        return None if token is None else self.convert_tokens_to_ids(token)

    @property
    def all_special_tokens(self) -> list[str]:
        named = [getattr(self, name) for name in SPECIAL_TOKENS]
        return list(dict.fromkeys(t for t in named + self.extra_special_tokens if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            index = self._backend.token_to_id(tokens)
            return index if index is not None or self.unk_token is None else self._backend.token_to_id(self.unk_token)
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        return [self._backend.id_to_token(int(i)) for i in ids]

    # --- encoding -----------------------------------------------------------------------------------------
    def _configure(self, padding: dict | None = None, truncation: dict | None = None) -> None:
        """Put the backend's (global) padding/truncation settings into the wanted ones; a no-op when it holds them."""
        if truncation != self._state[1]:
            if truncation:
                self._backend.enable_truncation(**truncation)
            else:
                self._backend.no_truncation()
        if padding != self._state[0]:
            if padding:
                self._backend.enable_padding(**padding)
            else:
                self._backend.no_padding()
        self._state = (padding, truncation)

    def _settings(self, padding, truncation, max_length: int | None, stride: int) -> tuple[dict | None, dict | None]:
        """transformers' padding/truncation arguments → the backend's settings (`None`: off)."""
        pad = "longest" if padding is True else None if padding in (False, None, "do_not_pad") else padding
        trunc = "longest_first" if truncation is True else None if truncation in (False, None, "do_not_truncate") else truncation
        if pad not in (None, "longest", "max_length"):
            raise TokenizerError(f"padding={padding!r} is not supported: use True/'longest', 'max_length' or False.")
        if trunc not in (None, "longest_first", "only_first", "only_second"):
            raise TokenizerError(f"truncation={truncation!r} is not supported: use True/'longest_first', "
                                 f"'only_first', 'only_second' or False.")
        if max_length is None and (pad == "max_length" or trunc):
            if self.model_max_length > LARGE_INTEGER:  # no limit known: nothing to pad to or cut at
                pad, trunc = (None if pad == "max_length" else pad), None
            max_length = self.model_max_length
        if self.pad_token is None:
            pad = None  # nothing to pad with: __call__ complains if the rows differ in length
        return (
            dict(length=max_length if pad == "max_length" else None, direction=self.padding_side,
                 pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token) if pad else None,
            dict(max_length=max_length, stride=stride, strategy=trunc, direction=self.truncation_side) if trunc else None,
        )

    def __call__(self, texts: str | list[str], text_pairs: str | list[str] | None = None, *,
                 padding: bool | str = True, truncation: bool | str = False, max_length: int | None = None,
                 stride: int = 0, return_overflowing_tokens: bool = False, return_offsets_mapping: bool = False,
                 add_special_tokens: bool = True, return_tensors: str | None = "pt") -> BatchEncoding:
        """Encode one text or a batch (with optional pairs) as transformers' fast tokenizer `__call__` does."""
        if return_tensors not in ("pt", None):
            raise TokenizerError(f"return_tensors={return_tensors!r} is not supported: use 'pt' or None.")
        single = isinstance(texts, str)
        if single:
            batch = [(texts, text_pairs)] if text_pairs else [texts]
        elif isinstance(text_pairs, str) or (text_pairs is not None and len(text_pairs) != len(texts)):
            raise TokenizerError("text_pairs must be a list as long as texts (one pair per text).")
        else:
            batch = list(zip(texts, text_pairs)) if text_pairs is not None else list(texts)
        self._configure(*self._settings(padding, truncation, max_length, stride))
        encodings = self._backend.encode_batch(batch, add_special_tokens=add_special_tokens)

        rows = [row for e in encodings for row in ([e, *e.overflowing] if return_overflowing_tokens else [e])]
        data = {"input_ids": [row.ids for row in rows]}
        if "token_type_ids" in self.model_input_names:
            data["token_type_ids"] = [row.type_ids for row in rows]
        if "attention_mask" in self.model_input_names:
            data["attention_mask"] = [row.attention_mask for row in rows]
        if return_offsets_mapping:
            data["offset_mapping"] = [row.offsets for row in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = [i for i, e in enumerate(encodings) for _ in range(1 + len(e.overflowing))]
        if padding not in (False, None, "do_not_pad") and len({len(ids) for ids in data["input_ids"]}) > 1:
            raise TokenizerError("Asked to pad, but this tokenizer has no pad token. Fix: set `tokenizer.pad_token = "
                                 "tokenizer.eos_token` (or another token), or pass padding=False.")
        if return_tensors == "pt":
            return BatchEncoding(self._as_tensors(data), rows)
        if single and not return_overflowing_tokens:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, rows)

    @staticmethod
    def _as_tensors(data: dict) -> dict:
        try:
            return {key: torch.tensor(value, dtype=torch.long) for key, value in data.items()}
        except ValueError as err:
            raise TokenizerError("Cannot make tensors of sequences of different lengths. Fix: pass padding=True "
                                 "(and truncation=True for very long inputs), or return_tensors=None.") from err

    def pad(self, features: list[dict], return_tensors: str | None = "pt") -> BatchEncoding:
        """Pad already-encoded examples to the longest one, on `padding_side` (a collate function)."""
        if not features:
            raise TokenizerError("pad() needs at least one example.")
        if self.pad_token_id is None:
            raise TokenizerError("This tokenizer has no pad token. Fix: set `tokenizer.pad_token = tokenizer.eos_token`.")
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0,
                "special_tokens_mask": 1, "offset_mapping": (0, 0)}
        features = [{k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in f.items()} for f in features]
        if "attention_mask" in self.model_input_names:
            features = [{**f, "attention_mask": f.get("attention_mask", [1] * len(f["input_ids"]))} for f in features]
        longest = max(len(f["input_ids"]) for f in features)
        data: dict[str, list] = {key: [] for key in features[0]}
        for f in features:
            gap = longest - len(f["input_ids"])
            for key in data:
                value = f[key]
                if key in fill and gap:
                    value = [*value, *[fill[key]] * gap] if self.padding_side == "right" else [*[fill[key]] * gap, *value]
                data[key].append(value)
        if return_tensors == "pt":
            return BatchEncoding(self._as_tensors(data))
        return BatchEncoding(data)

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        self._configure()
        return self._backend.encode(text, text_pair or None, add_special_tokens=add_special_tokens).ids

    def tokenize(self, text: str) -> list[str]:
        self._configure()
        return self._backend.encode(text, add_special_tokens=False).tokens

    # --- chat ---------------------------------------------------------------------------------------------
    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template: str | None = None,
                            add_generation_prompt: bool = False, continue_final_message: bool | str = False,
                            tokenize: bool = True, return_dict: bool = True, **kwargs):
        """Render messages with the chat template, as transformers (the same defaults: tokenize=True gives a
        BatchEncoding, return_dict=False its input_ids, tokenize=False the string). See hfkit.chat_template."""
        from .chat_template import apply_chat_template

        return apply_chat_template(self, conversation, tools=tools, documents=documents, chat_template=chat_template,
                                   add_generation_prompt=add_generation_prompt, tokenize=tokenize,
                                   continue_final_message=continue_final_message, return_dict=return_dict, **kwargs)

    # --- decoding -----------------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids → text, as transformers' `decode` (its space clean-up never runs on BPE models, as there)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        text = self._backend.decode([ids] if isinstance(ids, int) else ids, skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        if clean and not isinstance(self._backend.model, BPE):
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]


for _name in SPECIAL_TOKENS:  # bos_token_id, eos_token_id, ...: the id of the matching token, or None
    setattr(Tokenizer, f"{_name}_id", property(lambda self, _name=_name: self._token_id(getattr(self, _name))))
