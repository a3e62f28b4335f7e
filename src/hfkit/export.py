"""hfkit model → a directory in the HF canonical layout that transformers and sentence-transformers load.

What is written, matching transformers 5 `save_pretrained`:
  model.safetensors, or model-0000k-of-0000n.safetensors + model.safetensors.index.json
  (`metadata.total_parameters`, `metadata.total_size`, `weight_map`); every file `__metadata__ {"format": "pt"}`;
  tied weights stored once under their source key (the alias is what `model.tied_weights()` names);
  config.json (`architectures`, `model_type`, `dtype`, string `id2label` keys, unknown source fields kept);
  the source's tokenizer and sentence-transformers files, copied; a README.md model card.

Atomicity: everything is written into a temporary sibling `.OUT.hfkit-tmp-*` and renamed into place at the
end. An existing OUT is replaced only then, and only when it is empty or a model folder (has config.json);
any other existing path is refused. An interrupted export leaves OUT as it was (a hard kill can leave the
hidden temporary sibling behind; it is safe to delete).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import HfkitError

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model", "chat_template.jinja")
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
GENERATION_FILES = ("generation_config.json",)  # decoders' decoding defaults, carried over as they are
# config.json fields transformers 5 leaves out at these values (its `to_diff_dict`): dropped unless the source had them.
OMITTED_AT = {"problem_type": None, "position_embedding_type": "absolute"}
DEFAULT_LABELS = {"0": "LABEL_0", "1": "LABEL_1"}
PIPELINE_TAGS = {"base": "feature-extraction", "sequence-classification": "text-classification",
                 "token-classification": "token-classification", "question-answering": "question-answering",
                 "masked-lm": "fill-mask"}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64"}


class ExportError(HfkitError, ValueError):
    """An export that cannot be written as asked (bad option, unsafe output path)."""


def save_pretrained(model, out_dir, max_shard_size: int | str = "2GB", dtype: str | torch.dtype | None = None,
                    tokenizer_source=None, base_model: str | None = None) -> Path:
    """Write `model` to `out_dir` in the HF layout (see the module doc); returns the directory.

    dtype: None/"auto" keeps every tensor exactly as it is (byte-identical round trip); else floats are cast.
    tokenizer_source: folder (or Hub id) whose tokenizer / sentence-transformers files are copied
    [default: the folder the model was loaded from]. base_model: the Hub id for the model card.
    """
    from .lora import has_lora
    from .nn.quantize import is_quantized

    if is_quantized(model):
        raise ExportError("This model is int8-quantized (inference only): export it before quantizing, or load the "
                          "checkpoint again.")
    if has_lora(model):
        raise ExportError("This model has unmerged LoRA layers: call model.merge_lora() first to export a plain "
                          "checkpoint, or model.save_adapter(dir) to save the adapter alone.")
    out = Path(out_dir)
    max_shard_size = parse_size(max_shard_size)  # bad options fail before anything is written
    target = _dtype(dtype)
    state = export_state_dict(model, target)
    source = _source_dir(tokenizer_source) if tokenizer_source is not None else model.source_dir
    config = config_json(model, state, source)
    base_model = base_model or hub_repo_id(source)
    if source is not None and Path(out).resolve() in Path(source).resolve().parents:
        raise ExportError(f"{out} contains the source folder {source}; replacing it would delete the source.")
    with atomic_directory(out) as tmp:
        write_weights(state, tmp, max_shard_size, model.num_parameters())
        write_json(tmp / "config.json", config)
        copied = copy_companions(Path(source), tmp) if source is not None else []
        title = Path(os.path.abspath(out)).name
        (tmp / "README.md").write_text(model_card(model, title, config, copied, base_model, source), encoding="utf-8")
    return out


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    from .weights import DTYPES

    if dtype not in DTYPES:
        raise ExportError(f"Unknown dtype {dtype!r}; use one of {sorted(DTYPES)}, 'auto' or a torch.dtype.")
    return DTYPES[dtype]


def _source_dir(name) -> Path:
    from .hub import resolve

    return resolve(name)


def export_state_dict(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors to write: the state dict without tied aliases, floats cast to `dtype` if given."""
    full, ties = model.state_dict(), model.tied_weights()
    for alias, source in ties.items():
        if alias in full and source in full and full[alias].data_ptr() != full[source].data_ptr():
            raise ExportError(f"{alias} should be tied to {source} but holds its own tensor: call model.tie_weights(), "
                              "or set tie_word_embeddings=False in the config to save both.")
    state = {k: v for k, v in full.items() if k not in ties}
    storages: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        storage = tensor.untyped_storage()
        storages.setdefault((tensor.device, storage.data_ptr()) if storage.nbytes() else name, []).append(name)
    shared = [names for names in storages.values() if len(names) > 1]
    for names in shared:  # disjoint views of one storage: cloned apart, as transformers does
        views = {(state[n].storage_offset(), tuple(state[n].shape), state[n].stride()) for n in names}
        if len(views) < len(names):
            raise ExportError(f"Tensors {names} share storage but tied_weights() does not name them; "
                              "untie them (clone) or declare the tie in the model's tied_weights().")
        for name in names[1:]:
            state[name] = state[name].clone()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def config_json(model, state: dict[str, torch.Tensor], source: Path | None = None) -> dict[str, Any]:
    """config.json as transformers writes it for this model: its class in `architectures`, the saved `dtype`.

    With a source config.json: its fields (updated) plus those changed from the defaults, so fields
    transformers does not know are not added; without one: every field, less those transformers omits."""
    config = model.config.to_dict()
    source_keys = set(_read_json(Path(source) / "config.json")) if source is not None else set()
    if source_keys:
        try:
            defaults = type(model.config)().to_dict()
        except Exception:  # a config class without complete defaults: keep every field
            defaults = {}
        config = {k: v for k, v in config.items() if k in source_keys or k == "model_type" or defaults.get(k, ...) != v}
    for key, value in OMITTED_AT.items():
        if config.get(key, ...) == value and key not in source_keys:
            config.pop(key)
    if config.get("id2label") == DEFAULT_LABELS and "id2label" not in source_keys:  # the default, as transformers
        config.pop("id2label")
        config.pop("label2id", None)
    config.pop("_name_or_path", None)  # transformers drops it when saving
    floats = [t.dtype for t in state.values() if t.is_floating_point()]
    if floats:
        config["dtype"] = DTYPE_NAMES.get(floats[0], str(floats[0]).removeprefix("torch."))
    config["architectures"] = [type(model).__name__]
    return dict(sorted(config.items()))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def write_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str = "2GB",
                  total_parameters: int | None = None) -> dict[str, str]:
    """safetensors files with huggingface_hub's split (the one transformers uses); returns key → file."""
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=parse_size(max_shard_size))
    for filename, names in split.filename_to_tensors.items():
        _write_shard({name: state[name].contiguous().cpu() for name in names}, directory / filename)
    if split.is_sharded:
        metadata = {"total_parameters": total_parameters, **split.metadata} if total_parameters else split.metadata
        write_json(directory / INDEX_FILE, {"metadata": metadata, "weight_map": split.tensor_to_filename})
    return split.tensor_to_filename


def companion_paths(source: Path) -> list[str]:
    """Tokenizer, generation and sentence-transformers files of a model folder (relative paths; module folders whole)."""
    names = [name for name in (*TOKENIZER_FILES, *GENERATION_FILES, *SENTENCE_FILES) if (source / name).is_file()]
    modules = _read_json(source / "modules.json") if (source / "modules.json").is_file() else []
    folders = {m.get("path") for m in modules if isinstance(m, dict)} if isinstance(modules, list) else set()
    folders = {f for f in folders if f and not Path(f).is_absolute() and ".." not in Path(f).parts}
    return names + sorted(f for f in folders if (source / f).is_dir())


def copy_companions(source: Path, target: Path) -> list[str]:
    copied = companion_paths(source)
    for name in copied:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name)
        else:
            shutil.copy(source / name, target / name)  # follows HF cache symlinks: the file itself is written
    return copied


def hub_repo_id(source) -> str | None:
    """`org/name` when `source` is a snapshot in the HF cache (`models--org--name/snapshots/<commit>`)."""
    parts = Path(source).parts if source is not None else ()
    cached = len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--")
    return parts[-3][len("models--"):].replace("--", "/") if cached else None


def _source_card_metadata(source: Path | None) -> dict[str, Any]:
    from huggingface_hub.repocard import metadata_load

    try:
        return (metadata_load(Path(source) / "README.md") or {}) if source is not None else {}
    except Exception:  # no card, or a malformed one: it must not block the export
        return {}


def model_card(model, title: str, config: dict, copied: list[str], base_model: str | None, source=None) -> str:
    """README.md with the YAML front matter the Hub reads: library_name, pipeline_tag, base_model, license."""
    import yaml

    from .models.auto import CLASS_SUFFIX

    sentence = "modules.json" in copied
    task = getattr(model, "task", "base")
    previous = _source_card_metadata(source)
    meta: dict[str, Any] = {"library_name": "sentence-transformers" if sentence else "transformers"}
    meta["pipeline_tag"] = "sentence-similarity" if sentence and task == "base" else PIPELINE_TAGS.get(task)
    for key in ("license", "language"):
        if previous.get(key):
            meta[key] = previous[key]
    if base_model:
        meta["base_model"] = base_model
    meta["tags"] = ["hfkit", *(["sentence-transformers"] if sentence else [])]
    meta = {k: v for k, v in meta.items() if v is not None}
    architecture = config["architectures"][0]
    loader = "AutoModel" if task == "base" else f"AutoModel{CLASS_SUFFIX[task]}"  # GPT2LMHeadModel: AutoModelForCausalLM
    labels = config.get("id2label")
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "", f"# {title}", "",
        f"A `{architecture}` ({config.get('model_type')}, {model.num_parameters():,} parameters, {config.get('dtype')})"
        + (f" based on [{base_model}](https://huggingface.co/{base_model})" if base_model else "")
        + ", saved by hfkit in the transformers layout.", "",
    ]
    if labels and task in ("sequence-classification", "token-classification"):
        lines += ["Labels: " + ", ".join(f"`{v}`" for v in labels.values()), ""]
    lines += ["## Usage", "", "```python", f"from transformers import {loader}, AutoTokenizer", "",
              f'model = {loader}.from_pretrained("{title}")', f'tokenizer = AutoTokenizer.from_pretrained("{title}")', "```", ""]
    if sentence:
        lines += ["```python", "from sentence_transformers import SentenceTransformer", "",
                  f'embeddings = SentenceTransformer("{title}").encode(["A sentence to embed."])', "```", ""]
    lines += ["With hfkit: `hfkit info " + title + "`; check the export with `hfkit verify-export " + title + "`.", ""]
    return "\n".join(lines)


def _replaceable(out: Path) -> bool:
    return out.is_dir() and not out.is_symlink() and ((out / "config.json").is_file() or not any(out.iterdir()))


@contextlib.contextmanager
def atomic_directory(out: Path, replace: Callable[[Path], bool] = _replaceable) -> Iterator[Path]:
    """Yield a temporary sibling of `out` to fill; on success it becomes `out`, on any error it is removed.

    An existing `out` is swapped out only after everything was written, and only if `replace(out)` says so."""
    out = Path(os.path.abspath(out))
    if out.exists() or out.is_symlink():
        if not replace(out):
            raise ExportError(f"{out} exists and is not a model folder (no config.json) or an empty folder; "
                              "refusing to replace it. Choose a new path or remove it first.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.hfkit-tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result gets a normal folder's mode
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.hfkit-old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def parse_size(size: int | str) -> int:
    """'2GB' → 2_000_000_000 (decimal units, as huggingface_hub), plain ints as bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]B)?\s*", str(size).upper())
    if not match:
        raise ExportError(f"Bad shard size {size!r}; use bytes or a size like '2GB', '500MB', '20KB'.")
    return int(float(match[1]) * 10 ** (3 * " KMGT".index(match[2][0]) if match[2] else 0))
