"""Speculative greedy decoding (prompt lookup, an assistant model): token-identical to transformers' greedy
`generate`, in fewer passes of the model when candidates are accepted; its limits are clear errors."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import hfkit
from hfkit.generation import generate_tokens
from hfkit.generation import speculative as speculative_module
from hfkit.generation.speculative import _DRAFT_LENGTHS, lookup_candidates

from .parity.test_decoder_matrix import build, left_padded

NEW = 40  # tiny GPT-2 has 64 positions


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class Counted(torch.nn.Module):
    """The model, counting its forward passes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.widths = model, 0, []  # widths: tokens per pass
        self.config = model.config

    def forward(self, *args, **kwargs):
        self.calls += 1
        self.widths.append(args[0].shape[1])
        return self.model(*args, **kwargs)


def greedy(reference, ids, mask, **options):
    with torch.no_grad():
        return reference.generate(ids, attention_mask=mask, do_sample=False, **{"max_new_tokens": NEW, **options})


def test_lookup_candidates_follow_the_earliest_longest_match():
    ids = torch.tensor([3, 8, 1, 2, 3, 5, 2, 3])
    assert lookup_candidates(ids, 3, 2).tolist() == [5, 2, 3]  # "2 3" first occurs at 3
    assert lookup_candidates(ids, 3, 1).tolist() == [8, 1, 2]  # "3" first occurs at 0
    assert lookup_candidates(torch.tensor([1, 2, 3, 8]), 3, 2).tolist() == []  # nothing earlier to follow
    assert lookup_candidates(torch.tensor([7, 7]), 5, 3).tolist() == [7]  # cut at the text's end


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "qwen3"])
def test_speculative_decoding_is_greedy_decoding(tmp_path, family):
    """Both candidate sources give transformers' greedy tokens; a perfect assistant (the model itself) needs a few
    passes for NEW tokens, an unrelated one about one per token."""
    reference, ours = build(tmp_path / "model", family)
    _, other = build(tmp_path / "other", family, seed=1)
    ids, mask = left_padded((11,))
    expected = greedy(reference, ids, mask, eos_token_id=None)
    counted = Counted(ours)
    lookup = generate_tokens(counted, ids, mask, max_new_tokens=NEW, eos_token_id=None, prompt_lookup_num_tokens=5)
    assert torch.equal(lookup, expected) and counted.calls <= NEW + 1
    for assistant, passes in ((ours, 4), (other, NEW + 1)):
        counted.calls = 0
        got = generate_tokens(counted, ids, mask, max_new_tokens=NEW, eos_token_id=None, assistant_model=assistant,
                              assistant_confidence_threshold=None)
        assert torch.equal(got, expected), (got, expected)
        assert counted.calls <= passes, counted.calls


def test_prompt_lookup_takes_fewer_passes_on_repeated_text(tmp_path):
    """gemma2's tiny model settles into a loop (checked below): lookup then accepts whole runs of candidates."""
    reference, ours = build(tmp_path, "gemma2")
    ids, mask = left_padded((11,))
    expected = greedy(reference, ids, mask, eos_token_id=None)
    assert len(set(expected[0, -20:].tolist())) <= 3
    counted = Counted(ours)
    got = generate_tokens(counted, ids, mask, max_new_tokens=NEW, eos_token_id=None, prompt_lookup_num_tokens=8)
    assert torch.equal(got, expected) and counted.calls < NEW // 2, counted.calls


@pytest.mark.parametrize("source", ["lookup", "assistant"])
def test_processors_eos_and_left_padding(tmp_path, source):
    """Repetition penalty, min_new_tokens against an EOS, and a left-padded row, as transformers' greedy."""
    reference, ours = build(tmp_path, "llama")
    ids, mask = left_padded((7,))
    ids, mask = torch.cat((torch.zeros(1, 3, dtype=torch.long), ids), 1), torch.cat((torch.zeros(1, 3).long(), mask), 1)
    eos = int(greedy(reference, ids, mask, eos_token_id=None)[0, -NEW + 4])  # greedy emits it at step 4
    speculative = {"prompt_lookup_num_tokens": 4} if source == "lookup" else {"assistant_model": ours}
    for options in ({"eos_token_id": eos}, {"eos_token_id": eos, "min_new_tokens": 9, "repetition_penalty": 1.4}):
        expected = greedy(reference, ids, mask, pad_token_id=0, **options)
        got = generate_tokens(ours, ids, mask, max_new_tokens=NEW, pad_token_id=0, **options, **speculative)
        assert torch.equal(got, expected), (options, got, expected)
    assert got.shape[1] < ids.shape[1] + NEW  # the EOS ended it


@pytest.mark.parametrize("family", ["llama", "gemma2"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_speculative_sampling_draws_what_plain_sampling_draws(tmp_path, family, cache):
    """do_sample: each position's token is one draw from the model's processed distribution, in order, so with one
    seed the tokens are plain sampling's (temperature, top-k, top-p, repetition penalty, min length), from either
    source. A candidate is kept when the draw equals it: near-greedy sampling keeps the model's own greedy tokens."""
    _, ours = build(tmp_path / "model", family)
    _, other = build(tmp_path / "other", family, seed=1)
    ids, mask = left_padded((11,))
    counted = Counted(ours)
    options = {"max_new_tokens": NEW, "eos_token_id": 2, "min_new_tokens": 6, "do_sample": True,
               "temperature": 0.8, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.1, "cache": cache}
    for seed in range(3):
        seeded = lambda seed=seed: torch.Generator().manual_seed(seed)
        expected = generate_tokens(ours, ids, mask, generator=seeded(), **options)
        for speculative in ({"prompt_lookup_num_tokens": 4}, {"assistant_model": other, "num_assistant_tokens": 3},
                            {"assistant_model": ours, "num_assistant_tokens": 3}):
            got = generate_tokens(counted, ids, mask, generator=seeded(), **options, **speculative)
            assert torch.equal(got, expected), (seed, speculative, got, expected)
    # near-greedy sampling (a tiny random model's logits lie close together): its greedy candidates are drawn again
    counted.calls = 0
    generate_tokens(counted, ids, mask, max_new_tokens=NEW, eos_token_id=None, do_sample=True, temperature=1e-4,
                    cache=cache, generator=torch.Generator().manual_seed(0), assistant_model=ours,
                    num_assistant_tokens=5, num_assistant_tokens_schedule="constant",
                    assistant_confidence_threshold=None)
    assert counted.calls <= NEW // 4, counted.calls  # a pass per 4 tokens or fewer


def test_heuristic_schedule_keeps_the_draft_length_across_calls(tmp_path):
    reference, ours = build(tmp_path, "llama")
    ids, mask = left_padded((11,))
    options = {"max_new_tokens": 12, "eos_token_id": None, "assistant_model": ours, "num_assistant_tokens": 3,
                   "assistant_confidence_threshold": None}
    got = generate_tokens(ours, ids, mask, num_assistant_tokens_schedule="heuristic", **options)
    assert torch.equal(got, greedy(reference, ids, mask, max_new_tokens=12, eos_token_id=None))
    assert _DRAFT_LENGTHS[ours] > 3  # every pass kept all candidates: +2 each
    with pytest.raises(ValueError, match="num_assistant_tokens_schedule"):
        generate_tokens(ours, ids, mask, num_assistant_tokens_schedule="fast", **options)


def test_speculative_limits_are_clear_errors(tmp_path):
    _, ours = build(tmp_path / "a", "llama")
    _, bigger = build(tmp_path / "b", "llama", vocab_size=300)
    ids, mask = left_padded((5, 3))
    one = ids[:1], mask[:1]
    cases = [
        ({"prompt_lookup_num_tokens": 3, "num_beams": 2}, "beam search"),
        ({"prompt_lookup_num_tokens": 3, "assistant_model": ours}, "not both"),
        ({"assistant_model": bigger}, "vocabulary"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            generate_tokens(ours, *one, max_new_tokens=4, **options)
    with pytest.raises(ValueError, match="one device"):
        generate_tokens(ours, *one, max_new_tokens=4, assistant_model=bigger.to("meta"))
    with pytest.raises(ValueError, match="one sequence at a time"):
        generate_tokens(ours, ids, mask, max_new_tokens=4, prompt_lookup_num_tokens=3)


def test_text_generation_streams_and_loops_over_prompts(tmp_path):
    """model.generate with prompt lookup: each prompt decoded alone, the stream joining to the same text, stop
    strings ending it where they end plain decoding."""
    from .test_generate_text import PROMPTS, write_tiny_llama

    model = hfkit.AutoModelForCausalLM.from_pretrained(write_tiny_llama(tmp_path))
    plain = model.generate(PROMPTS, max_new_tokens=24)
    assert model.generate(PROMPTS, max_new_tokens=24, prompt_lookup_num_tokens=4) == plain
    pieces = list(model.generate(PROMPTS[1], max_new_tokens=24, stream=True, prompt_lookup_num_tokens=4))
    assert len(pieces) > 1 and "".join(pieces) == plain[1]
    stop = plain[1][len(plain[1]) // 2 :][:2]  # two characters from the middle: the text ends early
    stopped = model.generate(PROMPTS[1], max_new_tokens=24, stop_strings=[stop])
    assert len(stopped) < len(plain[1])
    assert model.generate(PROMPTS[1], max_new_tokens=24, stop_strings=[stop], prompt_lookup_num_tokens=4) == stopped
    saved = tmp_path / "generation_config.json"  # the option set by the model's files instead
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "prompt_lookup_num_tokens": 4}))
    assert model.generate(PROMPTS, max_new_tokens=24) == plain  # each prompt alone, as the option asks


def test_cli_generate_speculatively(tmp_path):
    from typer.testing import CliRunner

    from hfkit.cli.app import app

    from .test_generate_text import PROMPTS, write_tiny_llama

    path = str(write_tiny_llama(tmp_path))
    run = lambda *extra: CliRunner().invoke(app, ["generate", path, *PROMPTS[:2], "--max-new-tokens", "16", *extra])
    plain = run()
    assert plain.exit_code == 0
    for extra in (["--prompt-lookup", "4"], ["--assistant", path]):
        result = run(*extra)
        assert result.exit_code == 0 and result.stdout == plain.stdout, (extra, result.output)
    sampled = lambda *extra: CliRunner().invoke(app, ["generate", path, PROMPTS[0], "--max-new-tokens", "16",
                                                      "--temperature", "0.9", "--seed", "3", *extra])
    plain = sampled()
    assert plain.exit_code == 0
    for extra in (["--prompt-lookup", "4"], ["--assistant", path]):
        result = sampled(*extra)
        assert result.exit_code == 0 and result.stdout == plain.stdout, (extra, result.output)
    refused = run("--prompt-lookup", "4", "--assistant", path)
    assert refused.exit_code == 2 and "two sources" in refused.output


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_static_cache_passes_check_a_fixed_number_of_candidates(tmp_path, family, monkeypatch):
    """cache="static": padded fixed-shape passes through the preallocated cache, cropped after each check; a pass
    without candidates is greedy decoding's one-token step; an assistant steps through a static cache of its own
    (the model itself as its assistant: two caches)."""
    reference, ours = build(tmp_path, family)
    ids, mask = left_padded((11,))
    expected = greedy(reference, ids, mask, eos_token_id=None)
    for speculative in ({"prompt_lookup_num_tokens": 5}, {"assistant_model": ours, "num_assistant_tokens": 6}):
        got = generate_tokens(ours, ids, mask, max_new_tokens=NEW, eos_token_id=None, cache="static", **speculative)
        assert torch.equal(got, expected), (speculative, got, expected)
    calls = []

    def every_other_lookup_empty(ids, count, max_ngram):
        calls.append(1)
        return lookup_candidates(ids, count, max_ngram)[: 0 if len(calls) % 2 else count]

    monkeypatch.setattr(speculative_module, "lookup_candidates", every_other_lookup_empty)
    counted = Counted(ours)
    got = generate_tokens(counted, ids, mask, max_new_tokens=NEW, eos_token_id=None, cache="static",
                          prompt_lookup_num_tokens=5)
    assert torch.equal(got, expected)
    # after the prompt: greedy's one-token step where lookup found nothing, else 1 + 5 tokens, never between
    assert counted.widths[0] == ids.shape[1] and set(counted.widths[1:]) == {1, 6}, counted.widths
    draft = Counted(ours)
    got = generate_tokens(ours, ids, mask, max_new_tokens=NEW, eos_token_id=None, cache="static",
                          assistant_model=draft, num_assistant_tokens=6)
    assert torch.equal(got, expected)
    # the draft's own static cache: the prompt and the first token prefilled once, then one-token steps
    assert draft.widths[0] == ids.shape[1] + 1 and set(draft.widths[1:]) == {1}, draft.widths


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_compiled_speculative_decoding_on_cuda_is_greedy_decoding(tmp_path, family):
    """cache="static" on CUDA compiles the checking pass, the one-token step and the assistant's step (float32):
    the tokens of compiled greedy decoding, twice (the second call replays the graphs)."""
    _, ours = build(tmp_path / "model", family)
    _, other = build(tmp_path / "other", family, seed=1)
    ours, other = ours.cuda(), other.cuda()
    ids, mask = (t.cuda() for t in left_padded((11,)))
    expected = generate_tokens(ours, ids, mask, max_new_tokens=NEW, eos_token_id=None, cache="static")
    for speculative in ({"prompt_lookup_num_tokens": 5}, {"assistant_model": other, "num_assistant_tokens": 4},
                        {"assistant_model": ours}):
        for _ in range(2):
            got = generate_tokens(ours, ids, mask, max_new_tokens=NEW, eos_token_id=None, cache="static",
                                  **speculative)
            assert torch.equal(got, expected), speculative
