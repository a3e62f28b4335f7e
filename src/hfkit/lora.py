"""LoRA without subclassing models: a target nn.Linear (or GPT-2's Conv1D) is swapped for a `LoraLinear` that holds
it; adapters go in and out in PEFT's format, so `peft.PeftModel.from_pretrained` reads what `save_adapter` writes.

Names in `model.state_dict()` of a LoRA'd model, and in the adapter file:
  <path>.base_layer.weight / .bias   the original layer, frozen; its checkpoint key is <path>.weight (`merge_lora`
                                     puts the plain layer back, so `save_pretrained` writes the usual keys)
  <path>.lora_A.weight (r, in)       adapter key base_model.model.<path>.lora_A.weight
  <path>.lora_B.weight (out, r)      adapter key base_model.model.<path>.lora_B.weight
  <saved>.<tensor>                   modules_to_save (a head's fresh classifier): trained in place, adapter key
                                     base_model.model.<saved>.<tensor> (PEFT keeps a frozen original beside a
                                     trained copy to switch adapters off; hfkit holds one adapter at a time)
An adapter key is the model key with PEFT's prefix, as peft 0.21 writes them (it drops the adapter name `.default`).
GPT-2's Conv1D stores its weight (in, out): the factors keep nn.Linear's layout; only the merge transposes
(PEFT's `fan_in_fan_out=True`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ConfigError, HfkitError
from .nn.conv1d import Conv1D
from .nn.replace import replace_modules

PREFIX = "base_model.model."
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
LINEAR = (nn.Linear, Conv1D)
TASK_TYPES = {"sequence-classification": "SEQ_CLS", "token-classification": "TOKEN_CLS",
              "question-answering": "QUESTION_ANS", "causal-lm": "CAUSAL_LM", "base": "FEATURE_EXTRACTION"}
# model_type → the layers LoRA adapts when target_modules is not given: PEFT's defaults where it has them
# (attention query and value), the same projections (or the fused qkv one) for the families it lacks.
DEFAULT_TARGETS = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "albert", "electra"), ["query", "value"]),
    "distilbert": ["q_lin", "v_lin"], "deberta-v2": ["query_proj", "value_proj"], "modernbert": ["Wqkv"],
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"), ["q_proj", "v_proj"]),
    "phi3": ["qkv_proj"], "gpt2": ["c_attn"],
}
HEAD_TASKS = ("sequence-classification", "token-classification", "question-answering")  # PEFT saves their fresh heads
# PEFT options that change what an adapter computes and hfkit does not implement: refused, never half-applied.
UNSUPPORTED = ("use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "layers_to_transform", "exclude_modules",
               "target_parameters", "layer_replication", "trainable_token_indices", "use_qalora", "alora_invocation_tokens",
               "use_bdlora", "arrow_config", "kasa_config", "velora_config", "monteclora_config")


@dataclass
class LoraConfig:
    """Which layers get LoRA and how; the fields and their meaning are PEFT's `LoraConfig`.

    target_modules: None = the family's attention query / value projections (PEFT's defaults); names (an entry
    matches a module whose dotted name equals it or ends with "." + it) or a regex
    matched against the whole name. modules_to_save: modules trained fully and saved with the adapter (None: a
    classification / QA head's fresh parts, as PEFT); `add_lora` stores them resolved, as full module paths."""

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    use_rslora: bool = False  # scale by alpha / sqrt(r) instead of alpha / r
    bias: str = "none"
    modules_to_save: list[str] | None = None
    init_lora_weights: bool | str = True  # True: A kaiming-uniform, B = 0; "gaussian": A ~ N(0, 1/r); False: both random

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}.")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}.")
        if self.bias != "none":
            raise ConfigError(f"bias={self.bias!r} is not supported; hfkit's LoRA supports bias='none' only.")
        if self.init_lora_weights not in (True, False, "gaussian"):
            raise ConfigError(f"init_lora_weights={self.init_lora_weights!r} is not supported; use True, False or 'gaussian'.")
        if self.target_modules is not None and not isinstance(self.target_modules, str):
            self.target_modules = sorted(self.target_modules)  # PEFT stores a set
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def targets(self, name: str) -> bool:
        if self.target_modules is None:
            return False
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == t or name.endswith("." + t) for t in self.target_modules)


class LoraLinear(nn.Module):
    """base_layer(x) + lora_B(lora_A(dropout(x))) · scaling, the LoRA term in the input's dtype."""

    def __init__(self, base_layer: nn.Linear | Conv1D, config: LoraConfig):
        super().__init__()
        self.base_layer, self.scaling = base_layer, config.scaling
        weight = base_layer.weight
        # half-precision bases get float32 factors (PEFT's autocast_adapter_dtype); the forward casts them to x's dtype
        dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        kwargs = {"bias": False, "device": weight.device, "dtype": dtype}
        self.lora_A = nn.Linear(base_layer.in_features, config.r, **kwargs)  # (r, in): nn.Linear's kaiming-uniform(a=√5)
        self.lora_B = nn.Linear(config.r, base_layer.out_features, **kwargs)  # (out, r)
        self.dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        if config.init_lora_weights == "gaussian":
            nn.init.normal_(self.lora_A.weight, std=1 / config.r)
        if config.init_lora_weights:
            nn.init.zeros_(self.lora_B.weight)  # the adapted model starts equal to the base
        self.train(base_layer.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) → (..., out)
        a, b = self.lora_A.weight.to(x.dtype), self.lora_B.weight.to(x.dtype)
        return self.base_layer(x) + F.linear(F.linear(self.dropout(x), a), b) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """B·A·scaling in the base weight's layout: (out, in), Conv1D's (in, out); float32."""
        delta = self.lora_B.weight.float() @ self.lora_A.weight.float() * self.scaling  # (out, in)
        return delta.T if isinstance(self.base_layer, Conv1D) else delta


def has_lora(model: nn.Module) -> bool:
    """Whether `model` holds unmerged LoRA layers."""
    return any(isinstance(m, LoraLinear) for m in model.modules())


def _default_saved(model: nn.Module) -> list[str]:
    """A classification / QA head's freshly initialised parts (`classifier`, `score`, `qa_outputs`), as PEFT."""
    return list(getattr(model, "new_on_base", ())) if getattr(model, "task", "base") in HEAD_TASKS else []


def _under(name: str, paths: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def _listing(title: str, items: list[str]) -> str:
    return f"\n  {title} ({len(items)}): {', '.join(items[:10])}" + (", …" if len(items) > 10 else "") if items else ""


def _plan(model: nn.Module, config: LoraConfig) -> tuple[list[str], list[str], dict[str, tuple[int, ...]]]:
    """Target paths, modules_to_save paths, and the adapter's model keys → shapes, for a model without LoRA."""
    entries = _default_saved(model) if config.modules_to_save is None else config.modules_to_save
    found = [name for name, _ in model.named_modules() if name and any(name.endswith(e) for e in entries)]  # PEFT's rule
    saved = [name for name in found if not _under(name, [p for p in found if p != name])]
    if entries and not saved:
        raise ConfigError(f"No module of {type(model).__name__} matches modules_to_save={entries}.")
    targets = [name for name, _ in model.named_modules() if name and config.targets(name) and not _under(name, saved)]
    linear = [name for name, m in model.named_modules() if isinstance(m, LINEAR)]
    if not targets:
        names = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise ConfigError(f"No module of {type(model).__name__} matches target_modules={config.target_modules!r}. "
                          f"Its Linear layers are named {names} (e.g. {linear[0] if linear else '—'}).")
    if other := [name for name in targets if name not in linear]:
        raise ConfigError(f"target_modules matched {other[:5]}, which are not Linear layers; LoRA wraps nn.Linear "
                          "and GPT-2's Conv1D. Name the projections inside them instead.")
    ties = model.tied_weights() if hasattr(model, "tied_weights") else {}
    if tied := [name for name in targets if {f"{name}.weight"} & {*ties, *ties.values()}]:
        raise ConfigError(f"{tied} share their weight with another layer (tied embeddings); LoRA on them is not supported.")
    shapes = {}
    for name in targets:
        layer = model.get_submodule(name)
        shapes[f"{name}.lora_A.weight"] = (config.r, layer.in_features)
        shapes[f"{name}.lora_B.weight"] = (layer.out_features, config.r)
    for path in saved:
        shapes.update({f"{path}.{k}": tuple(v.shape) for k, v in model.get_submodule(path).state_dict().items()})
    return targets, saved, shapes


def add_lora(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Freeze `model`, swap every target for a LoraLinear, leave the modules_to_save trainable; returns `model`."""
    if has_lora(model):
        raise HfkitError("This model already has LoRA layers: call merge_lora() first (one adapter at a time).")
    if config.target_modules is None:
        model_type = getattr(model.config, "model_type", None)
        if model_type not in DEFAULT_TARGETS:
            raise ConfigError(f"No default LoRA target_modules for model_type {model_type!r}; name them.")
        config = replace(config, target_modules=DEFAULT_TARGETS[model_type])
    targets, saved, _ = _plan(model, config)
    model.requires_grad_(False)
    layers = [model.get_submodule(name) for name in targets]
    replace_modules(model, {layer: LoraLinear(layer, config) for layer in layers})
    for path in saved:
        model.get_submodule(path).requires_grad_(True)
    model.lora_config = replace(config, modules_to_save=saved or None)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's keys: every LoRA factor and every tensor of the modules_to_save."""
    config = _lora_config(model)
    state = model.state_dict()
    keys = [f"{name}.{factor}.weight" for name, m in model.named_modules() if isinstance(m, LoraLinear)
            for factor in ("lora_A", "lora_B")]
    keys += [k for path in config.modules_to_save or [] for k in state if k.startswith(path + ".")]
    return {PREFIX + k: state[k] for k in keys}


def _lora_config(model: nn.Module) -> LoraConfig:
    config = getattr(model, "lora_config", None)
    if config is None or not has_lora(model):
        raise HfkitError("This model has no LoRA layers: call model.add_lora(config) or model.load_adapter(dir) first.")
    return config


def _is_adapter_folder(out: Path) -> bool:
    return out.is_dir() and not out.is_symlink() and ((out / CONFIG_FILE).is_file() or not any(out.iterdir()))


def save_adapter(model: nn.Module, directory, base_model_name_or_path: str | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors as peft 0.21 does, atomically; returns the folder."""
    from safetensors.torch import save_file

    from .export import atomic_directory, hub_repo_id, write_json

    config = _lora_config(model)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    source = getattr(model, "source_dir", None)
    base = base_model_name_or_path or (hub_repo_id(source) or str(source) if source is not None else None)
    conv = any(isinstance(m, LoraLinear) and isinstance(m.base_layer, Conv1D) for m in model.modules())
    meta = {"peft_type": "LORA", "task_type": TASK_TYPES.get(getattr(model, "task", "base")),
            "base_model_name_or_path": base, "revision": None, "inference_mode": True, "fan_in_fan_out": conv,
            "lora_bias": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}}
    with atomic_directory(Path(directory), replace=_is_adapter_folder) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(tmp / CONFIG_FILE, {**meta, **asdict(config)})
    return Path(directory)


def read_adapter_config(directory: Path) -> LoraConfig:
    """adapter_config.json (PEFT's, or ours) → LoraConfig; other PEFT methods and options that change the math refused."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"No {CONFIG_FILE} in {directory}: not a PEFT adapter folder.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        kind = raw.get("peft_type") if isinstance(raw, dict) else None
        raise ConfigError(f"{path} describes a {kind!r} adapter; hfkit loads LoRA adapters (peft_type 'LORA') only.")
    if used := [key for key in UNSUPPORTED if raw.get(key)]:
        raise ConfigError(f"{path} sets PEFT options hfkit does not implement: {used}.")
    return LoraConfig(**{f.name: raw[f.name] for f in fields(LoraConfig) if f.name in raw})


def load_adapter(model: nn.Module, name_or_path, **hub_kwargs) -> nn.Module:
    """Add LoRA as a PEFT adapter (folder or Hub id) describes it and load its tensors strictly; returns `model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .hub import resolve

    if has_lora(model):
        raise HfkitError("This model already has LoRA layers: call merge_lora() first (one adapter at a time).")
    directory = resolve(name_or_path, allow_patterns=(CONFIG_FILE, WEIGHTS_FILE), **hub_kwargs)
    config = read_adapter_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickled = " (its adapter_model.bin is a pickle, which hfkit never loads: re-save it as safetensors)" \
            if (directory / "adapter_model.bin").is_file() else ""
        raise CheckpointError(f"No {WEIGHTS_FILE} in {directory}{pickled}.")
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {err}") from err
    _, _, shapes = _plan(model, config)
    found = {k.removeprefix(PREFIX): v for k, v in tensors.items() if k.startswith(PREFIX)}
    missing = sorted(PREFIX + k for k in shapes.keys() - found.keys())
    unexpected = sorted(k for k in tensors if not k.startswith(PREFIX) or k.removeprefix(PREFIX) not in shapes)
    wrong = [f"{PREFIX}{k} {tuple(found[k].shape)} != {shapes[k]}" for k in sorted(shapes.keys() & found.keys())
             if tuple(found[k].shape) != shapes[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{weights} does not fit {type(model).__name__} with its {CONFIG_FILE}:"
                              + _listing("missing", missing) + _listing("unexpected", unexpected)
                              + _listing("wrong shape", wrong))
    add_lora(model, config)
    model.load_state_dict(found, strict=False)  # every key was checked above; the rest of the model is the base
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold B·A·scaling into each base weight and put the plain layers back, so `save_pretrained` writes a normal
    checkpoint; modules_to_save are already trained in place. Parameters stay frozen; returns `model`."""
    wrappers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    for layer in wrappers:
        weight = layer.base_layer.weight
        weight += layer.delta_weight().to(weight.dtype)
    replace_modules(model, {layer: layer.base_layer for layer in wrappers})
    model.__dict__.pop("lora_config", None)
    return model
