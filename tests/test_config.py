"""config.json parsing: HF names and defaults, label maps, round trip, and hostile inputs."""

from __future__ import annotations

import json

import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfkit.config import read_config_json
from hfkit.errors import CheckpointError, ConfigError, HfkitError
from hfkit.models.bert import BertConfig
from hfkit.models.distilbert import DistilBertConfig
from hfkit.models.roberta import RobertaConfig, XLMRobertaConfig
from hfkit.weights import checkpoint_files

PAIRS = [(BertConfig, transformers.BertConfig), (RobertaConfig, transformers.RobertaConfig),
         (XLMRobertaConfig, transformers.XLMRobertaConfig)]


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=lambda c: getattr(c, "__name__", ""))
def test_defaults_equal_transformers(ours, theirs):
    mine, ref = ours(), theirs()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                 "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
                 "initializer_range", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "classifier_dropout"):
        assert getattr(mine, name) == getattr(ref, name), name


def test_distilbert_names_and_defaults():
    ref = transformers.DistilBertConfig()
    mine = DistilBertConfig.from_dict(ref.to_dict())
    assert (mine.hidden_size, mine.num_hidden_layers, mine.num_attention_heads, mine.intermediate_size) == (ref.dim, ref.n_layers, ref.n_heads, ref.hidden_dim)
    assert (mine.seq_classif_dropout, mine.qa_dropout, mine.hidden_act) == (ref.seq_classif_dropout, ref.qa_dropout, ref.activation)
    out = mine.to_dict()
    assert out["dim"] == ref.dim and "hidden_size" not in out and "type_vocab_size" not in out


def test_round_trip_keeps_unknown_fields_and_string_label_keys():
    raw = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "id2label": {"0": "NEG", "1": "POS"},
           "my_custom_field": [1, 2], "torch_dtype": "bfloat16"}
    config = BertConfig.from_dict(raw)
    assert config.id2label == {0: "NEG", 1: "POS"} and config.label2id == {"NEG": 0, "POS": 1} and config.dtype == "bfloat16"
    out = config.to_dict()
    assert out["my_custom_field"] == [1, 2] and out["id2label"] == {"0": "NEG", "1": "POS"} and out["model_type"] == "bert"
    assert BertConfig.from_dict(json.loads(json.dumps(out))) == config


def test_num_labels_override_replaces_file_labels():
    config = BertConfig.from_dict({"id2label": {"0": "a", "1": "b"}}, num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and config.num_labels == 3
    assert BertConfig.from_dict({}, id2label={0: "x", 1: "y", 2: "z"}).label2id == {"x": 0, "y": 1, "z": 2}


@pytest.mark.parametrize("raw,match", [
    ({"hidden_size": "big"}, "hidden_size"),
    ({"hidden_size": 30, "num_attention_heads": 4}, "multiple"),
    ({"problem_type": "ranking"}, "problem_type"),
    ({"position_embedding_type": "relative_key"}, "relative_key"),
    ({"is_decoder": True}, "decoder"),
    ({"id2label": {"zero": "a"}}, "integers"),
    ({"layer_norm_eps": None}, "layer_norm_eps"),
    ({"num_labels": 10**12}, "more than"),  # found by the fuzz test below: LABEL_i names for each ran out of memory
])
def test_bad_fields_are_config_errors(raw, match):
    with pytest.raises(ConfigError, match=match):
        BertConfig.from_dict(raw)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
FIELDS = st.sampled_from(["hidden_size", "num_attention_heads", "id2label", "label2id", "num_labels", "vocab_size",
                          "hidden_act", "layer_norm_eps", "problem_type", "pad_token_id", "torch_dtype", "other"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(FIELDS, JSON, max_size=5))
def test_any_config_json_loads_or_fails_with_config_error(raw):
    try:
        BertConfig.from_dict(raw)
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64))
def test_any_config_bytes_read_or_fail_clearly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg")
    (path / "config.json").write_bytes(data)
    try:
        read_config_json(path)
    except ConfigError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=96))
def test_any_safetensors_bytes_read_or_fail_clearly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("st")
    (path / "model.safetensors").write_bytes(data)
    try:
        checkpoint_files(path)
    except CheckpointError:
        pass


def test_errors_share_one_base():
    assert issubclass(ConfigError, HfkitError) and issubclass(CheckpointError, HfkitError)
