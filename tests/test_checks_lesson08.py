"""Lesson 08 exercises: answers written as a learner would write them pass or get their hint; dtypes count."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.checks import check, get_exercise

NAMES = ["08.lora_forward", "08.count_lora", "08.answer_mask", "08.memory"]


# ----------------------------------------------------------------------------------------------- LoRA forward
def forward_correct(x, weight, bias, lora_A, lora_B, alpha, r):
    return F.linear(x, weight, bias) + (alpha / r) * (x @ lora_A.T @ lora_B.T)


def forward_by_merged_weight(x, weight, bias, lora_A, lora_B, alpha, r):
    merged = weight + (alpha / r) * lora_B @ lora_A  # (out, in)
    return F.linear(x, merged, bias)


def forward_unscaled(x, weight, bias, lora_A, lora_B, alpha, r):
    return F.linear(x, weight, bias) + x @ lora_A.T @ lora_B.T


def forward_r_over_alpha(x, weight, bias, lora_A, lora_B, alpha, r):
    return F.linear(x, weight, bias) + (r / alpha) * (x @ lora_A.T @ lora_B.T)


def forward_in_float32(x, weight, bias, lora_A, lora_B, alpha, r):
    return forward_correct(x.float(), weight.float(), None if bias is None else bias.float(), lora_A.float(),
                           lora_B.float(), alpha, r)


# ----------------------------------------------------------------------------------------------- counting
def count_correct(model, target_modules, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            total += r * module.in_features + module.out_features * r
    return total


def count_substring(model, target_modules, r):
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(t in name for t in target_modules))


def count_weight_size(model, target_modules, r):
    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and any(name.endswith("." + t) for t in target_modules))


def count_as_tensor(model, target_modules, r):
    return torch.tensor(count_correct(model, target_modules, r))


# ----------------------------------------------------------------------------------------------- answer mask
def mask_correct(prompt_ids, answer_ids, length, pad_id):
    pad = length - len(prompt_ids) - len(answer_ids)
    input_ids = torch.tensor(prompt_ids + answer_ids + [pad_id] * pad)
    attention_mask = torch.cat([torch.ones(length - pad, dtype=torch.long), torch.zeros(pad, dtype=torch.long)])
    labels = torch.full((length,), -100)
    labels[len(prompt_ids):len(prompt_ids) + len(answer_ids)] = torch.tensor(answer_ids)
    return input_ids, attention_mask, labels


def mask_float_labels(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = mask_correct(prompt_ids, answer_ids, length, pad_id)
    return input_ids, attention_mask, labels.to(torch.float32)


def mask_bool_attention(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = mask_correct(prompt_ids, answer_ids, length, pad_id)
    return input_ids, attention_mask.bool(), labels


def mask_by_pad_id(prompt_ids, answer_ids, length, pad_id):
    input_ids, _, labels = mask_correct(prompt_ids, answer_ids, length, pad_id)
    return input_ids, (input_ids != pad_id).long(), labels


def mask_pre_shifted(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = mask_correct(prompt_ids, answer_ids, length, pad_id)
    return input_ids, attention_mask, torch.cat([labels[1:], torch.tensor([-100])])


def mask_pad_with_pad_id(prompt_ids, answer_ids, length, pad_id):
    input_ids, attention_mask, labels = mask_correct(prompt_ids, answer_ids, length, pad_id)
    labels[attention_mask == 0] = pad_id
    return input_ids, attention_mask, labels


# ----------------------------------------------------------------------------------------------- memory
def memory_correct(total, trainable, bytes_per_number=4):
    weights = total * bytes_per_number
    gradients = trainable * bytes_per_number
    adam = 2 * trainable * bytes_per_number
    return weights + gradients + adam


def memory_without_adam(total, trainable, bytes_per_number=4):
    return (total + trainable) * bytes_per_number


def memory_gradients_for_all(total, trainable, bytes_per_number=4):
    return (total + total + 2 * trainable) * bytes_per_number  # a gradient for the frozen weights too


def memory_one_moment(total, trainable, bytes_per_number=4):
    return (total + trainable + trainable) * bytes_per_number  # Adam's second moment forgotten


def memory_float(total, trainable, bytes_per_number=4):
    return memory_correct(total, trainable, bytes_per_number) / 1.0


def test_lesson08_registers_four_exercises_each_with_two_or_more_mistakes_and_boundary_cases():
    for name in NAMES:
        exercise = get_exercise(name)
        assert len(exercise.cases) >= 3 and len(exercise.mistakes) >= 2, name
    labels = [case.label for case in get_exercise("08.answer_mask").cases]
    assert any("one token" in label for label in labels) and any("padding id" in label for label in labels)


@pytest.mark.parametrize("name,student", [
    ("08.lora_forward", forward_correct), ("08.lora_forward", forward_by_merged_weight),
    ("08.count_lora", count_correct),
    ("08.answer_mask", mask_correct), ("08.memory", memory_correct),
])
def test_a_learners_correct_solution_passes(name, student):
    result = check(name, student)
    assert result.passed, result.message


# Run by tests/test_checks.py with every lesson's list: each answer fails, and its message holds the fragment.
WRONG = [
    pytest.param("08.lora_forward", forward_unscaled, "not scaled", id="lora-unscaled"),
    pytest.param("08.lora_forward", forward_r_over_alpha, "upside down", id="lora-r-over-alpha"),
    pytest.param("08.lora_forward", forward_in_float32,
                 "expected dtype torch.float64 (the input's dtype), got torch.float32", id="lora-float32"),
    pytest.param("08.count_lora", count_substring, "query_gate", id="count-substring-match"),
    pytest.param("08.count_lora", count_weight_size, "full weight", id="count-full-weight"),
    pytest.param("08.count_lora", count_as_tensor, "expected a Python int, got Tensor", id="count-tensor"),
    pytest.param("08.answer_mask", mask_by_pad_id, "build it from the lengths", id="mask-by-pad-id"),
    pytest.param("08.answer_mask", mask_pre_shifted, "shifts them itself", id="mask-pre-shifted"),
    pytest.param("08.answer_mask", mask_pad_with_pad_id, "not the padding id", id="mask-pad-with-pad-id"),
    pytest.param("08.answer_mask", mask_float_labels,
                 "expected dtype torch.int64 (a long tensor (integer ids)), got torch.float32", id="mask-float"),
    pytest.param("08.answer_mask", mask_bool_attention, "expected dtype torch.int64", id="mask-bool"),
    pytest.param("08.memory", memory_without_adam, "two running averages", id="memory-without-adam"),
    pytest.param("08.memory", memory_gradients_for_all, "frozen parameters get no gradient", id="memory-all-grads"),
    pytest.param("08.memory", memory_one_moment, "two moments per trainable parameter", id="memory-one-moment"),
    pytest.param("08.memory", memory_float, "expected a Python int, got float", id="memory-float"),
]


def test_lora_forward_with_a_shape_error_is_reported_not_raised():
    def transposed(x, weight, bias, lora_A, lora_B, alpha, r):
        return F.linear(x, weight, bias) + (alpha / r) * (x @ lora_A @ lora_B)  # A is (r, in): needs .T

    result = check("08.lora_forward", transposed)
    assert not result.passed and "RuntimeError" in result.message
