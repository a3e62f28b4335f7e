"""`hfkit generate` and `hfkit chat`: decoding with a causal LM, plus formatting."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from .app import (
    Device,
    Dtype,
    DtypeOption,
    File,
    Json,
    Model,
    Quantize,
    Revision,
    Texts,
    command,
    load,
)
from .io import emit_json, gather_texts, shorten

MaxNewTokens = Annotated[int | None, typer.Option(min=1, help="New tokens [default: generation_config.json, else 20].")]
Temperature = Annotated[float | None, typer.Option(min=0.0, help="Sample at this temperature (0 or unset: greedy).")]
TopK = Annotated[int | None, typer.Option(min=1, help="Sample from the k most likely tokens.")]
TopP = Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Sample from the smallest set with this mass.")]
Seed = Annotated[int | None, typer.Option(help="Seed for sampling (reproducible runs).")]


WeightsQuantizeOption = Annotated[Quantize | None, typer.Option(
    "--quantize", help="int8: int8 weights per output channel, activations in --dtype (opt-in, lossy); pays off in "
                       "the compiled decode step of --cache static on CUDA.")]


PromptLookupOption = Annotated[int | None, typer.Option(
    "--prompt-lookup", min=1, help="Speculative decoding: check up to this many candidate tokens per model pass, "
                                   "copied from where the text's last words occurred before (same output; with "
                                   "sampling, the same as with one --seed).")]
AssistantOption = Annotated[str | None, typer.Option(
    "--assistant", help="Speculative decoding with this smaller causal LM of the same tokenizer proposing the "
                        "candidates (same output; with sampling, the same as with one --seed).")]


class Cache(str, Enum):
    dynamic = "dynamic"
    static = "static"


CacheOption = Annotated[Cache, typer.Option(
    help="static: a preallocated KV cache; on CUDA its decode step runs compiled, as CUDA graphs (fastest after the "
         "first call, which compiles).")]


@command()
def generate(
    model: Model, texts: Texts = None, file: File = None,
    max_new_tokens: MaxNewTokens = None, temperature: Temperature = None, top_k: TopK = None, top_p: TopP = None,
    seed: Seed = None, stream: Annotated[bool, typer.Option(help="Print the continuation as it is generated (one prompt).")] = False,
    cache: CacheOption = Cache.dynamic, quantize: WeightsQuantizeOption = None,
    prompt_lookup: PromptLookupOption = None, assistant: AssistantOption = None,
    json: Json = False, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
) -> None:
    """Text generation with a causal LM: the continuation of each prompt."""
    prompts = gather_texts(texts, file, "prompts")
    if prompt_lookup and assistant:
        raise typer.BadParameter("--prompt-lookup and --assistant are two sources of candidates: give one.")
    if stream and (len(prompts) != 1 or json):
        raise typer.BadParameter("--stream prints one prompt's continuation as it comes: give one prompt, without --json.")
    loaded = load("AutoModelForCausalLM", model, revision, device, dtype)
    if quantize:
        from ..nn.quantize import quantize_weights_int8

        quantize_weights_int8(loaded)
    options = {"cache": cache.value, **sampling(loaded, temperature, top_k, top_p, seed)}
    if prompt_lookup:
        options["prompt_lookup_num_tokens"] = prompt_lookup
    if assistant:
        options["assistant_model"] = load("AutoModelForCausalLM", assistant, None, device, dtype)
    if stream:
        typer.echo(prompts[0], nl=False)
        for piece in loaded.generate(prompts[0], max_new_tokens=max_new_tokens, stream=True, **options):
            typer.echo(piece, nl=False)
        return typer.echo()
    outputs = loaded.generate(prompts, max_new_tokens=max_new_tokens, **options)
    if json:
        return emit_json([{"prompt": p, "generated_text": o} for p, o in zip(prompts, outputs)])
    for prompt, output in zip(prompts, outputs):
        typer.echo(f"{prompt}{output}" if len(prompts) == 1 else f"[{shorten(prompt)}] {output}")


@command()
def chat(
    model: Model, system: Annotated[str | None, typer.Option(help="A system message to start the conversation.")] = None,
    max_new_tokens: MaxNewTokens = 256, temperature: Temperature = None, top_k: TopK = None, top_p: TopP = None,
    seed: Seed = None, revision: Revision = None, device: Device = None, dtype: DtypeOption = Dtype.auto,
) -> None:
    """Interactive chat with the model's chat template, replies streamed; /reset starts over, /quit ends."""
    loaded = load("AutoModelForCausalLM", model, revision, device, dtype)
    options = sampling(loaded, temperature, top_k, top_p, seed)
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    typer.echo("Chat started: /reset starts over, /quit (or end of input) ends.", err=True)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if line == "/quit":
            break
        if line == "/reset":
            history = list(start)
            typer.echo("(conversation reset)", err=True)
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        pieces = []
        typer.echo("model> ", nl=False)
        for piece in loaded.chat(history, max_new_tokens=max_new_tokens, stream=True, **options):
            pieces.append(piece)
            typer.echo(piece, nl=False)
        typer.echo()
        history.append({"role": "assistant", "content": "".join(pieces)})


def sampling(model: Any, temperature: float | None, top_k: int | None, top_p: float | None, seed: int | None) -> dict:
    """Greedy unless a sampling option is given; a seed makes sampling reproducible."""
    import torch

    chosen = {k: v for k, v in {"temperature": temperature, "top_k": top_k, "top_p": top_p}.items() if v}
    if not chosen:
        return {"do_sample": False}
    generator = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
    return {"do_sample": True, "generator": generator, **chosen}
