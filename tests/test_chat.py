"""Chat templates and chat(): the same prompt strings, ids and replies as transformers."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import torch
import transformers

import hfkit
from hfkit.chat_template import ChatTemplateError, render_chat_template
from hfkit.tasks.chat import chat
from hfkit.tokenizer import Tokenizer

from .tiny_tokenizers import byte_level_bpe

CHATML_TOOLS = """
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- if documents %}
    {%- for doc in documents %}
        {{- '<|im_start|>document\\n[' + doc.title + '] ' + doc.text + '<|im_end|>\\n' }}
    {%- endfor %}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- continue %}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\\n' }}
    {%- if message.reasoning_content is defined %}
        {{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}
    {%- endif %}
    {%- if message.content is defined %}
        {{- message.content }}
    {%- endif %}
    {%- if message.tool_calls is defined %}
        {%- for call in message.tool_calls %}
            {{- '\\n<tool_call>\\n' }}{{- call.function | tojson }}{{- '\\n</tool_call>' }}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3 = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)

TOJSON = """{% for m in messages %}
{{ m | tojson(indent=2, sort_keys=True) }}
{% endfor %}
{% if tools %}TOOLS={{ tools | tojson(separators=(',', ':')) }}
{% endif %}
{{ pad_token }}|{{ unk_token }}|{{ eos_token }}{% if add_generation_prompt %}>>>{% endif %}"""

NAMESPACE = """{%- set ns = namespace(last_user=-1, system='') -%}
{%- for m in messages %}
  {%- if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}
  {%- if m.role == 'system' %}{% set ns.system = m.content %}{% endif %}
{%- endfor -%}
{% if ns.system %}
SYSTEM: {{ ns.system }}
{% endif %}
{% for m in messages %}
  {% if m.role != 'system' %}
    {{ m.role | upper }}{% if loop.index0 == ns.last_user %} (latest){% endif %}: {{ m.content }}{% if not loop.last %} ||{% endif %}

  {% endif %}
{% endfor %}
{% if add_generation_prompt %}
ASSISTANT:
{%- endif %}"""

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Température in °C <b>now</b> & \"later\"",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
DOCUMENTS = [{"title": "Paris", "text": "Paris is the capital of France."}]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What's the weather in Paris? ünïcødé ✓ <tag>"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "22 °C"},
    {"role": "assistant", "content": "  It is 22 °C.  ", "thinking": "The tool said 22.", "tool_calls": None},
    {"role": "user", "content": "Thanks!"},
]
ALTERNATING = [m for m in MESSAGES if m["role"] in ("user",)][:1] + [
    {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "And tomorrow?"}]
CASES = {"chatml": CHATML_TOOLS, "llama3": LLAMA3, "mistral": MISTRAL, "tojson": TOJSON, "namespace": NAMESPACE}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat-tok")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<s>"]
    corpus = [json.dumps(m, ensure_ascii=False) for m in MESSAGES] + ["the quick brown fox jumps over the lazy dog"] * 5
    raw = byte_level_bpe(corpus * 3, specials, vocab_size=400, unk_token="<unk>")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="<|im_end|>",
                                               pad_token="<|endoftext|>", unk_token="<unk>")
    tok.chat_template = CHATML_TOOLS
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tokenizer_dir):
    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir), Tokenizer.from_dir(tokenizer_dir)


def both(pair, messages, **kwargs):
    ref, ours = pair
    return (ref.apply_chat_template(messages, tokenize=False, **kwargs),
            ours.apply_chat_template(messages, tokenize=False, **kwargs))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_templates_render_like_transformers(pair, name, generation_prompt):
    messages = ALTERNATING if name == "mistral" else MESSAGES
    extra = {} if name == "mistral" else {"tools": TOOLS, "documents": DOCUMENTS}
    ref, ours = both(pair, messages, chat_template=CASES[name], add_generation_prompt=generation_prompt, **extra)
    assert ours == ref and ours


def test_template_variables_and_defaults(pair):
    ref, ours = both(pair, MESSAGES[:2], chat_template=LLAMA3, date_string="01 Jan 2025", add_generation_prompt=True)
    assert ours == ref and "01 Jan 2025" in ours and ours.startswith("<s>")
    ref, ours = both(pair, MESSAGES, add_generation_prompt=True)  # the tokenizer's own template
    assert ours == ref
    ref, ours = both(pair, [MESSAGES[:2], MESSAGES[:4]], chat_template=NAMESPACE)  # a batch of conversations
    assert ours == ref and len(ours) == 2
    year = render_chat_template("{{ strftime_now('%Y') }}", [{"role": "user", "content": "x"}])
    assert year == datetime.now().strftime("%Y")


@pytest.mark.parametrize("name", ["chatml", "llama3", "namespace"])
def test_continue_final_message(pair, name):
    messages = MESSAGES[:2] + [{"role": "assistant", "content": "The weather is "}]
    ref, ours = both(pair, messages, chat_template=CASES[name], continue_final_message=True)
    assert ours == ref and ours.rstrip().endswith("The weather is")
    with pytest.raises(ValueError, match="not an accepted field"):  # TOJSON never names "content"
        pair[0].apply_chat_template(messages, chat_template=TOJSON, continue_final_message=True, tokenize=False)
    with pytest.raises(ChatTemplateError, match="never reads that field"):
        pair[1].apply_chat_template(messages, chat_template=TOJSON, continue_final_message=True, tokenize=False)
    reasoning = MESSAGES[:2] + [{"role": "assistant", "reasoning_content": "Let me think"}]
    ref, ours = both(pair, reasoning, chat_template=CHATML_TOOLS, continue_final_message="reasoning_content")
    assert ours == ref and ours.endswith("<think>\nLet me think")


def test_tokenize_gives_transformers_ids(pair):
    ref, ours = pair
    kwargs = dict(tools=TOOLS, add_generation_prompt=True)
    assert ours.apply_chat_template(MESSAGES, return_dict=False, **kwargs) == ref.apply_chat_template(MESSAGES, return_dict=False, **kwargs)
    mine, theirs = ours.apply_chat_template(MESSAGES, **kwargs), ref.apply_chat_template(MESSAGES, **kwargs)
    assert dict(mine) == dict(theirs)  # transformers' default: tokenize=True, return_dict=True
    mine = ours.apply_chat_template(MESSAGES, return_tensors="pt", **kwargs)
    theirs = ref.apply_chat_template(MESSAGES, return_tensors="pt", **kwargs)
    assert torch.equal(mine["input_ids"], theirs["input_ids"]) and mine["input_ids"].shape[0] == 1


def test_errors_are_clear(pair, tmp_path):
    ref, ours = pair
    bad_order = [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hello"}]
    with pytest.raises(Exception, match="must alternate"):
        ref.apply_chat_template(bad_order, chat_template=MISTRAL, tokenize=False)
    with pytest.raises(ChatTemplateError, match="must alternate"):
        ours.apply_chat_template(bad_order, chat_template=MISTRAL, tokenize=False)
    with pytest.raises(hfkit.HfkitError, match="syntax error at line 1"):
        ours.apply_chat_template(MESSAGES, chat_template="{% for m in messages %}{{ m.content }}", tokenize=False)
    with pytest.raises(ChatTemplateError, match="JSON schemas"):
        ours.apply_chat_template(MESSAGES, tools=[len], tokenize=False)
    with pytest.raises(ChatTemplateError, match="not compatible"):
        ours.apply_chat_template(MESSAGES, add_generation_prompt=True, continue_final_message=True)
    with pytest.raises(ChatTemplateError, match="empty conversation"):
        ours.apply_chat_template([])
    with pytest.raises(ChatTemplateError, match="underscore"):
        render_chat_template("{% set ns = namespace() %}{% set ns._x = 1 %}", MESSAGES)
    bare = tmp_path / "bare"
    ref.save_pretrained(bare)
    for leftover in bare.glob("chat_template*"):
        leftover.unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="no chat_template.*chat_template="):
        Tokenizer.from_dir(bare).apply_chat_template(MESSAGES, tokenize=False)


def test_jinja_file_takes_precedence(pair, tmp_path):
    pair[0].save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = MISTRAL
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text(NAMESPACE)
    ref, ours = transformers.AutoTokenizer.from_pretrained(tmp_path), Tokenizer.from_dir(tmp_path)
    rendered = ours.apply_chat_template(MESSAGES, tokenize=False)
    assert rendered == ref.apply_chat_template(MESSAGES, tokenize=False) and "SYSTEM: You are terse." in rendered
    (tmp_path / "chat_template.jinja").unlink()
    assert Tokenizer.from_dir(tmp_path).apply_chat_template(ALTERNATING, tokenize=False).startswith("<s>[INST]")


@pytest.fixture(scope="module")
def tiny_chat_model(tokenizer_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-chat-llama")
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(path)
    config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_chat_matches_transformers_and_streams(tiny_chat_model):
    messages = MESSAGES[:2]
    tok = transformers.AutoTokenizer.from_pretrained(tiny_chat_model)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    batch = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    out = ref_model.generate(**batch, do_sample=False, max_new_tokens=12)
    expected = tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    model = hfkit.AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    reply = chat(model, model.tokenizer, messages, max_new_tokens=12)
    assert isinstance(reply, str) and reply == expected
    pieces = list(chat(model, model.tokenizer, messages, max_new_tokens=12, stream=True))
    assert "".join(pieces) == expected and all(pieces) and len(pieces) > 1
    sampled = dict(max_new_tokens=10, do_sample=True, temperature=1.5)
    once = chat(model, model.tokenizer, messages, generator=torch.Generator().manual_seed(1), **sampled)
    streamed = chat(model, model.tokenizer, messages, stream=True, generator=torch.Generator().manual_seed(1), **sampled)
    assert "".join(streamed) == once
    assert model.training is False


def test_stream_can_be_closed_early(tiny_chat_model):
    model = hfkit.AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    model.train()
    pieces = chat(model, model.tokenizer, MESSAGES[:2], max_new_tokens=500, stream=True, do_sample=True)
    first = next(pieces)
    pieces.close()  # stops the generating thread and restores the model's mode
    assert first and model.training is True
    beams = chat(model, model.tokenizer, MESSAGES[:2], max_new_tokens=5, num_beams=2, stream=True)
    assert "".join(beams) == chat(model, model.tokenizer, MESSAGES[:2], max_new_tokens=5, num_beams=2)
    assert model.training is True
