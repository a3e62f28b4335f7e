"""Check an exported folder against transformers (and sentence-transformers); the matrix is verify_matrix.py.

`verify_export(out)` loads OUT with the transformers Auto class its `architectures` names, requires empty
missing/unexpected/mismatched key sets, runs one seeded padded batch through transformers and hfkit in
float32 on CPU and requires `torch.equal` on every output (max_abs_diff is reported either way).
transformers and sentence-transformers are test extras: imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import HfkitError

OUTPUT_FIELDS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")
TEXTS = ["A man is eating food.", "The quick brown fox jumps over the lazy dog.", "Ok"]
SHORT_HEADS = {"base": "base", "seqcls": "sequence-classification", "tokcls": "token-classification",
               "qa": "question-answering", "mlm": "masked-lm", "pretrain": "pretraining"}
SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str = ""


@dataclass
class Report:
    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.status != "FAIL" for c in self.checks)

    def add(self, name: str, ok: bool | None, detail: str = "") -> bool:
        self.checks.append(Check(name, "SKIP" if ok is None else "PASS" if ok else "FAIL", detail))
        return bool(ok)

    def render(self) -> str:
        lines = [f"verify-export {self.target}"]
        lines += [f"  {c.status:4}  {c.name}" + (f": {c.detail}" if c.detail else "") for c in self.checks]
        failed = sum(c.status == "FAIL" for c in self.checks)
        lines.append("OK: transformers loads it strictly and every output is bit-identical." if self.ok
                     else f"FAILED: {failed} check(s) failed.")
        return "\n".join(lines)


def require(package: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise HfkitError(f"{package} is needed to verify exports: pip install 'hfkit[test]' (or pip install {package}).") from err


def task_name(head: str) -> str:
    """`seqcls` → `sequence-classification`; full task names pass through."""
    from .models.auto import CLASS_SUFFIX

    task = SHORT_HEADS.get(head, head)
    if task not in CLASS_SUFFIX:
        raise HfkitError(f"Unknown head {head!r}; use one of {', '.join(SHORT_HEADS)} or {', '.join(CLASS_SUFFIX)}.")
    return task


def family_tasks(family) -> list[str]:
    from .models.auto import CLASS_SUFFIX

    return [task for task in CLASS_SUFFIX if task == "base" or task in family.heads]


def task_of(architecture: str, family) -> str:
    """The hfkit task of a transformers class name (`BertForMaskedLM` → `masked-lm`) in this family."""
    from .models.auto import class_name

    for task in family_tasks(family):
        if architecture == class_name(family, task):
            return task
    raise HfkitError(f"architectures names {architecture!r}, which is no {family.model_type} class hfkit has "
                     f"({', '.join(class_name(family, t) for t in family_tasks(family))}).")


def random_batch(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three right-padded rows of random ids (lengths 13, 9, 4), token types where the family has them."""
    gen = torch.Generator().manual_seed(seed)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids = torch.randint(min(3, config.vocab_size - 1), config.vocab_size, (3, 13), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((13, 9, 4)):
        mask[row, length:] = 0
    batch = {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) > 1:
        batch["token_type_ids"] = (torch.arange(13)[None, :] >= 6).long().expand(3, -1) * mask
    return batch


def outputs(model, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    found = {name: getattr(out, name) for name in OUTPUT_FIELDS if getattr(out, name, None) is not None}
    found.update({f"hidden_states[{i}]": h for i, h in enumerate(out.hidden_states or ())})
    return found


def compare(reference: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> tuple[bool, str]:
    """torch.equal on every output the reference has; the detail names max_abs_diff per differing output."""
    missing = [name for name in reference if name not in ours or ours[name].shape != reference[name].shape]
    if missing:
        return False, f"outputs missing or of another shape: {missing}"
    diffs = {name: (ours[name].float() - reference[name].float()).abs().max().item() for name in reference}
    unequal = {n: d for n, d in diffs.items() if not torch.equal(ours[n], reference[n])}
    worst = max(diffs.values(), default=0.0)
    if not unequal:
        return True, f"{len(reference)} outputs torch.equal (max_abs_diff {worst:.1e})"
    return False, "not bit-identical: " + ", ".join(f"{n} max_abs_diff {d:.3e}" for n, d in unequal.items())


def equal_outputs(reference_model, our_model, batch) -> tuple[bool, str]:
    """Compare as loaded; if not bit-equal, compare again with both models' tensors in fresh memory.

    CPU BLAS kernels choose their code path by the pointer alignment of the weights, and tensors read
    from safetensors sit at arbitrary offsets of the file: the same weights at offset 40 vs 0 (mod 64)
    give last-bit differences (measured: 9.3e-10 on ElectraForPreTraining logits). Equal math on
    re-allocated (64-byte aligned) copies proves the difference is the kernel's, not the export's."""
    ok, detail = compare(outputs(reference_model, batch), outputs(our_model, batch))
    if ok:
        return ok, detail
    fresh_ok, fresh = compare(outputs(realigned(reference_model), batch), outputs(realigned(our_model), batch))
    if fresh_ok:
        return True, (f"{fresh} with the weights in freshly allocated memory; as loaded {detail} "
                      "(BLAS kernel choice by pointer alignment of mmapped tensors)")
    return False, fresh


def realigned(model):
    """A copy of `model` whose every tensor is freshly allocated (ties kept)."""
    import copy

    model = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return model


@contextlib.contextmanager
def quiet_transformers():
    transformers = require("transformers")
    logging = transformers.utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def check_layout(out: Path, config: dict, report: Report) -> None:
    """safetensors files, `format: pt`, the index's weight_map and total_size, config `dtype` = stored dtype."""
    from safetensors import safe_open

    from .weights import INDEX_FILE, SINGLE_FILE

    index_path = out / INDEX_FILE
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        files = sorted(set(index["weight_map"].values()))
    else:
        index, files = None, [SINGLE_FILE] if (out / SINGLE_FILE).is_file() else []
    if not files:
        report.add("layout", False, f"no {SINGLE_FILE} or {INDEX_FILE}")
        return
    problems, stored, keys, total = [], set(), {}, 0
    for name in files:
        with safe_open(out / name, framework="pt") as handle:
            if (handle.metadata() or {}).get("format") != "pt":
                problems.append(f"{name}: __metadata__ format is not 'pt'")
            for key in handle.keys():
                part = handle.get_slice(key)
                keys[key] = name
                dtype = part.get_dtype()
                stored.add(dtype)
                count = 1
                for n in part.get_shape():
                    count *= n
                total += count * SAFETENSORS_BYTES.get(dtype, 0)
    if index is not None:
        if index["weight_map"] != keys:
            problems.append("weight_map does not list exactly the tensors in the shards")
        if index.get("metadata", {}).get("total_size") != total:
            problems.append(f"metadata.total_size {index.get('metadata', {}).get('total_size')} != {total} bytes stored")
    floats = {d for d in stored if d in ("F32", "F16", "BF16", "F64")}
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
    if floats and config.get("dtype") is not None and config["dtype"] not in {names[d] for d in floats}:
        problems.append(f"config dtype {config.get('dtype')!r} but tensors stored as {sorted(floats)}")
    shards = f"{len(files)} shards + index" if index is not None else files[0]
    note = "" if config.get("dtype") else "; config.json has no dtype (readers take the stored one)"
    report.add("layout", not problems, "; ".join(problems) or f"{shards}, {len(keys)} tensors, format pt{note}")


def verify_export(out, source=None, seed: int = 0) -> Report:
    """Every check of one exported folder; `source` (a folder, Hub id or in-memory hfkit model) must match too."""
    from .config import read_config_json
    from .models.auto import CLASS_SUFFIX, family_of, model_class

    out = Path(out)
    report = Report(str(out))
    config = read_config_json(out)
    architectures = config.get("architectures") or []
    family = family_of(config.get("model_type"))
    detail = f"architectures {architectures}, model_type {config.get('model_type')}"
    if not report.add("config.json", len(architectures) == 1, detail):
        return report
    architecture = architectures[0]
    task = task_of(architecture, family)
    check_layout(out, config, report)
    transformers = require("transformers")
    auto_name = "AutoModel" + ("" if task == "base" else CLASS_SUFFIX[task])
    loaded = attempt(report, f"transformers {auto_name}", load_transformers, transformers, auto_name, out)
    if loaded is not None:
        theirs, info = loaded
        key_sets = {k: sorted(map(str, info.get(k) or ()))
                    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
        bad = {k: v for k, v in key_sets.items() if v}
        report.add(f"transformers {auto_name}", type(theirs).__name__ == architecture and not bad,
                   f"loaded {type(theirs).__name__}; " + ("; ".join(f"{k}: {v[:10]}" for k, v in bad.items()) if bad
                                                          else "missing, unexpected, mismatched: none"))
        attempt(report, "config.json read back by transformers", check_config, report, out, config, transformers)
        attempt(report, "keys as transformers saves them", check_saved_keys, report, out, theirs)
    ours = attempt(report, "hfkit load", lambda: model_class(family, task).from_pretrained(out, dtype=torch.float32))
    if ours is None:
        return report
    batch = random_batch(ours.config, seed)
    if loaded is not None:
        report.add("outputs hfkit == transformers", *equal_outputs(loaded[0], ours, batch))
    if source is not None:
        attempt(report, "source", check_source, report, ours, source, out, batch)
    attempt(report, "tokenizer", check_tokenizer, report, out, transformers)
    attempt(report, "sentence-transformers", check_sentence_transformers, report, out)
    return report


def attempt(report: Report, name: str, function, *args):
    """Run one stage; an exception becomes a FAIL line naming the stage, and the other checks still run."""
    try:
        return function(*args)
    except Exception as err:
        report.add(name, False, f"{type(err).__name__}: {err}".splitlines()[0][:400])
        return None


def load_transformers(transformers, auto_name: str, out: Path):
    with quiet_transformers():
        model, info = getattr(transformers, auto_name).from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    return model.eval(), info


def check_config(report: Report, out: Path, config: dict, transformers) -> None:
    """transformers reads every config.json field as written (re-serialising gives the same values)."""
    with quiet_transformers():
        theirs = json.loads(transformers.AutoConfig.from_pretrained(out).to_json_string())
    theirs.pop("transformers_version", None)
    changed = [k for k in config if k in theirs and theirs[k] != config[k]]
    notes = [f"transformers omits {[k for k in config if k not in theirs and k != 'transformers_version']}",
             f"transformers adds its defaults {[k for k in theirs if k not in config]}"]
    notes = [n for n in notes if not n.endswith("[]")]
    report.add("config.json read back by transformers", not changed,
               f"changed: {changed}" if changed else "every field as written" + "".join(f"; {n}" for n in notes))


def check_saved_keys(report: Report, out: Path, theirs) -> None:
    """OUT stores exactly the keys transformers' own save_pretrained writes (tied weights once, same names)."""
    from .weights import checkpoint_files

    with tempfile.TemporaryDirectory() as tmp, quiet_transformers():
        theirs.save_pretrained(tmp)
        expected = set(checkpoint_files(Path(tmp)))
    ours = set(checkpoint_files(out))
    extra, missing = sorted(ours - expected), sorted(expected - ours)
    report.add("keys == transformers save_pretrained", not extra and not missing,
               f"extra {extra[:10]}, missing {missing[:10]}" if extra or missing else f"the same {len(ours)} keys")


def check_source(report: Report, ours, source, out: Path, batch) -> None:
    """The export holds the source's tensors (cast to the export's dtype) and gives its outputs."""
    from .models.auto import family_of, model_class
    from .weights import DTYPES

    stored = DTYPES.get(json.loads((out / "config.json").read_text()).get("dtype") or "float32", torch.float32)
    if isinstance(source, torch.nn.Module):
        reference, label = _cast(source, stored), "in-memory source model"
    else:
        from .config import read_config_json
        from .hub import resolve

        directory = resolve(source)
        raw = read_config_json(directory)
        family = family_of(raw.get("model_type"))
        task = ours.task if hasattr(ours, "task") else "base"
        source_task = task_of(raw["architectures"][0], family) if raw.get("architectures") else "base"
        label = f"source {source}"
        if source_task != task:  # a head fresh on the source: only the shared backbone can match
            ours = model_class(family, "base").from_pretrained(out, dtype=torch.float32)
            task, label = "base", f"source {source} (a {raw.get('architectures')} checkpoint: backbone compared)"
        reference = model_class(family, task).from_pretrained(directory, dtype=stored).to(torch.float32).eval()
    theirs_state, our_state = reference.state_dict(), ours.state_dict()
    differ = [k for k in our_state if k not in theirs_state or not torch.equal(our_state[k], theirs_state[k].to(our_state[k].dtype))]
    report.add(f"tensors == {label}", not differ, f"differ: {differ[:10]}" if differ else f"{len(our_state)} tensors equal")
    report.add(f"outputs == {label}", *equal_outputs(reference.eval(), ours, batch))


def _cast(model, dtype: torch.dtype):
    """A float32 copy of an in-memory model as the export stored it (cast to `dtype` and back)."""
    import copy

    if model.dtype == dtype == torch.float32:
        return model
    return copy.deepcopy(model).to(dtype).to(torch.float32)


def check_tokenizer(report: Report, out: Path, transformers) -> None:
    if not (out / "tokenizer.json").is_file():
        report.add("tokenizer", None, "no tokenizer.json in the folder")
        return
    from .tokenizer import Tokenizer

    with quiet_transformers():
        theirs = transformers.AutoTokenizer.from_pretrained(out)(TEXTS, padding=True)["input_ids"]
    ours = Tokenizer.from_dir(out)(TEXTS, padding=True, return_tensors=None)["input_ids"]
    report.add("tokenizer hfkit == transformers AutoTokenizer", ours == theirs, f"{len(TEXTS)} texts, same ids"
               if ours == theirs else "token ids differ")


def check_sentence_transformers(report: Report, out: Path) -> None:
    if not (out / "modules.json").is_file():
        return
    try:
        sentence_transformers = require("sentence_transformers")
    except HfkitError as err:
        report.add("sentence-transformers", None, str(err))
        return
    from .models.auto import AutoModel

    with quiet_transformers():
        theirs = sentence_transformers.SentenceTransformer(
            str(out), device="cpu", model_kwargs={"dtype": torch.float32}).encode(TEXTS, convert_to_tensor=True)
    ours = AutoModel.from_pretrained(out, dtype=torch.float32).embed(TEXTS)
    report.add("embeddings hfkit == SentenceTransformer.encode", *compare({"embeddings": theirs.float()}, {"embeddings": ours}))


def as_dict(report: Report) -> dict[str, Any]:
    return {"target": report.target, "ok": report.ok, "checks": [vars(c) for c in report.checks]}
