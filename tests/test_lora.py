"""The course's LoRA layer (course_lib.lora) against peft's LoRA on the same weights.

Both wrap the real MiniLM classifier (query and value projections, a trainable head) and a small Llama
decoder; the course layers get copies of peft's A and B (B made non-zero, else the update is invisible), and
outputs, gradients, merged weights and trainable-parameter counts must agree.
"""
from __future__ import annotations

import contextlib
import copy
import io
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

import course_lib  # noqa: F401  (offline mode first)
from course_lib import assets
from course_lib.lora import (LoRALinear, apply_lora, lora_layers, lora_linear, lora_parameter_count, lora_update,
                             matches, merge_lora)
from course_lib.runtime.errors import CourseInputError
from course_lib.training import count_parameters

peft = pytest.importorskip("peft")
TOL = dict(atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def minilm_classifier():
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(assets.encoder_path(), num_labels=2)


@pytest.fixture(scope="module")
def minilm_batch():
    tokenizer = assets.load_tokenizer()
    return tokenizer(["A warm, funny and beautifully acted film.", "Two hours I will never get back."],
                     padding=True, return_tensors="pt")


def _peft_and_course(model, r=8, alpha=16, dropout=0.0, targets=("query", "value"), task="SEQ_CLS"):
    """The same pretrained model wrapped by peft and by the course, with peft's (non-zero) A and B copied over."""
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                             task_type=task)
    theirs = peft.get_peft_model(copy.deepcopy(model), config)
    generator = torch.Generator().manual_seed(1)
    for name, module in theirs.named_modules():
        if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
            weight = module.lora_B["default"].weight
            weight.data = 0.02 * torch.randn(weight.shape, generator=generator)  # (out, r), as after training
    trainable = ("classifier",) if task == "SEQ_CLS" else ()
    ours = apply_lora(copy.deepcopy(model), targets, r=r, alpha=alpha, dropout=dropout, trainable_modules=trainable)
    base = theirs.get_base_model()
    for name, layer in lora_layers(ours).items():
        peft_layer = base.get_submodule(name)
        layer.lora_A.data.copy_(peft_layer.lora_A["default"].weight)  # (r, in)
        layer.lora_B.data.copy_(peft_layer.lora_B["default"].weight)  # (out, r)
    return theirs, ours


def _logits(model, batch, seed=0):
    torch.manual_seed(seed)  # the same dropout masks for both models in train mode
    return model(**batch).logits


def test_lora_layers_give_peft_outputs_in_eval_and_train_mode(minilm_classifier, minilm_batch):
    theirs, ours = _peft_and_course(minilm_classifier)
    assert len(lora_layers(ours)) == 12  # 6 layers x (query, value)
    for train in (False, True):
        theirs.train(train), ours.train(train)
        with torch.no_grad():
            expected, got = _logits(theirs, minilm_batch), _logits(ours, minilm_batch)
        torch.testing.assert_close(got, expected, **TOL)
    # the copied update really changes the output: the comparison is not between two unchanged models
    minilm_classifier.eval()
    with torch.no_grad():
        plain = minilm_classifier(**minilm_batch).logits
    assert (plain - expected).abs().max() > 1e-3


def test_lora_with_dropout_matches_peft_in_train_mode(minilm_classifier, minilm_batch):
    theirs, ours = _peft_and_course(minilm_classifier, dropout=0.3)
    theirs.train(), ours.train()
    with torch.no_grad():
        torch.testing.assert_close(_logits(ours, minilm_batch, 5), _logits(theirs, minilm_batch, 5), **TOL)
        # and dropout is live: another seed gives other logits
        assert (_logits(ours, minilm_batch, 5) - _logits(ours, minilm_batch, 6)).abs().max() > 1e-4


def test_gradients_reach_only_the_adapters_and_the_head_and_equal_peft(minilm_classifier, minilm_batch):
    theirs, ours = _peft_and_course(minilm_classifier)
    theirs.eval(), ours.eval()
    labels = torch.tensor([1, 0])
    for model in (theirs, ours):
        model(**minilm_batch, labels=labels).loss.backward()
    with_grad = {name for name, p in ours.named_parameters() if p.grad is not None}
    assert with_grad == {name for name, p in ours.named_parameters() if p.requires_grad}
    assert all(".lora_" in name or name.startswith("classifier.") for name in with_grad)
    base = theirs.get_base_model()
    for name, layer in lora_layers(ours).items():
        peft_layer = base.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.grad, peft_layer.lora_A["default"].weight.grad, **TOL)
        torch.testing.assert_close(layer.lora_B.grad, peft_layer.lora_B["default"].weight.grad, **TOL)


def test_trainable_parameter_counts_equal_peft_print_trainable_parameters(minilm_classifier):
    theirs, ours = _peft_and_course(minilm_classifier)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        theirs.print_trainable_parameters()
    match = re.search(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)",
                      printed.getvalue())
    assert match, printed.getvalue()
    peft_trainable, peft_all = (int(match[i].replace(",", "")) for i in (1, 2))
    head = count_parameters(ours.classifier)
    assert count_parameters(ours, trainable_only=True) == peft_trainable
    # peft keeps the original head next to its trainable copy (modules_to_save): one head more in "all"
    assert count_parameters(ours) + head == peft_all
    # and both equal the analytic count: r (in + out) per wrapped layer, plus the head
    layers = lora_layers(ours).values()
    assert peft_trainable == sum(lora_parameter_count(l.in_features, l.out_features, 8) for l in layers) + head


def test_merging_keeps_outputs_and_equals_peft_merge_and_unload(minilm_classifier, minilm_batch):
    theirs, ours = _peft_and_course(minilm_classifier)
    theirs.eval(), ours.eval()
    with torch.no_grad():
        before = ours(**minilm_batch).logits
        merged = merge_lora(copy.deepcopy(ours)).eval()
        assert not lora_layers(merged)
        torch.testing.assert_close(merged(**minilm_batch).logits, before, **TOL)
        peft_merged = theirs.merge_and_unload().eval()
        name = "bert.encoder.layer.3.attention.self.value"
        torch.testing.assert_close(merged.get_submodule(name).weight, peft_merged.get_submodule(name).weight,
                                   **TOL)
        torch.testing.assert_close(merged(**minilm_batch).logits, peft_merged(**minilm_batch).logits, **TOL)


def test_lora_on_a_llama_decoder_matches_peft_with_non_square_projections():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    theirs, ours = _peft_and_course(model, r=4, alpha=8, targets=("q_proj", "v_proj"), task="CAUSAL_LM")
    value = ours.get_submodule("model.layers.0.self_attn.v_proj")
    assert (value.in_features, value.out_features) == (32, 16)  # 2 key/value heads of 8: not square
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    theirs.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs(input_ids=ids).logits, **TOL)
    assert count_parameters(ours, True) == theirs.get_nb_trainable_parameters()[0] == 2 * (4 * 64 + 4 * 48)


def test_fresh_lora_layer_changes_nothing_and_starts_like_peft():
    torch.manual_seed(0)
    base = nn.Linear(12, 6)
    layer = LoRALinear(copy.deepcopy(base), r=3, alpha=6)
    x = torch.randn(2, 5, 12)  # (batch, tokens, in)
    torch.testing.assert_close(layer(x), base(x))  # B = 0 at the start
    assert layer.lora_A.shape == (3, 12) and layer.lora_B.shape == (6, 3) and layer.scaling == 2.0
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad  # frozen
    # A is drawn like peft's: kaiming-uniform with a = sqrt(5), bound 1 / sqrt(in)
    assert layer.lora_A.abs().max() <= 1 / 12 ** 0.5 and layer.lora_A.abs().max() > 0.5 / 12 ** 0.5


def test_functional_forward_equals_the_module_and_the_explicit_weight_update():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 4), r=2, alpha=4)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 8)
    by_function = lora_linear(x, layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B, layer.scaling)
    by_weight = x @ (layer.base.weight + layer.delta_weight()).T + layer.base.bias  # (3, 4)
    torch.testing.assert_close(layer(x), by_function)
    torch.testing.assert_close(by_function, by_weight, **TOL)
    merged = layer.merge()
    torch.testing.assert_close(merged(x), by_weight, **TOL)
    assert isinstance(merged, nn.Linear) and not merged.weight.requires_grad
    torch.testing.assert_close(layer.merge().weight, merged.weight)  # merging twice adds the update once


def test_bad_input_gets_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"none of the target modules \['query'\].*end in: \['0', '2'\]"):
        apply_lora(copy.deepcopy(model), ["query"])
    with pytest.raises(TypeError, match="nn.Linear layers only.*1 \\(ReLU\\)"):
        apply_lora(copy.deepcopy(model), ["1"])
    with pytest.raises(ValueError, match="rank r=5 is larger"):
        LoRALinear(nn.Linear(4, 4), r=5)
    with pytest.raises(ValueError, match="r must be an integer >= 1, got 0"):
        LoRALinear(nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 4\), got \(2, 3\)"):
        LoRALinear(nn.Linear(4, 4), r=2)(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no LoRALinear layers"):
        merge_lora(model)


# ----------------------------------------------------------------------------------------------- refused input
def _small_model():
    """Named like a classifier: query (8 -> 8), value (8 -> 2, so r <= 2), a ReLU and a head."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(query=nn.Linear(8, 8), act=nn.ReLU(), value=nn.Linear(8, 2),
                                     classifier=nn.Linear(2, 2)))


def _snapshot(model):
    return ([(n, type(m)) for n, m in model.named_modules()], {n: p.requires_grad for n, p in model.named_parameters()},
            {k: v.clone() for k, v in model.state_dict().items()})


GOOD = dict(target_modules=("query", "value"), r=2, alpha=4.0, dropout=0.0, trainable_modules=("classifier",))


@pytest.mark.parametrize("change, message", [
    (dict(target_modules=None), "target_modules must be a non-blank string or a list"),
    (dict(target_modules=[]), "target_modules must be a non-blank string or a list"),
    (dict(target_modules=["query", ""]), "target_modules must be a non-blank string or a list"),
    (dict(target_modules=["query", 3]), "target_modules must be a non-blank string or a list"),
    (dict(target_modules=["query", "valeu"]),
     r"none of the target modules \['valeu'\] is in Sequential; its linear layers end in: "
     r"\['classifier', 'query', 'value'\]"),
    (dict(target_modules=["query", "act"]), r"nn.Linear layers only; these targets are not: act \(ReLU\)"),
    (dict(r=0), "r must be an integer >= 1, got 0"),
    (dict(r=-2), "r must be an integer >= 1, got -2"),
    (dict(r=True), "r must be an integer >= 1, got True"),
    (dict(r=2.0), "r must be an integer >= 1, got 2.0"),
    (dict(r=None), "r must be an integer >= 1, got None"),
    (dict(r=4), r"rank r=4 is larger than the layer itself: value \(2 x 8\)"),  # query (8 x 8) alone would take it
    (dict(alpha=0), "alpha must be a number > 0, got 0"),
    (dict(alpha=-16.0), "alpha must be a number > 0, got -16.0"),
    (dict(alpha=float("nan")), "alpha must be a number > 0, got nan"),
    (dict(alpha=None), "alpha must be a number > 0, got None"),
    (dict(alpha=True), "alpha must be a number > 0, got True"),
    (dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), r"dropout must be a number in \[0, 1\), got -0.1"),
    (dict(dropout=float("nan")), r"dropout must be a number in \[0, 1\), got nan"),
    (dict(dropout=None), r"dropout must be a number in \[0, 1\), got None"),
    (dict(trainable_modules=["clasifier"]),
     r"trainable_modules \['clasifier'\] match no module of Sequential; pick from the module names: "
     r"\['act', 'classifier', 'query', 'value'\]"),
    (dict(trainable_modules=["classifier", "head"]), r"trainable_modules \['head'\] match no module"),
    (dict(trainable_modules=None), "trainable_modules must be a non-blank string or a list"),
    (dict(trainable_modules=[""]), "trainable_modules must be a non-blank string or a list"),
])
def test_apply_lora_refuses_bad_input_and_leaves_the_model_as_it_was(change, message):
    model = _small_model()
    before = _snapshot(model)
    with pytest.raises(CourseInputError, match=message):
        apply_lora(model, **{**GOOD, **change})
    modules, flags, weights = _snapshot(model)
    assert (modules, flags) == before[:2]  # no layer wrapped, no parameter frozen or unfrozen
    assert weights.keys() == before[2].keys() and all(torch.equal(weights[k], before[2][k]) for k in weights)
    # and the same model still takes a good call
    apply_lora(model, **GOOD)
    assert set(lora_layers(model)) == {"query", "value"} and model.classifier.weight.requires_grad


def test_apply_lora_refuses_what_is_not_a_model():
    with pytest.raises(CourseInputError, match="model must be a torch nn.Module, got NoneType"):
        apply_lora(None, ["query"])


@pytest.mark.parametrize("make, message", [
    (lambda base: LoRALinear(None), "LoRALinear wraps an nn.Linear, got NoneType"),
    (lambda base: LoRALinear(nn.ReLU()), "LoRALinear wraps an nn.Linear, got ReLU"),
    (lambda base: LoRALinear(base, r=0), "r must be an integer >= 1, got 0"),
    (lambda base: LoRALinear(base, r=True), "r must be an integer >= 1, got True"),
    (lambda base: LoRALinear(base, r=3), r"rank r=3 is larger than the layer itself: base \(2 x 4\)"),
    (lambda base: LoRALinear(base, r=1, alpha=-1), "alpha must be a number > 0, got -1"),
    (lambda base: LoRALinear(base, r=1, alpha=float("nan")), "alpha must be a number > 0, got nan"),
    (lambda base: LoRALinear(base, r=1, alpha=None), "alpha must be a number > 0, got None"),
    (lambda base: LoRALinear(base, r=1, dropout=None), r"dropout must be a number in \[0, 1\), got None"),
    (lambda base: LoRALinear(base, r=1, dropout=1.5), r"dropout must be a number in \[0, 1\), got 1.5"),
])
def test_lora_layer_refuses_bad_settings_and_leaves_the_layer_trainable(make, message):
    base = nn.Linear(4, 2)
    with pytest.raises(CourseInputError, match=message):
        make(base)
    assert base.weight.requires_grad and base.bias.requires_grad  # a refused wrap froze nothing


@pytest.mark.parametrize("x, message", [
    (None, "x must be a torch.Tensor, got NoneType"),
    ([[0.0] * 4], "x must be a torch.Tensor, got list"),
    (torch.tensor(1.0), r"expected input of shape \(\.\.\., 4\), got \(\)"),
    (torch.zeros(2, 3), r"expected input of shape \(\.\.\., 4\), got \(2, 3\)"),
])
def test_lora_layer_forward_refuses_bad_input(x, message):
    with pytest.raises(CourseInputError, match=message):
        LoRALinear(nn.Linear(4, 2), r=1)(x)


X, W, A, B = torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(1, 4), torch.zeros(2, 1)  # in 4, out 2, r 1


@pytest.mark.parametrize("args, message", [
    ((None, A, B, 1.0), "x must be a torch.Tensor, got NoneType"),
    ((X, A[0], B, 1.0), r"lora_A must have 2 dimensions, got shape \(4,\)"),
    ((X, A, None, 1.0), "lora_B must be a torch.Tensor, got NoneType"),
    ((X, A, B, None), "scaling must be a number, got None"),
    ((X, A, B, float("nan")), "scaling must be a number, got nan"),
    ((torch.zeros(3, 5), A, B, 1.0), r"shapes must chain as x \(\.\.\., in\).*got x \(3, 5\), lora_A \(1, 4\)"),
    ((X, A, torch.zeros(2, 3), 1.0), r"shapes must chain.*lora_B \(2, 3\)"),
    ((torch.tensor(1.0), A, B, 1.0), r"shapes must chain.*got x \(\)"),
])
def test_lora_update_refuses_bad_input(args, message):
    with pytest.raises(CourseInputError, match=message):
        lora_update(*args)


@pytest.mark.parametrize("args, message", [
    ((X, None, None, A, B, 1.0), "weight must be a torch.Tensor, got NoneType"),
    ((X, W.T, None, A, B, 1.0), r"weight must have shape \(out, in\) = \(2, 4\).*got weight \(4, 2\)"),
    ((X, W, torch.zeros(4), A, B, 1.0), r"bias \(2,\) or None.*bias \(4,\)"),
    ((X, W, [0.0, 0.0], A, B, 1.0), "bias must be a torch.Tensor, got list"),
    ((torch.zeros(3, 5), W, None, A, B, 1.0), r"shapes must chain.*got x \(3, 5\)"),
    ((X, W, None, A, B, "2"), "scaling must be a number, got '2'"),
])
def test_lora_linear_refuses_bad_input(args, message):
    with pytest.raises(CourseInputError, match=message):
        lora_linear(*args)


@pytest.mark.parametrize("args, message", [
    ((None, ["query"]), "name must be a module name"),
    (("a.query", None), "targets must be a non-blank string or a list"),
    (("a.query", [None]), "targets must be a non-blank string or a list"),
    (("a.query", ["query", ""]), "targets must be a non-blank string or a list"),
])
def test_matches_refuses_bad_names(args, message):
    with pytest.raises(CourseInputError, match=message):
        matches(*args)


def test_matches_reads_one_string_as_one_target():
    assert matches("a.self.query", "query") and matches("a.self.query", "self.query")  # not its letters
    assert not matches("a.query_gate", "query") and not matches("a.query", [])


@pytest.mark.parametrize("call, message", [
    (lambda: lora_layers(None), "model must be a torch nn.Module, got NoneType"),
    (lambda: merge_lora("model"), "model must be a torch nn.Module, got str"),
    (lambda: merge_lora(_small_model()), "Sequential has no LoRALinear layers to merge"),
])
def test_lora_layers_and_merge_refuse_what_is_not_a_lora_model(call, message):
    with pytest.raises(CourseInputError, match=message):
        call()


@pytest.mark.parametrize("args, message", [
    ((768, 768, -8), "r must be an integer >= 1, got -8"),
    ((768, 768, 0), "r must be an integer >= 1, got 0"),
    ((768, 768, True), "r must be an integer >= 1, got True"),
    ((768, 768, 8.0), "r must be an integer >= 1, got 8.0"),
    ((0, 768, 8), "in_features must be an integer >= 1, got 0"),
    ((-768, 768, 8), "in_features must be an integer >= 1, got -768"),
    ((768.5, 768, 8), "in_features must be an integer >= 1, got 768.5"),
    ((768, None, 8), "out_features must be an integer >= 1, got None"),
    ((768, -1, 8), "out_features must be an integer >= 1, got -1"),
])
def test_lora_parameter_count_refuses_non_positive_sizes(args, message):
    with pytest.raises(CourseInputError, match=message):
        lora_parameter_count(*args)
    assert lora_parameter_count(768, 384, 8) == 8 * (768 + 384)
