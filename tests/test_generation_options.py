"""Decoding options token-identical to transformers' `generate` on tiny random decoders, batch of 3 left-padded
prompts: logits processors, min/max lengths, EOS lists, stop strings, seeded sampling, beam search, and the
generation_config.json fields that set them."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, normalizers, trainers

import hfkit
from hfkit.generation import GenerationConfig, generate_tokens
from hfkit.generation.stopping import StopStrings

from .parity.test_decoder_matrix import build, left_padded
from .tiny_tokenizers import byte_level_bpe

FAMILIES = ["llama", "qwen2"]
NEW = 12


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def both(reference, ours, ids, mask, sample_seed: int | None = None, **options):
    """(transformers' tokens, ours) for the same options; sampling seeded the same way on both sides."""
    if sample_seed is not None:
        torch.manual_seed(sample_seed)
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, **{"do_sample": False, **options})
    if sample_seed is not None:
        torch.manual_seed(sample_seed)
    return expected, generate_tokens(ours, ids, mask, **options)


def assert_same(expected, got):
    assert got.shape == expected.shape and torch.equal(got, expected), (expected, got)


@pytest.fixture(params=FAMILIES)
def pair(request, tmp_path):
    reference, ours = build(tmp_path, request.param)
    ids, mask = left_padded()
    with torch.no_grad():
        greedy = reference.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    return reference, ours, ids, mask, greedy


def early_eos(greedy, row: int = 0, step: int = 3) -> int:
    """A token greedy decoding emits at `step` in `row`: used as EOS, it ends that row early."""
    return int(greedy[row, -NEW + step])


def test_repetition_penalty(pair):
    reference, ours, ids, mask, greedy = pair
    expected, got = both(reference, ours, ids, mask, max_new_tokens=NEW, repetition_penalty=1.5, eos_token_id=None)
    assert_same(expected, got)
    assert not torch.equal(got, greedy)  # the penalty changed the continuation


def test_min_new_tokens_suppresses_eos(pair):
    reference, ours, ids, mask, greedy = pair
    eos = early_eos(greedy)
    expected, got = both(reference, ours, ids, mask, max_new_tokens=NEW, min_new_tokens=6, eos_token_id=eos)
    assert_same(expected, got)
    assert (got[0, -NEW:-NEW + 6] != eos).all()
    assert_same(*both(reference, ours, ids, mask, max_new_tokens=NEW, min_length=ids.shape[1] + 5, eos_token_id=eos))


def test_eos_list_and_pad(pair):
    reference, ours, ids, mask, greedy = pair
    eos = [early_eos(greedy, 0, 2), early_eos(greedy, 2, 5)]
    expected, got = both(reference, ours, ids, mask, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=0)
    assert_same(expected, got)
    assert (got[0, -NEW + 3:] == 0).all()  # row 0 ended at its third token and is padded after


def test_max_length_and_max_new_tokens(pair):
    reference, ours, ids, mask, _ = pair
    T = ids.shape[1]
    expected, got = both(reference, ours, ids, mask, max_length=T + 5, eos_token_id=None)
    assert_same(expected, got)
    assert got.shape[1] == T + 5
    expected, got = both(reference, ours, ids, mask, max_length=T + 5, max_new_tokens=8, eos_token_id=None)
    assert_same(expected, got)  # max_new_tokens takes precedence
    assert got.shape[1] == T + 8


@pytest.mark.parametrize("warpers", [dict(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05),
                                     dict(min_p=0.2, top_k=0), dict(temperature=1.5, min_p=0.1, repetition_penalty=1.2)])
def test_seeded_sampling_with_min_p(pair, warpers):
    reference, ours, ids, mask, _ = pair
    options = dict(do_sample=True, max_new_tokens=16, **warpers)
    assert_same(*both(reference, ours, ids, mask, sample_seed=123, **options))
    seeded = lambda: generate_tokens(ours, ids, mask, generator=torch.Generator().manual_seed(7), **options)
    assert torch.equal(seeded(), seeded())  # reproducible run to run


def test_num_return_sequences_when_sampling(pair):
    reference, ours, ids, mask, _ = pair
    expected, got = both(reference, ours, ids, mask, sample_seed=5, do_sample=True, max_new_tokens=8, num_return_sequences=2)
    assert_same(expected, got)
    assert got.shape[0] == 6


BEAMS = [dict(), dict(length_penalty=0.5, early_stopping=True), dict(length_penalty=2.0, early_stopping=False),
         dict(length_penalty=2.0, early_stopping="never", num_return_sequences=3),
         dict(early_stopping=True, num_return_sequences=4, repetition_penalty=1.3),
         dict(length_penalty=-1.0, early_stopping="never", min_new_tokens=5)]


@pytest.mark.parametrize("options", BEAMS, ids=[json.dumps(o) for o in BEAMS])
def test_beam_search(pair, options):
    reference, ours, ids, mask, greedy = pair
    eos = [early_eos(greedy, 0, 2), early_eos(greedy, 1, 4)]  # beams finish at different lengths
    expected, got = both(reference, ours, ids, mask, max_new_tokens=NEW, num_beams=4, eos_token_id=eos, **options)
    assert_same(expected, got)
    assert got.shape[0] == 3 * options.get("num_return_sequences", 1)


@pytest.mark.parametrize("eos", [None, "two"])
def test_beam_sampling_with_the_same_seed_is_identical(pair, eos):
    reference, ours, ids, mask, greedy = pair
    eos = eos and [early_eos(greedy, 0, 2), early_eos(greedy, 1, 4)]
    options = dict(max_new_tokens=NEW, num_beams=4, do_sample=True, temperature=0.8, top_k=5, top_p=0.9, min_p=0.05,
                   eos_token_id=eos, num_return_sequences=2)
    assert_same(*both(reference, ours, ids, mask, sample_seed=11, **options))


def test_beam_search_without_eos_and_one_beam_is_greedy(pair):
    reference, ours, ids, mask, greedy = pair
    assert_same(*both(reference, ours, ids, mask, max_new_tokens=NEW, num_beams=4, eos_token_id=None))
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=NEW, num_beams=1, eos_token_id=None), greedy)


def test_generation_config_json_fields(tmp_path):
    reference, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    with torch.no_grad():
        greedy = reference.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    for fields in ({"num_beams": 4, "length_penalty": 0.5, "early_stopping": True, "num_return_sequences": 2,
                    "max_new_tokens": 9, "eos_token_id": [early_eos(greedy, 0, 2), 1], "pad_token_id": 0},
                   {"repetition_penalty": 1.4, "min_new_tokens": 4, "max_length": ids.shape[1] + 10,
                    "eos_token_id": early_eos(greedy), "pad_token_id": 0}):
        (tmp_path / "generation_config.json").write_text(json.dumps(fields))
        assert all(getattr(GenerationConfig.for_model(ours), k) == v for k, v in fields.items())
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        with torch.no_grad():
            expected = reloaded.generate(ids, attention_mask=mask)
        assert_same(expected, generate_tokens(ours, ids, mask))


# Stop strings need a real tokenizer: a tiny byte-level BPE one and a Llama sized to it.
CORPUS = ["the quick brown fox jumps over the lazy dog. ", "Once upon a time, in a land far away, there lived"]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("stop-strings")
    raw = byte_level_bpe(CORPUS * 5, ["<pad>", "</s>", "<s>"])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                                     pad_token="<pad>", padding_side="left")
    tokenizer.save_pretrained(path)
    reference, ours = build(path, "llama", vocab_size=len(tokenizer))
    batch = tokenizer(["the quick", "Once upon a time, in", "dog"], return_tensors="pt", padding=True)
    return reference, ours, tokenizer, batch["input_ids"], batch["attention_mask"], path


def ascii_stop(tokenizer, ids: list[int]) -> str:
    """Two characters spanning the first boundary between consecutive printable-ASCII tokens in `ids`."""
    pieces = [tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids)]
    for left, right in zip(pieces, pieces[1:]):
        if left and right and (left[-1] + right[0]).isascii() and (left[-1] + right[0]).isprintable():
            return left[-1] + right[0]
    pytest.skip("no printable token pair in the greedy continuation")


@pytest.mark.parametrize("eos", [None, 1])
def test_stop_strings(text_model, eos):
    reference, ours, tokenizer, ids, mask, _ = text_model
    with torch.no_grad():
        greedy = reference.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    stops = [ascii_stop(tokenizer, greedy[0, -NEW:].tolist()), ascii_stop(tokenizer, greedy[2, -NEW + 2:].tolist()), "zzqq"]
    options = dict(max_new_tokens=NEW, stop_strings=stops, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, do_sample=False, tokenizer=tokenizer, **options)
    got = generate_tokens(ours, ids, mask, tokenizer=tokenizer, **options)
    assert_same(expected, got)
    if eos is not None:  # rows a stop string ended are padded (without EOS transformers lets them run on)
        assert (got[0, -NEW + 2:] == 0).all()
    beams = dict(options, num_beams=4, stop_strings=stops[0])
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, do_sample=False, tokenizer=tokenizer, **beams)
    assert_same(expected, generate_tokens(ours, ids, mask, tokenizer=tokenizer, **beams))


def test_stop_string_pieces_match_transformers(text_model):
    """Our token pieces (from either tokenizer) decide exactly as transformers' StopStringCriteria."""
    _, _, tokenizer, ids, _, path = text_model
    from transformers.generation.stopping_criteria import StopStringCriteria

    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(0, len(tokenizer), (400, 4), generator=gen)
    stops = ["e ", "th", "o", " the", "."]
    expected = StopStringCriteria(tokenizer, stops)(rows, None)
    assert expected.any()
    assert torch.equal(StopStrings(tokenizer, stops)(rows), expected)
    assert torch.equal(StopStrings(hfkit.Tokenizer.from_pretrained(path), stops)(rows), expected)


def sentencepiece_like(byte_fallback: bool) -> transformers.PreTrainedTokenizerFast:
    """A Llama-2-style "▁" vocabulary: text pieces as str, or as bytes with `<0xNN>` byte-fallback tokens."""
    raw = RawTokenizer(models.BPE(unk_token="<unk>", byte_fallback=byte_fallback))
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    fallback = [decoders.ByteFallback()] if byte_fallback else []
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), *fallback, decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    raw.train_from_iterator(CORPUS * 5, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    if byte_fallback:
        raw.add_tokens([f"<0x{b:02X}>" for b in range(256)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")


@pytest.mark.parametrize("byte_fallback", [True, False])
def test_stop_string_pieces_without_byte_level(byte_fallback):
    from transformers.generation.stopping_criteria import StopStringCriteria

    tokenizer = sentencepiece_like(byte_fallback)
    rows = torch.randint(0, len(tokenizer), (500, 4), generator=torch.Generator().manual_seed(0))
    stops = ["e ", "th", "o", " the", "."]
    expected = StopStringCriteria(tokenizer, stops)(rows, None)
    assert expected.any()
    assert torch.equal(StopStrings(tokenizer, stops)(rows), expected)


def test_stop_strings_need_a_tokenizer(pair):
    _, ours, ids, mask, _ = pair
    with pytest.raises(ValueError, match="tokenizer"):
        generate_tokens(ours, ids, mask, max_new_tokens=4, stop_strings=["x"])


def test_text_generation_passes_options(text_model):
    reference, _, tokenizer, ids, mask, path = text_model
    model = hfkit.AutoModelForCausalLM.from_pretrained(path)
    prompts = ["the quick", "Once upon a time, in", "dog"]
    with torch.no_grad():
        out = reference.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=4, repetition_penalty=1.3,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    assert model.generate(prompts, max_new_tokens=8, num_beams=4, repetition_penalty=1.3) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_options_match_transformers_on_the_gpu(text_model, exact_cuda_matmuls):
    """Processors, stop strings and beam search on the GPU: the tokens transformers' generate gives there."""
    reference, _, tokenizer, ids, mask, path = text_model
    reference, ids, mask = reference.cuda(), ids.cuda(), mask.cuda()
    ours = hfkit.AutoModelForCausalLM.from_pretrained(path, device="cuda")
    with torch.no_grad():
        greedy = reference.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    stop = ascii_stop(tokenizer, greedy[0, -NEW:].tolist())
    for options in (dict(repetition_penalty=1.3, min_new_tokens=3, stop_strings=[stop], eos_token_id=[1, 2]),
                    dict(num_beams=4, length_penalty=0.5, early_stopping=True, num_return_sequences=2, eos_token_id=1),
                    dict(do_sample=True, min_p=0.1, temperature=0.8)):
        options = dict(max_new_tokens=NEW, pad_token_id=0, **options)
        torch.manual_seed(0)
        with torch.no_grad():
            expected = reference.generate(ids, attention_mask=mask, tokenizer=tokenizer, **{"do_sample": False, **options})
        torch.manual_seed(0)
        got = generate_tokens(ours, ids, mask, tokenizer=tokenizer, **options)
        assert got.device.type == "cuda"
        assert_same(expected, got)


@pytest.mark.parametrize(("cache", "every"), [("dynamic", 3), ("static", 3), ("static", 16)])
def test_sampling_checks_for_eos_every_few_tokens(pair, monkeypatch, cache, every):
    """With decode.SAMPLED_EOS_CHECK_EVERY > 1 (on CUDA by default, forced here on the CPU) the sampled loop reads
    back "every row finished?" only every few tokens: the same tokens as every token (cut where that loop stops), and
    the generator left in the same state (the extra steps' draws undone), for EOS lists that finish the rows at
    several steps; with a generator passed and the default one."""
    from hfkit.generation import decode

    _, ours, ids, mask, _ = pair
    options = dict(do_sample=True, temperature=0.8, top_k=20, max_new_tokens=NEW, pad_token_id=0, cache=cache)
    free = generate_tokens(ours, ids, mask, generator=torch.Generator().manual_seed(3), eos_token_id=None, **options)
    T = ids.shape[1]
    for steps in [(1, 4, 7), (2, 2, 5), (8, 0, 3)]:  # each row's EOS by then: every row finishes early
        eos = [int(free[row, T + step]) for row, step in enumerate(steps)]
        runs = []
        for check_every in (1, every):
            monkeypatch.setattr(decode, "SAMPLED_EOS_CHECK_EVERY", {"cpu": check_every})
            generator = torch.Generator().manual_seed(3)
            out = generate_tokens(ours, ids, mask, generator=generator, eos_token_id=eos, **options)
            torch.manual_seed(9)
            default = generate_tokens(ours, ids, mask, eos_token_id=eos, **options)
            runs.append((out, generator.get_state(), default, torch.get_rng_state()))
        (out, state, default, default_state), (out_n, state_n, default_n, default_state_n) = runs
        assert torch.equal(out_n, out) and torch.equal(default_n, default), eos
        assert torch.equal(state_n, state) and torch.equal(default_state_n, default_state), eos
