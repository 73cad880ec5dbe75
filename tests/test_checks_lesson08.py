"""Lesson 08 exercises: answers written as a learner would write them pass or get their hint; dtypes count.
The data-parallel loops below run in two real processes each (a few seconds apiece)."""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from transformers.pytorch_utils import Conv1D

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


# ----------------------------------------------------------------------------------------------- data-parallel loop
# Run for real: the check writes each function's source to a file and starts it in two processes under torchrun.
def loop_right(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group(backend="gloo")
    torch.manual_seed(seed)
    net = DDP(make_model())
    sampler = DistributedSampler(dataset, num_replicas=dist.get_world_size(), rank=dist.get_rank(), seed=seed)
    batches = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for inputs, targets in batches:
            opt.zero_grad()
            loss = F.cross_entropy(net(inputs), targets)
            loss.backward()
            opt.step()
            history.append(float(loss))
    if dist.get_rank() == 0:
        torch.save(net.module.state_dict(), checkpoint)
    dist.barrier()
    weights = torch.load(checkpoint)
    dist.destroy_process_group()
    return history, weights


def loop_right_broadcast(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    """Written another way: seeded model, DDP; the loss list as tensors; save the unwrapped module's weights."""
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(seed)
    base = make_model()
    model = DDP(base)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=False)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False)
    optimizer = torch.optim.SGD(model.parameters(), lr)
    losses = []
    epoch = 0
    while epoch < epochs:
        sampler.set_epoch(epoch)
        for x, y in loader:
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        epoch += 1
    if rank == 0:
        torch.save(base.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint, map_location="cpu")
    dist.destroy_process_group()
    return losses, state


# ----------------------------------------------------------------------------------------------- wrong answers
def loop_no_set_epoch(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    torch.manual_seed(seed)
    model = DDP(make_model())
    loader = DataLoader(dataset, batch_size=batch_size, sampler=DistributedSampler(dataset, seed=seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_plain_loader(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    torch.manual_seed(seed)
    model = DDP(make_model())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_every_rank_saves(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    torch.manual_seed(seed)
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_no_barrier(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    torch.manual_seed(seed)
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), checkpoint)
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_loss_over_world(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    torch.manual_seed(seed)
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            (loss / world).backward()  # "average over the processes"
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_scaled_lr(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    torch.manual_seed(seed)
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr * dist.get_world_size())  # "linear scaling"
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_unseeded(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_sampler_seeded_by_rank(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(seed)
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed + rank)  # "each process its own randomness"
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if rank == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


def loop_saves_wrapped(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    dist.init_process_group("gloo")
    torch.manual_seed(seed)
    model = DDP(make_model())
    sampler = DistributedSampler(dataset, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    if dist.get_rank() == 0:
        torch.save(model.state_dict(), checkpoint)
    dist.barrier()
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


# ----------------------------------------------------------------------------------------------- LoRA targets
def targets_correct(model):
    found = []
    for name, module in model.named_modules():
        parts = name.split(".")
        if isinstance(module, (nn.Linear, Conv1D)) and any(p.isdigit() for p in parts) and parts[-1] not in found:
            found.append(parts[-1])
    return sorted(found)


def targets_by_weight_shape(model):
    """Another way: a 2-D weight and a module inside model's numbered blocks."""
    names = set()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        in_block = any(part.isdigit() for part in name.split("."))
        if in_block and isinstance(module, (nn.Linear, Conv1D)) and weight is not None and weight.dim() == 2:
            names.add(name.split(".")[-1])
    return sorted(names)


def targets_linear_only(model):
    return sorted({n.split(".")[-1] for n, m in model.named_modules()
                   if isinstance(m, nn.Linear) and any(p.isdigit() for p in n.split("."))})


def targets_every_linear(model):
    return sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))})


def targets_unsorted_with_repeats(model):
    return [n.split(".")[-1] for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, Conv1D)) and any(p.isdigit() for p in n.split("."))]


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
    ("08.ddp_loop", loop_right), ("08.ddp_loop", loop_right_broadcast),
    ("08.lora_targets", targets_correct), ("08.lora_targets", targets_by_weight_shape),
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
    pytest.param("08.ddp_loop", loop_no_set_epoch, "call sampler.set_epoch(epoch)", id="ddp-no-set-epoch"),
    pytest.param("08.ddp_loop", loop_plain_loader, "every rank went through all the data", id="ddp-plain-loader"),
    pytest.param("08.ddp_loop", loop_sampler_seeded_by_rank, "shards overlap", id="ddp-sampler-seed-per-rank"),
    pytest.param("08.ddp_loop", loop_loss_over_world, "half as large", id="ddp-loss-over-world"),
    pytest.param("08.ddp_loop", loop_scaled_lr, "twice as large", id="ddp-lr-times-world"),
    pytest.param("08.ddp_loop", loop_unseeded, "torch.manual_seed(seed) before make_model()", id="ddp-unseeded"),
    pytest.param("08.ddp_loop", loop_every_rank_saves, "only rank 0 should save", id="ddp-every-rank-saves"),
    pytest.param("08.ddp_loop", loop_no_barrier, "call dist.barrier() after the save", id="ddp-no-barrier"),
    pytest.param("08.lora_targets", targets_linear_only, "Conv1D", id="targets-linear-only"),
    pytest.param("08.lora_targets", targets_every_linear, "outside the repeated blocks", id="targets-with-heads"),
    pytest.param("08.lora_targets", targets_unsorted_with_repeats, "each name once, sorted", id="targets-repeated"),
]


def test_the_ddp_check_names_the_first_step_and_the_saved_keys():
    result = check("08.ddp_loop", loop_no_set_epoch)
    assert "step 5 (epoch 2, step 1)" in result.message  # the first step of the second epoch
    result = check("08.ddp_loop", loop_saves_wrapped)
    assert not result.passed and "model.module.state_dict()" in result.message


def test_every_lesson08_exercise_has_a_level_and_minutes_and_the_core_one_a_ladder():
    levels = {name: get_exercise(name).level for name in NAMES + ["08.ddp_loop", "08.lora_targets"]}
    assert levels["08.ddp_loop"] == "core" and levels["08.lora_targets"] == "stretch"
    assert all(get_exercise(name).minutes > 0 for name in levels)
    assert len(get_exercise("08.ddp_loop").hints) >= 2 and len(get_exercise("08.ddp_loop").mistakes) >= 4


def test_lora_forward_with_a_shape_error_is_reported_not_raised():
    def transposed(x, weight, bias, lora_A, lora_B, alpha, r):
        return F.linear(x, weight, bias) + (alpha / r) * (x @ lora_A @ lora_B)  # A is (r, in): needs .T

    result = check("08.lora_forward", transposed)
    assert not result.passed and "RuntimeError" in result.message
