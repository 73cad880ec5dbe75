"""The course's models against ``transformers`` and ``peft`` on random configurations, not only the course's own.

Each case draws sizes from a seeded generator, builds the ``transformers`` model with random weights, loads it
into the course's model through the public loaders (a model in memory, a state dict, or a saved folder), and
compares logits or hidden states: the encoder with padding on either side, GPT-2 with both activations, Llama
with grouped-query heads, tied and untied embeddings, every rotary scaling in both config layouts and up to
512 positions through the KV cache, and LoRA over ranks, alphas and targets.
"""
from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch

import course_lib  # noqa: F401  (offline mode first)
from course_lib.attention import KVCache
from course_lib.encoder import load_pretrained_encoder
from course_lib.gpt import load_gpt2
from course_lib.llama import LlamaConfig, load_pretrained_decoder
from course_lib.lora import apply_lora, lora_layers
from course_lib.runtime.errors import CourseInputError

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytestmark = pytest.mark.numeric
TOL = dict(atol=2e-5, rtol=1e-4)


def _draw(seed: int, **choices):
    rng = random.Random(seed)
    return {name: rng.choice(options) for name, options in choices.items()}


# ----------------------------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("seed", range(6))
def test_encoder_equals_bert_on_random_sizes_with_padding_on_either_side(seed):
    size = _draw(seed, heads=[1, 2, 4], head_dim=[4, 8, 16], layers=[1, 2, 3], ratio=[1, 2, 4], side=["left", "right"])
    hidden = size["heads"] * size["head_dim"]
    config = transformers.BertConfig(vocab_size=97, hidden_size=hidden, num_hidden_layers=size["layers"],
                                     num_attention_heads=size["heads"], intermediate_size=hidden * size["ratio"] + 3,
                                     max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-6,
                                     attn_implementation="eager")
    torch.manual_seed(seed)
    theirs = transformers.BertModel(config).eval()
    ours, read = load_pretrained_encoder(theirs)
    assert (read.hidden_size, read.num_heads, read.num_layers) == (hidden, size["heads"], size["layers"])
    ids = torch.randint(1, 97, (3, 12), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, real in enumerate((12, 7, 3)):  # three lengths, padded on one side
        if size["side"] == "right":
            mask[row, real:] = 0
        else:
            mask[row, :12 - real] = 0
    types = (torch.arange(12) >= 6).long().expand(3, 12)
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    for layer, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states)):
        torch.testing.assert_close(a[real], b[real], **TOL, msg=lambda m, i=layer: f"hidden state {i}: {m}")
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, **TOL)


def test_encoder_loads_a_classifier_with_or_without_its_head_from_a_folder_or_a_state_dict(tmp_path):
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=20, num_labels=3)
    torch.manual_seed(0)
    theirs = transformers.BertForSequenceClassification(config).eval()
    theirs.save_pretrained(tmp_path)
    ids = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask).logits
        for source, kwargs in ((tmp_path, {}), (theirs.state_dict(), {"config": theirs.config.to_dict()}),
                               (theirs, {})):
            classifier, _ = load_pretrained_encoder(source, head="keep", **kwargs)
            torch.testing.assert_close(classifier(ids, mask), expected, **TOL)
    with pytest.warns(UserWarning, match=r"left out the task head \['classifier.bias', 'classifier.weight'\]"):
        body, _ = load_pretrained_encoder(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(body(ids, mask).pooler_output, theirs.bert(ids, attention_mask=mask).pooler_output)
    with pytest.raises(CourseInputError, match="head='keep' loads a sequence-classification head.*absent"):
        load_pretrained_encoder(theirs.bert, head="keep")
    with pytest.raises(CourseInputError, match="head must be one of 'drop', 'keep'"):
        load_pretrained_encoder(theirs, head="yes")
    with pytest.raises(CourseInputError, match="state dict carries no sizes"):
        load_pretrained_encoder(theirs.state_dict())
    with pytest.raises(CourseInputError, match="expected a model folder.*got the file"):
        load_pretrained_encoder(tmp_path / "config.json")


# ----------------------------------------------------------------------------------------------- GPT-2
@pytest.mark.parametrize("seed", range(4))
def test_gpt2_weights_load_and_give_transformers_logits(seed):
    size = _draw(seed, heads=[1, 2, 4], head_dim=[4, 8], layers=[1, 2, 3], inner=[None, 40],
                 act=["gelu_new", "gelu_pytorch_tanh", "gelu"], eps=[1e-5, 1e-3], whole=[True, False])
    config = transformers.GPT2Config(vocab_size=101, n_positions=48, n_embd=size["heads"] * size["head_dim"],
                                     n_layer=size["layers"], n_head=size["heads"], n_inner=size["inner"],
                                     activation_function=size["act"], layer_norm_epsilon=size["eps"],
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    theirs = transformers.GPT2LMHeadModel(config).eval()
    source = theirs if size["whole"] else theirs.state_dict()
    ours = load_gpt2(source, config=None if size["whole"] else config.to_dict())
    assert ours.config.activation == ("gelu" if size["act"] == "gelu" else "gelu_tanh")
    ids = torch.randint(0, 101, (2, 30), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], theirs(ids).logits, **TOL)


def test_gpt2_needs_its_own_activation_exact_gelu_would_be_off():
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    theirs = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # pre-activations of order 1, where the two GELUs differ (at init they are near 0)
        for block in theirs.transformer.h:
            block.mlp.c_fc.weight.mul_(50)
    ours = load_gpt2(theirs)
    exact = load_gpt2(theirs.state_dict(), config={**config.to_dict(), "activation_function": "gelu"})
    ids = torch.arange(12)[None]
    with torch.no_grad():
        expected = theirs(ids).logits
        assert (exact(ids)[0] - expected).abs().max() > 1e-5 > (ours(ids)[0] - expected).abs().max()


# ----------------------------------------------------------------------------------------------- Llama
ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
    "yarn, every key": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
                        "beta_fast": 16, "beta_slow": 2, "mscale": 1.0, "mscale_all_dim": 0.5, "truncate": False},
}


def _llama_config(seed: int, rope: dict | None, layout: str) -> dict:
    size = _draw(seed, heads=[4, 8], kv=[1, 2, 4], head_dim=[8, 16], tie=[True, False], theta=[500.0, 1e4, 5e5])
    config = {"model_type": "llama", "vocab_size": 89, "hidden_size": 32, "intermediate_size": 56,
              "num_hidden_layers": 2, "num_attention_heads": size["heads"], "num_key_value_heads": size["kv"],
              "head_dim": size["head_dim"], "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
              "hidden_act": "silu", "tie_word_embeddings": size["tie"]}
    if layout == "rope_parameters":  # transformers 5
        return {**config, "rope_parameters": {**(rope or {"rope_type": "default"}), "rope_theta": size["theta"]}}
    return {**config, "rope_theta": size["theta"], "rope_scaling": copy.deepcopy(rope)}  # the older layout (Llama 3.x files)


def _llama_pair(seed: int, config: dict, tmp_path):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig.from_dict(copy.deepcopy(config))).eval()
    with torch.no_grad():  # scores of order 1, as in a trained model, so that positions visibly matter
        for layer in theirs.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
            layer.self_attn.k_proj.weight.mul_(8)
    theirs.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(__import__("json").dumps(config))  # the layout under test, as written
    return theirs, load_pretrained_decoder(tmp_path)


@pytest.mark.parametrize("layout", ["rope_parameters", "rope_theta + rope_scaling"])
@pytest.mark.parametrize("rope", list(ROPES))
def test_llama_equals_transformers_for_every_rotary_scaling_through_512_cached_positions(rope, layout, tmp_path):
    seed = list(ROPES).index(rope)
    config = _llama_config(seed, ROPES[rope], layout)
    theirs, ours = _llama_pair(seed, config, tmp_path)
    assert ours.config.rope_scaling == (None if ROPES[rope] is None else {**ROPES[rope]})
    ids = torch.randint(0, 89, (2, 512), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = theirs(ids).logits  # (2, 512, V)
        torch.testing.assert_close(ours(ids)[0], expected, **TOL)
        cache = KVCache(ours.config.num_layers)  # 500 tokens at once, then one at a time up to 512
        steps = [ours(ids[:, :500], cache=cache)[0][:, -1]]
        steps += [ours(ids[:, t:t + 1], cache=cache)[0][:, -1] for t in range(500, 512)]
    torch.testing.assert_close(torch.stack(steps, 1), expected[:, 499:], **TOL)
    if ROPES[rope] is not None:  # the scaling matters: without it, the logits at long positions differ
        plain = {k: v for k, v in config.items() if k != "rope_scaling"}
        if "rope_parameters" in plain:
            plain["rope_parameters"] = {"rope_type": "default", "rope_theta": plain["rope_parameters"]["rope_theta"]}
        unscaled = copy.deepcopy(ours)
        unscaled.config = LlamaConfig.from_hf_config(plain)
        with torch.no_grad():
            assert (unscaled(ids)[0][:, -1] - expected[:, -1]).abs().max() > 1e-3


@pytest.mark.parametrize("layout", ["rope_parameters", "rope_scaling"])
@pytest.mark.parametrize("rope", [{"rope_type": "dynamic", "factor": 2.0},
                                  {"type": "longrope", "short_factor": [1.0], "long_factor": [2.0]},
                                  {"rope_type": "made-up", "factor": 2.0}])
def test_llama_refuses_a_rotary_scaling_it_does_not_implement_in_either_layout(rope, layout):
    config = _llama_config(0, None, "rope_parameters")
    config.pop("rope_parameters")
    config[layout] = {**rope, "rope_theta": 1e4} if layout == "rope_parameters" else rope
    name = rope.get("rope_type", rope.get("type"))
    with pytest.raises(CourseInputError, match=f"rotary scaling '{name}' is not implemented.*linear, llama3, yarn"):
        LlamaConfig.from_hf_config(config)


def test_llama_rotary_scaling_with_missing_or_unknown_keys_is_refused():
    with pytest.raises(CourseInputError, match=r"missing \['high_freq_factor', 'low_freq_factor'"):
        LlamaConfig(rope_scaling={"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64})
    with pytest.raises(CourseInputError, match=r"unknown \['beta'\]"):
        LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0, "beta": 1})
    with pytest.raises(CourseInputError, match=r"factor.*must be a number > 0"):
        LlamaConfig(rope_scaling={"rope_type": "linear", "factor": -2.0})


def test_llama_loads_from_a_model_in_memory_or_a_state_dict_as_from_its_folder(tmp_path):
    config = _llama_config(7, ROPES["llama3"], "rope_parameters")
    theirs, from_folder = _llama_pair(7, config, tmp_path)
    ids = torch.randint(0, 89, (1, 80), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = from_folder(ids)[0]
        for source, kwargs in ((theirs, {}), (theirs.state_dict(), {"config": config})):
            torch.testing.assert_close(load_pretrained_decoder(source, **kwargs)(ids)[0], expected, rtol=0, atol=0)
    with pytest.raises(CourseInputError, match="state dict carries no sizes"):
        load_pretrained_decoder(theirs.state_dict())


@pytest.mark.parametrize("seed", range(3))
def test_llama_left_padded_batch_and_explicit_position_ids_equal_transformers(seed, tmp_path):
    config = _llama_config(seed + 10, None, "rope_parameters")
    theirs, ours = _llama_pair(seed, config, tmp_path)
    ids = torch.randint(1, 89, (2, 20), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0  # left padding
    positions = torch.arange(30, 50)[None].expand(2, 20)  # positions a caller chooses, as transformers allows
    real = mask.bool()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask)[0][real],
                                   theirs(ids, attention_mask=mask).logits[real], **TOL)
        torch.testing.assert_close(ours(ids, position_ids=positions)[0], theirs(ids, position_ids=positions).logits,
                                   **TOL)


# ----------------------------------------------------------------------------------------------- LoRA
@pytest.mark.parametrize("seed", range(5))
def test_lora_equals_peft_over_ranks_alphas_and_targets(seed):
    choice = _draw(seed, r=[1, 2, 4, 8], alpha=[1.0, 8.0, 16.0, 32.0],
                   targets=[("query",), ("query", "value"), ("key", "dense"), ("query", "key", "value", "dense")])
    config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=24, num_labels=3)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(50)  # logits of order 1 (at init they are near 0)
    lora = peft.LoraConfig(r=choice["r"], lora_alpha=choice["alpha"], target_modules=list(choice["targets"]),
                           task_type="SEQ_CLS")
    theirs = peft.get_peft_model(copy.deepcopy(model), lora).eval()
    ours = apply_lora(copy.deepcopy(model), choice["targets"], r=choice["r"], alpha=choice["alpha"],
                      trainable_modules=("classifier",)).eval()
    generator = torch.Generator().manual_seed(seed)
    base = theirs.get_base_model()
    assert set(lora_layers(ours)) == {name for name, m in base.named_modules() if hasattr(m, "lora_A")
                                      and "default" in m.lora_A}
    for name, layer in lora_layers(ours).items():
        peft_layer = base.get_submodule(name)
        peft_layer.lora_B["default"].weight.data = 0.5 * torch.randn(peft_layer.lora_B["default"].weight.shape,
                                                                      generator=generator)
        layer.lora_A.data.copy_(peft_layer.lora_A["default"].weight)
        layer.lora_B.data.copy_(peft_layer.lora_B["default"].weight)
    ours.classifier.load_state_dict(base.classifier.modules_to_save["default"].state_dict())
    ids = torch.randint(0, 60, (2, 10), generator=generator)
    with torch.no_grad():
        expected = theirs(input_ids=ids).logits
        torch.testing.assert_close(ours(input_ids=ids).logits, expected, **TOL)
        assert (model(input_ids=ids).logits - expected).abs().max() > 1e-4  # the update is really there
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert trainable == theirs.get_nb_trainable_parameters()[0]


# ----------------------------------------------------------------------------------------------- inputs
def test_encoder_takes_position_ids_like_bert():
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=20, max_position_embeddings=32)
    torch.manual_seed(0)
    theirs = transformers.BertModel(config).eval()
    ours, _ = load_pretrained_encoder(theirs)
    ids = torch.randint(0, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    positions = torch.tensor([[5, 6, 7, 8, 9, 10], [0, 2, 4, 6, 8, 10]])
    with torch.no_grad():
        expected = theirs(ids, position_ids=positions).last_hidden_state
        torch.testing.assert_close(ours(ids, position_ids=positions).last_hidden_state, expected, **TOL)
        assert (ours(ids).last_hidden_state - expected).abs().max() > 1e-3  # the positions were used
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, 32\)"):
        ours(ids, position_ids=positions + 30)


def _tiny_pair(tmp_path):
    config = _llama_config(3, None, "rope_parameters")
    return _llama_pair(3, config, tmp_path)


def test_generate_stops_at_any_of_several_end_of_sequence_ids_like_transformers(tmp_path):
    from course_lib.generation import generate

    theirs, ours = _tiny_pair(tmp_path)
    prompt = torch.randint(0, 89, (1, 5), generator=torch.Generator().manual_seed(0))
    free = generate(ours, prompt, max_new_tokens=12)[0, 5:].tolist()
    eos = [free[4], 88 if free[4] != 88 else 87]  # the fifth free-running token, and one that never comes first
    expected = theirs.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=eos[0])
    got = generate(ours, prompt, max_new_tokens=12, eos_token_id=eos)
    assert got.tolist() == expected.tolist() and got.shape[1] == 5 + free.index(free[4]) + 1
    assert generate(ours, prompt, max_new_tokens=12, eos_token_id=eos[0]).tolist() == got.tolist()


@pytest.mark.parametrize("call, message", [
    (lambda m, p: __import__("course_lib.generation").generation.generate(m, p, 3, eos_token_id=[5, 89]),
     r"eos_token_id \[89\] lies outside this model's vocabulary \[0, 89\)"),
    (lambda m, p: __import__("course_lib.generation").generation.generate(m, p, 3, eos_token_id="</s>"),
     "eos_token_id must be a token id"),
    (lambda m, p: __import__("course_lib.generation").generation.generate(m, p, 3, eos_token_id=1, pad_token_id=-1),
     r"pad_token_id \[-1\] lies outside"),
    (lambda m, p: __import__("course_lib.generation").generation.generate(torch.nn.Linear(2, 2), p, 3),
     "generate\\(\\) drives the course's decoders"),
    (lambda m, p: m(p, cache=KVCache(1)), "this KVCache holds 1 layers, the model has 2"),
    (lambda m, p: m(p, cache=[]), "cache must be a KVCache"),
    (lambda m, p: KVCache(0), r"KVCache\(num_layers\) must be an integer >= 1, got 0"),
    (lambda m, p: KVCache(2).update(2, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2)),
     "layer 2 is outside this cache of 2 layers"),
    (lambda m, p: m(p, position_ids=torch.arange(4)[None]), r"position_ids of shape \(1, 5\) or \(1, 5\), got \(1, 4\)"),
    (lambda m, p: m(p, position_ids=torch.arange(5.0)[None]), "position_ids must be an integer tensor"),
    (lambda m, p: m(p, position_ids=torch.arange(600, 605)[None]), r"position_ids must lie in \[0, 512\)"),
])
def test_decoder_entry_points_refuse_bad_input_with_the_course_error(call, message, tmp_path):
    _, ours = _tiny_pair(tmp_path)
    prompt = torch.randint(0, 89, (1, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(CourseInputError, match=message):
        call(ours, prompt)


def test_a_cache_refuses_a_second_batch_of_another_shape():
    cache = KVCache(1)
    cache.update(0, torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8))
    with pytest.raises(CourseInputError, match=r"caches keys of shape \(2, 3, 4, 8\).*\(1, 3, 1, 8\)"):
        cache.update(0, torch.zeros(1, 3, 1, 8), torch.zeros(1, 3, 1, 8))
    assert cache.length == 4  # unchanged
