"""Exercises of lesson 08 (fine-tuning that scales): the LoRA forward pass, counting LoRA's parameters,
LoRA's targets in an architecture the lesson did not show, the answer-only label mask, and the memory that training
state takes. The data-parallel loop (08.ddp_loop) lives in ``lesson08_ddp``."""
from __future__ import annotations

import torch
from torch import nn

from course_lib.checks import Case, Exercise, Mistake, compare_outputs, register
from course_lib.instruction import IGNORE_INDEX, answer_only_example
from course_lib.lora import lora_linear, lora_parameter_count, matches
from course_lib.train_memory import training_state_bytes


def _exact_types(got, expected) -> str | None:
    """Like ``compare_outputs``, but a tensor must have the reference's dtype and an int must be a Python int:
    an answer never passes only after a conversion (float labels, a float count)."""
    if isinstance(expected, torch.Tensor):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype:
            kind = "a long tensor (integer ids)" if expected.dtype == torch.long else "the input's dtype"
            return f"expected dtype {expected.dtype} ({kind}), got {got.dtype}"
    elif isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)} items, got {type(got).__name__}"
        for i, (g, e) in enumerate(zip(got, expected)):
            problem = _exact_types(g, e)
            if problem:
                return f"item {i}: {problem}"
        return None
    elif isinstance(expected, int) and not isinstance(expected, bool):
        if isinstance(got, bool) or not isinstance(got, int):
            return f"expected a Python int, got {type(got).__name__} {got!r}"
    return compare_outputs(got, expected)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- 08.lora_forward
def _reference_lora_forward(x, weight, bias, lora_A, lora_B, alpha, r):
    return lora_linear(x, weight, bias, lora_A, lora_B, alpha / r)


def _forward_no_scaling(x, weight, bias, lora_A, lora_B, alpha, r):
    return lora_linear(x, weight, bias, lora_A, lora_B, 1.0)


def _forward_inverted_scaling(x, weight, bias, lora_A, lora_B, alpha, r):
    return lora_linear(x, weight, bias, lora_A, lora_B, r / alpha)


def _forward_alpha_only(x, weight, bias, lora_A, lora_B, alpha, r):
    return lora_linear(x, weight, bias, lora_A, lora_B, float(alpha))


def _forward_update_only(x, weight, bias, lora_A, lora_B, alpha, r):
    return (alpha / r) * (x @ lora_A.T) @ lora_B.T


def _forward_without_bias(x, weight, bias, lora_A, lora_B, alpha, r):
    return lora_linear(x, weight, None, lora_A, lora_B, alpha / r)


def _forward_cases() -> list[Case]:
    cases = []
    for seed, (shape, out, r, alpha, bias, dtype, label) in enumerate([
        ((2, 5, 8), 6, 2, 4.0, True, torch.float32, "batch 2 x 5 tokens, in 8, out 6, r 2, alpha 4"),
        ((3, 8), 3, 1, 3.0, True, torch.float32, "rank 1, a layer narrower than its input (8 -> 3)"),
        ((8,), 5, 4, 16.0, False, torch.float32, "one vector, no bias, r 4, alpha 16"),
        ((2, 8), 4, 2, 8.0, True, torch.float64, "double precision stays double"),
    ]):
        g = _generator(80 + seed)
        x = torch.randn(*shape, generator=g, dtype=dtype)                      # (..., in)
        weight = torch.randn(out, 8, generator=g, dtype=dtype) / 8 ** 0.5      # (out, in)
        b = torch.randn(out, generator=g, dtype=dtype) if bias else None       # (out,)
        lora_A = torch.randn(r, 8, generator=g, dtype=dtype) / 8 ** 0.5        # (r, in)
        lora_B = torch.randn(out, r, generator=g, dtype=dtype)                 # (out, r): trained, non-zero
        cases.append(Case((x, weight, b, lora_A, lora_B, alpha, r), label=label))
    return cases


register(Exercise(
    name="08.lora_forward",
    title="the LoRA forward pass: frozen layer plus (alpha / r) B A x",
    reference=_reference_lora_forward,
    cases=_forward_cases(),
    mistakes=[
        Mistake(_forward_no_scaling, "the update is not scaled: multiply it by alpha / r (LoRA's scaling, "
                                     "which spares retuning the learning rate when r changes)."),
        Mistake(_forward_inverted_scaling, "the scaling is upside down: it is alpha / r, not r / alpha."),
        Mistake(_forward_alpha_only, "the update is scaled by alpha alone; divide by the rank too: alpha / r."),
        Mistake(_forward_update_only, "that is the low-rank update alone: add the frozen layer's own output "
                                      "x W^T + b (F.linear(x, weight, bias))."),
        Mistake(_forward_without_bias, "the frozen layer's bias is missing: the frozen path is x W^T + b "
                                       "(when bias is not None)."),
    ],
    compare=_exact_types,
    level="warm-up",
    minutes=10,
))


# ----------------------------------------------------------------------------------------------- 08.count_lora
class _TinyBlock(nn.Module):
    """An attention-and-MLP block with the layer names of BERT-style models; key/value narrower (grouped)."""

    def __init__(self, hidden: int, kv: int):
        super().__init__()
        self.attention = nn.ModuleDict({"query": nn.Linear(hidden, hidden), "key": nn.Linear(hidden, kv),
                                        "value": nn.Linear(hidden, kv), "query_gate": nn.Linear(hidden, 1),
                                        "norm": nn.LayerNorm(hidden)})
        self.mlp = nn.ModuleDict({"up": nn.Linear(hidden, 4 * hidden), "down": nn.Linear(4 * hidden, hidden)})


class _TinyModel(nn.Module):
    def __init__(self, layers: int, hidden: int, kv: int):
        super().__init__()
        self.embed = nn.Embedding(20, hidden)
        self.layers = nn.ModuleList(_TinyBlock(hidden, kv) for _ in range(layers))
        self.classifier = nn.Linear(hidden, 2)


def _count_for(count):
    """Build the tiny model a case describes and call the answer on it."""
    def run(layers, hidden, kv, target_modules, r):
        torch.manual_seed(0)
        return count(_TinyModel(layers, hidden, kv), list(target_modules), r)
    return run


def _reference_count(model, target_modules, r):
    return sum(lora_parameter_count(m.in_features, m.out_features, r) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and matches(name, target_modules))


def _targeted(model, target_modules):
    return [m for name, m in model.named_modules() if isinstance(m, nn.Linear) and matches(name, target_modules)]


def _count_only_A(model, target_modules, r):
    return sum(r * m.in_features for m in _targeted(model, target_modules))


def _count_square(model, target_modules, r):
    return sum(2 * r * m.in_features for m in _targeted(model, target_modules))


def _count_full_matrix(model, target_modules, r):
    return sum(m.in_features * m.out_features for m in _targeted(model, target_modules))


def _count_every_linear(model, target_modules, r):
    return sum(r * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, nn.Linear))


def _count_substring(model, target_modules, r):
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(t in name for t in target_modules))


def _count_float(model, target_modules, r):
    return float(_reference_count(model, target_modules, r))


register(Exercise(
    name="08.count_lora",
    title="how many trainable numbers LoRA adds to the targeted linear layers",
    reference=_reference_count,
    cases=[
        Case((2, 16, 8, ("query", "value"), 4), label="2 blocks, hidden 16, value 16 -> 8, targets query and value"),
        Case((1, 8, 4, ("key", "up", "down"), 1), label="rank 1, targets key, up and down"),
        Case((3, 8, 8, ("query",), 2), label="a name that is also the start of another ('query' vs 'query_gate')"),
        Case((1, 8, 8, ("q_proj",), 8), label="a target that matches no layer"),
    ],
    adapt=_count_for,
    mistakes=[
        Mistake(_count_only_A, "only A is counted: LoRA adds two matrices per layer, A (r x in) and B (out x r), "
                               "so r * (in + out)."),
        Mistake(_count_square, "that assumes square layers (2 * r * in); use each layer's own in_features and "
                               "out_features: r * (in + out)."),
        Mistake(_count_full_matrix, "that is the size of the full weight (in * out), the number LoRA avoids "
                                    "training; LoRA adds r * (in + out) per layer."),
        Mistake(_count_every_linear, "every linear layer was counted; only those whose name matches a target "
                                     "get LoRA matrices."),
        Mistake(_count_substring, "a target matches a whole name part, as in peft: name == target or "
                                  "name.endswith('.' + target); 'query' must not pick up 'query_gate'."),
        Mistake(_count_float, "a count of parameters is a whole number: return a Python int, not a float."),
    ],
    compare=_exact_types,
    level="warm-up",
    minutes=10,
))


# ----------------------------------------------------------------------------------------------- 08.lora_targets
def _linear_like(module) -> bool:
    from transformers.pytorch_utils import Conv1D  # GPT-2's projections: a linear layer with its weight transposed

    return isinstance(module, (nn.Linear, Conv1D))


def _in_a_block(name: str) -> bool:
    return any(part.isdigit() for part in name.split("."))  # the path passes through a numbered layer


def _reference_targets(model):
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if _linear_like(module) and _in_a_block(name)})


def _targets_linear_only(model):
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, nn.Linear) and _in_a_block(name)})


def _targets_with_heads(model):
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _linear_like(module)})


def _targets_full_names(model):
    return sorted(name for name, module in model.named_modules() if _linear_like(module) and _in_a_block(name))


def _targets_repeated(model):
    return [name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if _linear_like(module) and _in_a_block(name)]


def _target_cases() -> list[Case]:
    """Tiny random models of three families (no weights to load): their layer names are the real ones."""
    import transformers
    from transformers.utils import logging as hf_logging

    small = dict(hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=64)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.random.fork_rng(devices=[]):
            gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64))
            llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(num_hidden_layers=2, num_key_value_heads=1,
                                                                           **small))
            bert = transformers.BertForSequenceClassification(transformers.BertConfig(num_hidden_layers=2, **small))
    finally:
        hf_logging.set_verbosity(verbosity)
    return [Case((gpt2.eval(),), label="GPT-2 (its projections are Conv1D layers, not nn.Linear)"),
            Case((llama.eval(),), label="a Llama model with a language-model head"),
            Case((bert.eval(),), label="a BERT classifier with a pooler and a classification head")]


register(Exercise(
    name="08.lora_targets",
    title="LoRA's target_modules for any architecture: every linear layer inside the blocks",
    reference=_reference_targets,
    cases=_target_cases,
    mistakes=[
        Mistake(_targets_linear_only, "GPT-2's projections (c_attn, c_proj, c_fc) are transformers' Conv1D "
                                      "layers, linear layers with a transposed weight; peft adapts them too. Test "
                                      "for transformers.pytorch_utils.Conv1D as well as nn.Linear."),
        Mistake(_targets_with_heads, "layers outside the repeated blocks were included (lm_head, classifier): keep "
                                     "only the names whose path runs through a numbered layer ('...layers.0...'). "
                                     "The output head stays frozen or trains fully, never through LoRA."),
        Mistake(_targets_full_names, "return the last part of each name (q_proj, not model.layers.0.self_attn."
                                     "q_proj): peft matches a target against the end of every module's name."),
        Mistake(_targets_repeated, "each name once, sorted: every block has the same layer names, so a list with "
                                   "one entry per layer repeats them."),
    ],
    level="stretch",
    minutes=20,
))


# ----------------------------------------------------------------------------------------------- 08.answer_mask
def _mask_shifted(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = answer_only_example(prompt_ids, answer_ids, length, pad_id)
    shifted = torch.cat([labels[1:], torch.tensor([IGNORE_INDEX])])  # the model shifts labels itself
    return input_ids, attention_mask, shifted


def _mask_inverted(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = answer_only_example(prompt_ids, answer_ids, length, pad_id)
    inverted = torch.where((labels == IGNORE_INDEX) & (attention_mask == 1), input_ids, IGNORE_INDEX)
    return input_ids, attention_mask, inverted


def _mask_pad_labels(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = answer_only_example(prompt_ids, answer_ids, length, pad_id)
    return input_ids, attention_mask, torch.where(attention_mask == 0, pad_id, labels)


def _mask_everything(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, _ = answer_only_example(prompt_ids, answer_ids, length, pad_id)
    return input_ids, attention_mask, torch.where(attention_mask == 1, input_ids, IGNORE_INDEX)


def _mask_by_pad_id(prompt_ids, answer_ids, length, pad_id):
    input_ids, _, labels = answer_only_example(prompt_ids, answer_ids, length, pad_id)
    return input_ids, (input_ids != pad_id).long(), labels


def _mask_float_labels(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = answer_only_example(prompt_ids, answer_ids, length, pad_id)
    return input_ids, attention_mask, labels.float()


register(Exercise(
    name="08.answer_mask",
    title="input ids, attention mask and answer-only labels for one prompt + answer",
    reference=answer_only_example,
    cases=[
        Case(([12, 7, 99, 3, 41], [2731], 8, 0), label="prompt of 5 tokens, a one-token answer, 2 pads"),
        Case(([5], [8, 9, 10], 4, 0), label="a prompt of one token, no padding"),
        Case(([4, 2, 6], [3524, 11], 9, 2), label="the padding id (2) also occurs in the prompt"),
    ],
    mistakes=[
        Mistake(_mask_shifted, "the labels are shifted by one: leave them aligned with input_ids; the "
                               "transformers loss shifts them itself (position t predicts token t + 1)."),
        Mistake(_mask_inverted, "it is the other way round: the prompt positions get -100 and the answer "
                                "positions keep their token ids."),
        Mistake(_mask_pad_labels, "padding positions need -100 in labels too, not the padding id: otherwise the "
                                  "model is trained to predict padding."),
        Mistake(_mask_everything, "the prompt tokens are labels too: put -100 on every prompt position, so the "
                                  "loss comes from the answer alone."),
        Mistake(_mask_by_pad_id, "the attention mask compares ids with pad_id, which also hides real tokens "
                                 "that happen to share that id; build it from the lengths (1 for every prompt "
                                 "and answer position, 0 for the padding)."),
        Mistake(_mask_float_labels, "labels must be a long tensor (torch.long): the loss reads them as token "
                                    "indices. Build them with dtype=torch.long."),
    ],
    compare=_exact_types,
    level="warm-up",
    minutes=10,
))


# ----------------------------------------------------------------------------------------------- 08.memory
def _memory_all_gradients(total, trainable, bytes_per_number=4):
    return bytes_per_number * (total + total + 2 * trainable)


def _memory_no_optimizer(total, trainable, bytes_per_number=4):
    return bytes_per_number * (total + trainable)


def _memory_one_moment(total, trainable, bytes_per_number=4):
    return bytes_per_number * (total + trainable + trainable)


def _memory_numbers_not_bytes(total, trainable, bytes_per_number=4):
    return total + trainable + 2 * trainable


register(Exercise(
    name="08.memory",
    title="bytes of training state: weights, gradients, AdamW moments",
    reference=training_state_bytes,
    cases=[
        Case((1_000_000, 1_000_000), label="full fine-tuning of 1 M parameters, float32"),
        Case((134_515_008, 460_800), label="SmolLM2 with LoRA r 8 on q_proj and v_proj, float32"),
        Case((1000, 10, 2), label="2-byte numbers (bfloat16)"),
        Case((500, 0), label="nothing trainable (inference)"),
    ],
    mistakes=[
        Mistake(_memory_all_gradients, "frozen parameters get no gradient: gradients take bytes for the "
                                       "trainable parameters only."),
        Mistake(_memory_no_optimizer, "AdamW keeps two running averages per trainable parameter (first and "
                                      "second moment): add 2 x trainable numbers."),
        Mistake(_memory_one_moment, "AdamW keeps two moments per trainable parameter, not one."),
        Mistake(_memory_numbers_not_bytes, "that counts numbers; multiply by bytes_per_number to get bytes."),
    ],
    compare=_exact_types,
    level="warm-up",
    minutes=5,
))
