"""Greedy generation speed on SmolLM2-135M: the course decoder with and without its KV cache, and
transformers' ``generate`` (SDPA attention) on the same prompt. Prints tokens per second (median of several runs).

    python bench/generation.py [--new-tokens 64] [--repeats 3] [--threads N] [--device cuda] [--quick]
"""
from __future__ import annotations

import argparse

import course_lib  # noqa: F401  (offline mode before transformers is imported)
import torch

import common
from course_lib.assets import load_decoder, load_decoder_tokenizer
from course_lib.generation import generate
from course_lib.llama import load_pretrained_decoder

PROMPT = "Once upon a time, in a small village,"
CACHED = "course decoder, KV cache"
UNCACHED = "course decoder, no cache"
HF_SDPA = "transformers generate (sdpa)"


def run(device: torch.device, new_tokens: int = 64, repeats: int = 3, quick: bool = False) -> dict:
    """Generate greedily with each model: one warm-up, then ``repeats`` timed runs; tokens/s and agreement."""
    if quick:
        new_tokens, repeats = min(new_tokens, 4), 1
    if new_tokens < 1 or repeats < 1:
        raise ValueError(f"need --new-tokens >= 1 and --repeats >= 1, got {new_tokens} and {repeats}")
    tokenizer = load_decoder_tokenizer()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids.to(device)  # (1, T)
    with common.quiet_transformers():  # no progress bar over the weights
        ours = load_pretrained_decoder().to(device)
        hf_sdpa = load_decoder(attn_implementation="sdpa").to(device)
    eos = hf_sdpa.generation_config.eos_token_id

    def hf_run(model):
        return lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      do_sample=False, pad_token_id=eos)

    runs = {
        CACHED: lambda: generate(ours, ids, new_tokens, eos_token_id=eos, use_cache=True),
        UNCACHED: lambda: generate(ours, ids, new_tokens, eos_token_id=eos, use_cache=False),
        HF_SDPA: hf_run(hf_sdpa),
    }
    outputs, speeds, every_output = {}, {}, []
    with torch.inference_mode():
        for name, fn in runs.items():
            outputs[name] = fn()  # warm-up
            every_output.append(outputs[name])
            rates = []
            for _ in range(repeats):
                seconds, outputs[name] = common.time_call(fn, device)
                every_output.append(outputs[name])
                rates.append((outputs[name].shape[1] - ids.shape[1]) / seconds)
            speeds[name] = common.spread(rates)
    reference = outputs[HF_SDPA]  # (1, T + new)
    tokens_per_second = {name: s["median"] for name, s in speeds.items()}
    return {
        "prompt": PROMPT,
        "prompt_tokens": ids.shape[1],
        "new_tokens": {name: output.shape[1] - ids.shape[1] for name, output in outputs.items()},
        "repeats": repeats,
        "tokens_per_second": speeds,
        "ratios": {
            "cache_over_no_cache": tokens_per_second[CACHED] / tokens_per_second[UNCACHED],
            "course_cache_over_transformers_sdpa": tokens_per_second[CACHED] / tokens_per_second[HF_SDPA],
        },
        "runs_compared": len(every_output),  # warm-ups included
        "same_tokens": all(torch.equal(output, reference) for output in every_output),
        "text": tokenizer.decode(reference[0]),
    }


def report(result: dict) -> str:
    """A short text summary of :func:`run`'s result."""
    lines = [f"prompt: {result['prompt']!r} ({result['prompt_tokens']} tokens), greedy, "
             f"median of {result['repeats']}"]
    for name, s in result["tokens_per_second"].items():
        n = result["new_tokens"][name]
        lines.append(f"{name:32s} {s['median']:7.1f} tokens/s   ({n} tokens; min {s['min']:.1f}, max {s['max']:.1f})")
    r = result["ratios"]
    lines.append(f"KV cache / no cache: {r['cache_over_no_cache']:.2f}x; course (cache) / transformers sdpa: "
                 f"{r['course_cache_over_transformers_sdpa']:.2f}")
    lines.append(f"all runs produced the same tokens: {result['same_tokens']}")
    lines.append(f"text: {result['text']!r}")
    return "\n".join(lines)


def main() -> None:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = common.setup(args.device, args.threads)
    print("machine:", common.describe_machine(common.machine_info(device)))
    print(report(run(device, args.new_tokens, args.repeats, args.quick)))


if __name__ == "__main__":
    main()
