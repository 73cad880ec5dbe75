"""course_lib.encoder against transformers' BertModel (the course's MiniLM) and PyTorch's TransformerEncoderLayer."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from course_lib.assets import encoder_path
from course_lib.data import movie_reviews_frame
from course_lib.pooling import masked_mean
from course_lib.encoder import (
    IGNORED_NAMES,
    Embeddings,
    Encoder,
    EncoderConfig,
    SequenceClassifier,
    bert_name_map,
    count_parameters_by_component,
    load_pretrained_encoder,
    sinusoidal_positions,
)

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations

ATOL = 1e-5
MINILM_PARAMETERS = 22_713_216  # all-MiniLM-L6-v2 as published: 22.7M


@pytest.fixture(scope="module")
def course_encoder():
    model, _ = load_pretrained_encoder()
    return model


@pytest.fixture(scope="module")
def reviews():
    """Twelve fresh and rotten movie reviews of different lengths."""
    frame = movie_reviews_frame()
    return frame.groupby("label").head(6)["text"].tolist()


@pytest.fixture(scope="module")
def batches(tokenizer, reviews):
    """Tokenized inputs: a padded batch, one review without padding, and padded sentence pairs."""
    pairs = tokenizer(reviews[:6], reviews[6:], padding=True, return_tensors="pt")
    assert pairs["token_type_ids"].eq(1).any() and pairs["attention_mask"].eq(0).any()
    padded = tokenizer(reviews, padding=True, return_tensors="pt")
    assert padded["attention_mask"].eq(0).any()
    return {"padded reviews": padded, "single review": tokenizer(reviews[:1], return_tensors="pt"),
            "sentence pairs": pairs}


def run_course(model, batch, output_attentions=False):
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     output_attentions=output_attentions)


def run_hf(model, batch, output_attentions=False):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True, output_attentions=output_attentions)


def max_diff(ours, theirs) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))


# ----------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("inputs", ["padded reviews", "single review", "sentence pairs"])
def test_every_hidden_state_and_attention_equals_bert_eager(course_encoder, hf_encoder, batches, inputs):
    batch = batches[inputs]
    ours, theirs = run_course(course_encoder, batch, True), run_hf(hf_encoder, batch, True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 7
    assert max_diff(ours.hidden_states, theirs.hidden_states) <= ATOL
    assert len(ours.attentions) == len(theirs.attentions) == 6
    assert max_diff(ours.attentions, theirs.attentions) <= ATOL
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=0, atol=ATOL)


@pytest.mark.parametrize("inputs", ["padded reviews", "single review", "sentence pairs"])
def test_fast_path_hidden_states_equal_bert_sdpa(course_encoder, hf_encoder_sdpa, batches, inputs):
    batch = batches[inputs]
    ours, theirs = run_course(course_encoder, batch), run_hf(hf_encoder_sdpa, batch)
    assert ours.attentions is None
    assert max_diff(ours.hidden_states, theirs.hidden_states) <= ATOL
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_both_paths_equal_bert_in_float64(course_encoder, hf_encoder, batches):
    """In float64 the attention kernels agree to rounding: the float32 gap between them is rounding too."""
    batch = batches["sentence pairs"]
    ours, theirs = copy.deepcopy(course_encoder).double(), copy.deepcopy(hf_encoder).double()
    expected = run_hf(theirs, batch, True)
    for output_attentions in (True, False):
        out = run_course(ours, batch, output_attentions)
        assert max_diff(out.hidden_states, expected.hidden_states) <= 1e-10
        torch.testing.assert_close(out.pooler_output, expected.pooler_output, rtol=0, atol=1e-10)


def test_name_map_covers_every_bert_weight_and_every_course_parameter_once(course_encoder, hf_encoder):
    names = bert_name_map(6)
    assert set(hf_encoder.state_dict()) == set(names)
    assert set(load_file(encoder_path() / "model.safetensors")) == set(names) | IGNORED_NAMES
    assert sorted(names.values()) == sorted(course_encoder.state_dict())
    for hf_name, course_name in names.items():
        assert torch.equal(hf_encoder.state_dict()[hf_name], course_encoder.state_dict()[course_name]), hf_name


def test_classifier_logits_equal_bert_for_sequence_classification(course_encoder, batches):
    from transformers import BertForSequenceClassification
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the new classifier's "newly initialized" notice is expected here
    try:
        torch.manual_seed(0)
        hf_classifier = BertForSequenceClassification.from_pretrained(encoder_path(), num_labels=3).eval()
    finally:
        logging.set_verbosity(verbosity)
    ours = SequenceClassifier(course_encoder.config, num_labels=3, encoder=course_encoder).eval()
    ours.classifier.load_state_dict(hf_classifier.classifier.state_dict())
    batch = batches["sentence pairs"]
    with torch.no_grad():
        expected = hf_classifier(**batch).logits
        logits = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert logits.shape == (6, 3)
    torch.testing.assert_close(logits, expected, rtol=0, atol=ATOL)


def test_mean_pooling_averages_real_tokens_only(course_encoder, batches):
    batch = batches["padded reviews"]
    hidden = run_course(course_encoder, batch).last_hidden_state.numpy()
    lengths = batch["attention_mask"].sum(1).tolist()
    expected = np.stack([hidden[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
    np.testing.assert_allclose(masked_mean(torch.from_numpy(hidden), batch["attention_mask"]).numpy(), expected,
                               rtol=0, atol=1e-6)
    classifier = SequenceClassifier(course_encoder.config, 2, pooling="mean", encoder=course_encoder).eval()
    with torch.no_grad():
        logits = classifier(batch["input_ids"], batch["attention_mask"])
    weight, bias = (t.detach().numpy() for t in (classifier.classifier.weight, classifier.classifier.bias))
    expected_logits = expected @ weight.T + bias
    np.testing.assert_allclose(logits.numpy(), expected_logits, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------- variants
def torch_layer_from(layer, config: EncoderConfig) -> nn.TransformerEncoderLayer:
    """PyTorch's own encoder layer with the course layer's weights."""
    D = config.hidden_size
    peer = nn.TransformerEncoderLayer(D, config.num_heads, config.intermediate_size, dropout=0.0, activation="gelu",
                                      layer_norm_eps=config.layer_norm_eps, batch_first=True,
                                      norm_first=config.norm_first).double().eval()
    with torch.no_grad():
        a = layer.attention
        peer.self_attn.in_proj_weight.copy_(torch.cat([a.query.weight, a.key.weight, a.value.weight]))
        peer.self_attn.in_proj_bias.copy_(torch.cat([a.query.bias, a.key.bias, a.value.bias]))
        peer.self_attn.out_proj.load_state_dict(a.out_proj.state_dict())
        peer.linear1.load_state_dict(layer.feed_forward.linear1.state_dict())
        peer.linear2.load_state_dict(layer.feed_forward.linear2.state_dict())
        peer.norm1.load_state_dict(layer.attention_norm.state_dict())
        peer.norm2.load_state_dict(layer.feed_forward_norm.state_dict())
    return peer


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_encoder_layer_equals_torch_transformer_encoder_layer(norm_first):
    config = EncoderConfig(vocab_size=50, hidden_size=24, num_layers=2, num_heads=4, intermediate_size=40,
                           max_position=16, dropout=0.0, norm_first=norm_first)
    torch.manual_seed(0)
    model = Encoder(config).double().eval()
    for parameter in model.parameters():  # LayerNorms start at (1, 0); move them so they count
        nn.init.normal_(parameter, std=0.3)
    input_ids = torch.randint(0, 50, (3, 9))
    attention_mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
    out = model(input_ids, attention_mask, output_attentions=True)

    peer = nn.TransformerEncoder(torch_layer_from(model.layers[0], config), num_layers=2, enable_nested_tensor=False,
                                 norm=copy.deepcopy(model.final_norm)).eval()
    peer.layers[1] = torch_layer_from(model.layers[1], config)
    expected = peer(out.hidden_states[0], src_key_padding_mask=attention_mask == 0)
    torch.testing.assert_close(out.last_hidden_state, expected, rtol=0, atol=1e-12)


def test_pre_ln_encoder_with_pretrained_weights_runs_and_differs_from_post_ln(course_encoder, batches):
    pre_ln = Encoder(EncoderConfig(norm_first=True)).eval()
    missing, unexpected = pre_ln.load_state_dict(course_encoder.state_dict(), strict=False)
    assert missing == ["final_norm.weight", "final_norm.bias"] and unexpected == []
    post, pre = run_course(course_encoder, batches["padded reviews"]), run_course(pre_ln, batches["padded reviews"])
    assert torch.isfinite(pre.last_hidden_state).all()
    assert torch.equal(pre.hidden_states[0], post.hidden_states[0])  # same embeddings
    assert float((pre.hidden_states[1] - post.hidden_states[1]).abs().max()) > 0.1
    torch.testing.assert_close(pre.last_hidden_state.mean(-1), torch.zeros(12, pre.last_hidden_state.shape[1]),
                               rtol=0, atol=1e-4)  # the final LayerNorm (weight 1, bias 0) centres each vector


def test_dropout_changes_outputs_in_training_mode_only(course_encoder, batches):
    batch = batches["single review"]
    model = copy.deepcopy(course_encoder)
    evaluated = run_course(model.eval(), batch).last_hidden_state
    torch.manual_seed(0)
    trained = run_course(model.train(), batch).last_hidden_state
    assert float((trained - evaluated).abs().max()) > 1e-3
    no_dropout = Encoder(EncoderConfig(dropout=0.0))
    no_dropout.load_state_dict(course_encoder.state_dict())
    torch.testing.assert_close(run_course(no_dropout.train(), batch).last_hidden_state, evaluated, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------------------------- positions
@pytest.mark.parametrize("position", [0, 1, 7, 100, 511])
def test_sinusoidal_positions_follow_the_closed_form(position):
    dim = 384
    table = sinusoidal_positions(512, dim).numpy()
    i = np.arange(dim // 2)
    angle = position / np.power(10000.0, 2 * i / dim)
    np.testing.assert_allclose(table[position, 0::2], np.sin(angle), rtol=0, atol=1e-6)
    np.testing.assert_allclose(table[position, 1::2], np.cos(angle), rtol=0, atol=1e-6)
    assert table[position, 2] == pytest.approx(math.sin(position / 10000 ** (2 / dim)), abs=1e-6)


def test_sinusoidal_embeddings_add_the_fixed_table():
    config = EncoderConfig(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                           max_position=10, dropout=0.0, position_embedding="sinusoidal")
    embeddings = Embeddings(config).eval()
    assert "sinusoidal" not in embeddings.state_dict() and not hasattr(embeddings, "position_embeddings")
    input_ids = torch.tensor([[3, 4, 5, 6]])
    expected = embeddings.word_embeddings(input_ids) + embeddings.token_type_embeddings.weight[0] \
        + sinusoidal_positions(10, 8)[:4]
    torch.testing.assert_close(embeddings(input_ids), embeddings.norm(expected))


# ----------------------------------------------------------------------------------------------- counting
def test_parameter_count_equals_bert_and_the_closed_form(course_encoder, hf_encoder):
    total = sum(p.numel() for p in course_encoder.parameters())
    assert total == sum(p.numel() for p in hf_encoder.parameters()) == MINILM_PARAMETERS
    V, P, D, I, L = 30522, 512, 384, 1536, 6  # vocabulary, positions, hidden, feed-forward, layers
    by_component = count_parameters_by_component(course_encoder)
    assert by_component == {
        "token embeddings": V * D,
        "position embeddings": P * D,
        "token-type embeddings": 2 * D,
        "layer norms": (1 + 2 * L) * 2 * D,
        "attention": L * 4 * (D * D + D),
        "feed-forward": L * (D * I + I + I * D + D),
        "pooler": D * D + D,
    }
    assert count_parameters_by_component(hf_encoder) == by_component


# ----------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change,error,message", [
    (dict(input_ids=torch.ones(2, 4)), TypeError, "input_ids must be an integer tensor"),
    (dict(input_ids=torch.ones(4, dtype=torch.long)), ValueError, r"\(batch, tokens\) with at least one token"),
    (dict(input_ids=torch.ones(2, 0, dtype=torch.long)), ValueError, "at least one token"),
    (dict(input_ids=torch.full((2, 4), 30522)), ValueError, r"\[0, 30522\) \(vocab_size\), got values from 30522"),
    (dict(input_ids=torch.ones(1, 513, dtype=torch.long)), ValueError, "513 tokens, more than max_position=512"),
    (dict(attention_mask=torch.ones(2, 5, dtype=torch.long)), ValueError, r"shape of input_ids \(2, 4\)"),
    (dict(attention_mask=torch.ones(2, 4)), TypeError, "attention_mask must be an integer"),
    (dict(attention_mask=torch.full((2, 4), 2)), ValueError, "0 = padding, 1 = token"),
    (dict(attention_mask=torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])), ValueError, "at least one token"),
    (dict(token_type_ids=torch.full((2, 4), 2)), ValueError, "type_vocab_size"),
])
def test_encoder_rejects_bad_inputs_with_a_clear_message(course_encoder, change, error, message):
    inputs = dict(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=None, token_type_ids=None) | change
    with pytest.raises(error, match=message):
        course_encoder(**inputs)


def test_config_rejects_sizes_that_do_not_fit():
    with pytest.raises(ValueError, match=r"hidden_size \(384\) must be divisible by num_heads \(5\)"):
        EncoderConfig(num_heads=5)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        EncoderConfig(num_layers=0)
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        EncoderConfig.from_bert_config({"hidden_act": "relu"})
    with pytest.raises(ValueError, match="even dim"):
        sinusoidal_positions(10, 7)
    with pytest.raises(ValueError, match=r"config.json lacks \['vocab_size'"):
        EncoderConfig.from_bert_config({"model_type": "bert"})


def test_boolean_attention_mask_works_like_the_0_1_mask(course_encoder, batches):
    batch = batches["padded reviews"]
    with torch.no_grad():
        expected = course_encoder(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        output = course_encoder(batch["input_ids"], batch["attention_mask"].bool()).last_hidden_state
    assert torch.equal(output, expected)


@pytest.fixture
def checkpoint_copy(tmp_path):
    """A writable copy of the MiniLM folder's config.json and weights."""
    (tmp_path / "config.json").write_text((encoder_path() / "config.json").read_text())
    return tmp_path, load_file(encoder_path() / "model.safetensors")


def test_loading_fails_clearly_on_a_missing_weight(checkpoint_copy):
    folder, weights = checkpoint_copy
    del weights["encoder.layer.3.output.LayerNorm.bias"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(KeyError, match=r"missing \['encoder.layer.3.output.LayerNorm.bias'\]; unexpected none"):
        load_pretrained_encoder(folder)


def test_loading_fails_clearly_on_an_unexpected_weight(checkpoint_copy):
    folder, weights = checkpoint_copy
    weights["cls.predictions.bias"] = torch.zeros(30522)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(KeyError, match=r"missing none; unexpected \['cls.predictions.bias'\]"):
        load_pretrained_encoder(folder)


def test_loading_reads_sizes_from_config_and_fails_on_a_shape_mismatch(checkpoint_copy):
    folder, weights = checkpoint_copy
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"intermediate_size": 1024}))
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"encoder.layer.0.intermediate.dense.weight has shape \(1536, 384\)"):
        load_pretrained_encoder(folder)


def test_loading_from_a_folder_without_weights_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained_encoder(tmp_path)
