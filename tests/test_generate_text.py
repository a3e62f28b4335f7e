"""Text generation: strings in, the same continuations as transformers' tokenizer + generate + decode."""

from __future__ import annotations

import pytest
import torch
import transformers

import hfkit

from .tiny_tokenizers import byte_level_bpe

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:{% endif %}")
PROMPTS = ["The capital of France is", "Once upon a time, in a land far away, there lived", "Hello"]


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def write_tiny_llama(path):
    """A tiny random Llama with a byte-level BPE tokenizer (trained on PROMPTS) and a chat template, saved at `path`."""
    raw = byte_level_bpe([p * 3 for p in PROMPTS] + ["the quick brown fox jumps over the lazy dog"] * 5,
                         ["<s>", "</s>", "<pad>"])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


def reference(path, prompts, **kwargs):
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, padding_side="left")
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, pad_token_id=tokenizer.pad_token_id, **kwargs)
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_generate_matches_transformers(tiny_llama_dir):
    model = hfkit.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert model.generate(PROMPTS, max_new_tokens=16) == reference(tiny_llama_dir, PROMPTS, max_new_tokens=16, do_sample=False)
    single = model.generate(PROMPTS[0], max_new_tokens=8)
    assert isinstance(single, str) and single == reference(tiny_llama_dir, PROMPTS[:1], max_new_tokens=8, do_sample=False)[0]


def test_pipeline_and_seeded_sampling(tiny_llama_dir):
    generate = hfkit.pipeline("text-generation", str(tiny_llama_dir))
    first = generate(PROMPTS, max_new_tokens=8, do_sample=True, generator=torch.Generator().manual_seed(3))
    again = generate(PROMPTS, max_new_tokens=8, do_sample=True, generator=torch.Generator().manual_seed(3))
    assert first == again and len(first) == 3


def test_empty_prompt_is_a_clear_error(tiny_llama_dir):
    model = hfkit.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    with pytest.raises(hfkit.HfkitError, match="empty prompt"):
        model.generate([""], max_new_tokens=4)


def test_cli_generate(tiny_llama_dir):
    from typer.testing import CliRunner

    from hfkit.cli.app import app

    result = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), *PROMPTS, "--max-new-tokens", "6", "--json"])
    assert result.exit_code == 0, result.output
    import json

    got = [row["generated_text"] for row in json.loads(result.stdout)]
    assert got == reference(tiny_llama_dir, PROMPTS, max_new_tokens=6, do_sample=False)
    sampled = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), "Hello", "--temperature", "0.8", "--seed", "1"])
    again = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), "Hello", "--temperature", "0.8", "--seed", "1"])
    assert sampled.exit_code == 0 and sampled.stdout == again.stdout and sampled.stdout.startswith("Hello")


def test_cli_chat_streams_resets_and_quits(tiny_llama_dir):
    from typer.testing import CliRunner

    from hfkit.cli.app import app

    model = hfkit.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    first = model.chat([{"role": "user", "content": "Hello"}], max_new_tokens=5)
    result = CliRunner().invoke(app, ["chat", str(tiny_llama_dir), "--max-new-tokens", "5"], input="Hello\n/reset\nHello\n/quit\n")
    assert result.exit_code == 0, result.output
    replies = [line.split("model> ", 1)[1] for line in result.stdout.splitlines() if "model> " in line]
    assert replies == [first, first]  # greedy, and /reset forgot the first turn


def test_streamed_generation_joins_to_the_same_text(tiny_llama_dir):
    from typer.testing import CliRunner

    from hfkit.cli.app import app

    model = hfkit.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    pieces = list(model.generate(PROMPTS[1], max_new_tokens=10, stream=True))
    assert len(pieces) > 1 and "".join(pieces) == model.generate(PROMPTS[1], max_new_tokens=10)
    result = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), PROMPTS[1], "--max-new-tokens", "10", "--stream"])
    assert result.exit_code == 0 and result.stdout == PROMPTS[1] + "".join(pieces) + "\n"
    with pytest.raises(hfkit.HfkitError, match="one prompt"):
        model.generate(PROMPTS, stream=True)


def test_cli_generate_static_cache_and_int8_weights(tiny_llama_dir):
    import json

    from typer.testing import CliRunner

    from hfkit.cli.app import app
    from hfkit.nn.quantize import quantize_weights_int8

    run = lambda *extra: CliRunner().invoke(
        app, ["generate", str(tiny_llama_dir), *PROMPTS, "--max-new-tokens", "6", "--json", *extra])
    texts = lambda result: [row["generated_text"] for row in json.loads(result.stdout)]
    dynamic, static, int8 = run(), run("--cache", "static"), run("--cache", "static", "--quantize", "int8")
    assert dynamic.exit_code == static.exit_code == int8.exit_code == 0, (static.output, int8.output)
    assert texts(static) == texts(dynamic)
    model = quantize_weights_int8(hfkit.AutoModelForCausalLM.from_pretrained(tiny_llama_dir))
    assert texts(int8) == model.generate(PROMPTS, max_new_tokens=6)
