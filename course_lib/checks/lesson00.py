"""Exercises of lesson 00 (behind the pipeline): batch dict, softmax, label names, the pipeline by hand (core),
length-sorted batches (stretch), parameter counts."""
from __future__ import annotations

import copy
import functools

import torch
from torch import Tensor, nn

from course_lib.checks import Case, Exercise, Mistake, register
from course_lib.training import count_parameters


# ----------------------------------------------------------------------------------------------- 00.batch
def make_batch(sequences: list[list[int]], pad_id: int = 0) -> dict[str, Tensor]:
    """Pad token-id lists on the right to the longest one: ``input_ids`` and ``attention_mask``, both (B, T)."""
    if not isinstance(sequences, (list, tuple)) or not sequences:
        raise ValueError(f"expected a non-empty list of token-id lists, got {sequences!r}")
    empty = [i for i, ids in enumerate(sequences) if len(ids) == 0]
    if empty:
        raise ValueError(f"every sequence needs at least one token id; sequence(s) {empty} are empty")
    longest = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _batch_with_inverted_mask(sequences, pad_id=0):
    batch = make_batch(sequences, pad_id)
    return {"input_ids": batch["input_ids"], "attention_mask": 1 - batch["attention_mask"]}


def _batch_padded_left(sequences, pad_id=0):
    longest = max(len(ids) for ids in sequences)
    rows = [[pad_id] * (longest - len(ids)) + list(ids) for ids in sequences]
    masks = [[0] * (longest - len(ids)) + [1] * len(ids) for ids in sequences]
    return {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks)}


def _batch_with_mask_of_ones(sequences, pad_id=0):
    batch = make_batch(sequences, pad_id)
    return {"input_ids": batch["input_ids"], "attention_mask": torch.ones_like(batch["input_ids"])}


register(Exercise("00.batch", "build the batch dict a model takes", make_batch, level="warm-up", minutes=8,
    hints=("pad every list on the right with pad_id up to the longest one; the mask is 1 where a real token sits, and comes from the lengths, not from the ids.",
           "longest = max(map(len, sequences)); row = list(ids) + [pad_id] * (longest - len(ids)); mask row = [1] * len(ids) + [0] * (longest - len(ids)); then torch.tensor(rows)."),
    cases=[
        Case(([[101, 7592, 102], [101, 7592, 2088, 999, 102]],), label="two texts of different lengths"),
        Case(([[101, 2204, 3185, 102]],), label="a single text (it still needs a batch dimension)"),
        Case(([[5, 6], [7, 8, 9, 10], [11]],), {"pad_id": 3}, label="three texts, pad_id=3"),
        Case(([[1, 2, 3], [4, 5, 6]],), label="texts of equal length (no padding)"),
        Case(([[40, 588, 340, 0], [22017, 0]],), label="GPT-2 ids of 'I like it!' and 'Wow!' ('!' is id 0) padded "
             "with pad_id=0: a real token equal to the pad id, so the mask must come from the lengths"),
        Case(([[7], [8, 9, 3]],), {"pad_id": 3}, label="a one-token text first, and a real token equal to pad_id=3 "
             "at the end of the longest"),
    ],
    mistakes=[
        Mistake(_batch_with_inverted_mask,
                "attention_mask is 1 for the real tokens and 0 for the padding, not the other way round."),
        Mistake(_batch_padded_left,
                "BERT-style models pad on the right: the real token ids first, then pad_id up to the longest text."),
        Mistake(_batch_with_mask_of_ones,
                "the padding positions must get 0 in attention_mask, otherwise the model attends to [PAD] tokens."),
    ],
))


# ----------------------------------------------------------------------------------------------- 00.softmax
def probabilities(logits: Tensor) -> Tensor:
    """Softmax over the classes: (B, C) logits -> (B, C) probabilities, each row summing to 1."""
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"expected float logits of shape (batch, classes), got {shape}")
    shifted = logits - logits.max(dim=-1, keepdim=True).values  # (B, C), largest is 0: exp cannot overflow
    exp = shifted.exp()  # (B, C)
    return exp / exp.sum(dim=-1, keepdim=True)  # (B, C)


register(Exercise("00.softmax", "turn logits into probabilities", probabilities, level="warm-up", minutes=5,
    hints=("softmax is exp(z) / sum(exp(z)) over each row (the classes); subtracting the row's maximum first changes nothing but keeps exp from overflowing.",
           "shifted = logits - logits.max(dim=-1, keepdim=True).values; exp = shifted.exp(); return exp / exp.sum(dim=-1, keepdim=True)"),
    cases=[
        Case((torch.tensor([[-1.3497, 1.7602], [0.9654, -1.2710], [-0.1744, 0.2572]]),),
             label="the sentiment model's logits for three texts"),
        Case((torch.tensor([[2.0, -1.0, 0.5], [-3.0, -3.0, -2.0]]),), label="two texts, three classes"),
        Case((torch.tensor([[0.3, -0.2, 1.7, 0.0]]),), label="a single text, four classes"),
        Case((torch.tensor([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]]),), label="very large logits"),
        Case((torch.tensor([[0.5, 0.5, 0.5], [2.0, float("-inf"), 0.0]]),),
             label="a row of ties and a row with a -inf logit (a class ruled out: probability 0)"),
        Case((torch.tensor([[-3.0], [4.0]]),), label="a single class: every probability is 1"),
    ],
    mistakes=[
        Mistake(lambda z: torch.softmax(z, dim=0),
                "normalise each row (dim=-1): one probability distribution per text, over its classes."),
        Mistake(lambda z: z.exp(),
                "after exp, divide each row by its sum so that the probabilities of a text add up to 1."),
        Mistake(lambda z: z / z.sum(dim=-1, keepdim=True),
                "exponentiate first: logits can be negative, and softmax is exp(z) / sum(exp(z))."),
        Mistake(lambda z: z.exp() / z.exp().sum(dim=-1, keepdim=True),
                "exp(1000) overflows to inf: subtract each row's maximum before exp (the result does not change)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 00.labels
def predicted_labels(logits: Tensor, id2label: dict[int, str]) -> list[str]:
    """The name of the highest-scoring class of each row of (B, C) logits, via ``id2label``."""
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"expected logits of shape (batch, classes), got {shape}")
    ids = logits.argmax(dim=-1).tolist()  # (B,) class ids
    unknown = sorted({i for i in ids if i not in id2label})
    if unknown:
        raise ValueError(f"id2label has no name for class id(s) {unknown}; it knows {sorted(id2label)}")
    return [id2label[i] for i in ids]


_MOVIE = {0: "rotten", 1: "fresh"}
_TWEETS = {0: "negative", 1: "neutral", 2: "positive"}
_TWEETS_SHUFFLED = {2: "positive", 0: "negative", 1: "neutral"}  # the same mapping, written in another order

register(Exercise("00.labels", "map predictions to label names", predicted_labels, level="warm-up", minutes=3,
    hints=("the best class of a text is the argmax of its row; id2label maps that id to a name.",
           "return [id2label[i] for i in logits.argmax(dim=-1).tolist()]"),
    cases=[
        Case((torch.tensor([[-1.3497, 1.7602], [0.9654, -1.2710], [-0.1744, 0.2572]]), _MOVIE),
             label="three movie reviews (0 = rotten, 1 = fresh)"),
        Case((torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [-1.0, -2.0, 0.2], [0.0, 1.0, 0.9]]), _TWEETS),
             label="four tweets, three classes"),
        Case((torch.tensor([[0.7, -0.7]]), _MOVIE), label="a single review"),
        Case((torch.tensor([[0.1, 2.0, -1.0], [0.2, -0.3, 1.5]]), _TWEETS_SHUFFLED),
             label="two tweets, id2label written as {2: 'positive', 0: 'negative', 1: 'neutral'}"),
        Case((torch.tensor([[0.4, 0.4], [-1.0, -1.0], [0.0, 0.3]]), _MOVIE),
             label="ties: the first of the tied classes wins, as with argmax"),
    ],
    mistakes=[
        Mistake(lambda z, names: [sorted(names.values())[i] for i in z.argmax(-1).tolist()],
                "look names up by id in id2label; alphabetical order of the names (which is also the order of "
                "label2id in config.json) is not the order of the class ids."),
        Mistake(lambda z, names: [names[i] for i in z.argmax(0).tolist()],
                "take argmax over the classes (dim=-1): one predicted class per text, not per class."),
        Mistake(lambda z, names: z.argmax(-1).tolist(),
                "argmax gives class ids; map each id to its name with id2label[id]."),
    ],
))


# ----------------------------------------------------------------------------------------------- 00.classify (core)
def classify_by_hand(texts, tokenizer, model) -> list[dict]:
    """What ``pipeline("text-classification")`` returns for ``texts`` (a string or a list of strings): a list
    with one ``{"label": name, "score": probability of that label}`` per text. The reference is the real
    pipeline on the same model and tokenizer, with truncation to the model's 512 positions."""
    from transformers import pipeline

    model.eval()  # the pipeline expects an inference model; a model straight from training is in train mode
    return pipeline("text-classification", model=model, tokenizer=tokenizer)(texts, truncation=True)


def _seeded(fn):
    """Run ``fn`` with the random generator seeded (and restored after): a model left in train mode then drops
    the same units in the student's run and in the mistake's, so the mistake can be recognised."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return fn(*args, **kwargs)
    return run


def _by_hand(texts, tokenizer, model, *, train_mode=False, mask=True, dim=-1, score="softmax", names="id2label"):
    """The pipeline by hand, with one step done wrong (the wrong ways students take, named by the arguments)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not train_mode:
        model.eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")  # (B, T) each
    inputs = dict(batch) if mask else {"input_ids": batch["input_ids"]}
    with torch.no_grad():
        logits = model(**inputs).logits  # (B, C)
    class_ids = logits.argmax(dim=-1)  # (B,)
    if score == "softmax":
        values = torch.softmax(logits, dim=dim).gather(1, class_ids[:, None])[:, 0]  # (B,)
    elif score == "sigmoid":
        values = torch.sigmoid(logits.max(dim=-1).values)
    else:  # the logit itself
        values = logits.max(dim=-1).values
    label_of = model.config.id2label if names == "id2label" else dict(enumerate(model.config.label2id))
    return [{"label": label_of[i], "score": v} for i, v in zip(class_ids.tolist(), values.tolist())]


_LONG_REVIEW = "Overlong. " + " ".join(["The plot drags on and on, and nothing in it ever lands."] * 45)


def _classify_cases() -> list[Case]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from course_lib.sentiment import sentiment_model_path

    folder = sentiment_model_path()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    in_training = copy.deepcopy(model).train()
    three = ["A warm, funny and beautifully acted film.", "The plot is a mess and the jokes never land.",
             "It is a film about a family."]
    return [
        Case(("A warm, funny and beautifully acted film.", tokenizer, model),
             label="a single string (the pipeline still returns a list, with one dict)"),
        Case((three, tokenizer, model), label="the lesson's three texts, of different lengths (11, 13 and 10 tokens)"),
        Case(([_LONG_REVIEW, "", "Meh."], tokenizer, model),
             label="a review of 680 tokens (the model has 512 positions: truncate), an empty text and a "
             "one-word text"),
        Case((three, tokenizer, in_training), label="the three texts with a model that is still in train mode "
             "(as a training loop leaves it): dropout must be off"),
    ]


register(Exercise("00.classify", "the text-classification pipeline by hand", classify_by_hand, cases=_classify_cases,
    adapt=_seeded, level="core", minutes=25,
    hints=("four steps, as in section 2 of the lesson: the tokenizer pads and truncates a batch; the model in eval mode gives "
           "logits (batch, labels) under torch.no_grad(); softmax over the labels (dim=-1) gives probabilities; "
           "each text's best class id goes through model.config.id2label and keeps its probability as the score.",
           "batch = tokenizer(texts, padding=True, truncation=True, return_tensors='pt'); model.eval(); "
           "logits = model(**batch).logits; probs = torch.softmax(logits, dim=-1); scores, ids = probs.max(dim=-1); "
           "return [{'label': model.config.id2label[i], 'score': s} for s, i in zip(scores.tolist(), ids.tolist())]"),
    mistakes=[
        Mistake(functools.partial(_by_hand, dim=0),
                "softmax goes over the labels of each text (dim=-1), not over the texts of the batch (dim=0): a "
                "single text then gets probability 1 for every label."),
        Mistake(functools.partial(_by_hand, mask=False),
                "pass the attention_mask to the model too (model(**batch)): without it the [PAD] positions of the "
                "shorter texts are attended to and change their logits."),
        Mistake(functools.partial(_by_hand, score="logit"),
                "the score is a probability: softmax the logits first, then take the largest probability of each "
                "row (the logit itself is unbounded)."),
        Mistake(functools.partial(_by_hand, score="sigmoid"),
                "a single-label classifier's probabilities come from softmax over all its labels, not from a sigmoid "
                "of the best logit: the scores of a text must add up to 1."),
        Mistake(functools.partial(_by_hand, names="label2id"),
                "name the class with model.config.id2label[class_id]; the keys of label2id are in alphabetical "
                "order ('fresh', 'rotten'), which is not the order of the class ids."),
        Mistake(functools.partial(_by_hand, train_mode=True),
                "call model.eval() before the forward pass: in train mode dropout zeroes random units and the "
                "scores change from call to call."),
    ],
))


# ----------------------------------------------------------------------------------------------- 00.sorted_batches
def length_sorted_batches(texts, tokenizer, batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` in batches of ``batch_size``, shortest first by number of tokens (ties keep their
    order), so that each batch holds texts of similar length and needs little padding."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]  # tokens per text, [CLS]/[SEP] included
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # sorted() is stable: ties keep their order
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _sorted_by(key_of, reverse=False, keep_last=True):
    def batches(texts, tokenizer, batch_size):
        keys = key_of(list(texts), tokenizer)
        order = sorted(range(len(keys)), key=lambda i: keys[i], reverse=reverse)
        stop = len(order) if keep_last else len(order) - len(order) % batch_size
        return [order[start:start + batch_size] for start in range(0, stop, batch_size)]
    return batches


def _token_lengths(texts, tokenizer):
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def _sorted_batch_cases() -> list[Case]:
    from transformers import AutoTokenizer

    from course_lib.data import load_movie_reviews
    from course_lib.sentiment import sentiment_model_path

    tokenizer = AutoTokenizer.from_pretrained(sentiment_model_path())
    reviews = list(load_movie_reviews(profile="quick")["validation"]["text"][:30])
    return [
        Case((reviews[:20], tokenizer, 8), label="20 validation reviews, batch_size=8 (the last batch holds 4)"),
        Case((["Good.", "A film.", "Bad.", "Fine.", "Overlong and dull."], tokenizer, 2),
             label="five short texts, three of 4 tokens (ties keep their order), batch_size=2"),
        Case((reviews[10:30], tokenizer, 5), label="20 other validation reviews, batch_size=5"),
        Case((["A film.", "Good."], tokenizer, 16), label="two texts, batch_size=16: one batch"),
    ]


register(Exercise("00.sorted_batches", "batches of similar length", length_sorted_batches, cases=_sorted_batch_cases,
    level="stretch", minutes=15,
    hints=("count each text's tokens with the tokenizer (not its characters), sort the indices by that count, "
           "shortest first (sorted() keeps ties in order), and cut the sorted list into slices of batch_size.",
           "lengths = [len(ids) for ids in tokenizer(texts)['input_ids']]; order = sorted(range(len(texts)), "
           "key=lambda i: lengths[i]); return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]"),
    mistakes=[
        Mistake(_sorted_by(lambda texts, tok: [len(text) for text in texts]),
                "sort by the number of tokens the tokenizer makes, not by characters: padding is counted in tokens, "
                "and a long word can be one token while a short number is several."),
        Mistake(_sorted_by(_token_lengths, reverse=True), "shortest first (ascending lengths), as the task asks."),
        Mistake(_sorted_by(_token_lengths, keep_last=False),
                "keep the last batch even when it is shorter than batch_size: every text needs its prediction."),
        Mistake(_sorted_by(lambda texts, tok: [(n, text) for n, text in zip(_token_lengths(texts, tok), texts)]),
                "texts of equal length keep their original order: sort the indices by the length alone."),
    ],
))


# ----------------------------------------------------------------------------------------------- 00.parameters
@torch.random.fork_rng(devices=[])  # seeded here, the global random state left as it was
def _models() -> dict[str, nn.Module]:
    """Small models whose counts tell the usual mistakes apart (built once, weights irrelevant)."""
    torch.manual_seed(0)
    frozen = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    frozen[0].requires_grad_(False)
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight  # one (10, 4) tensor used twice, like tied input/output embeddings
    return {
        "linear": nn.Linear(4, 3),
        "mlp": nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2))),
        "norm": nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)),
        "tied": tied,
        "frozen": frozen,
        "no_parameters": nn.Sequential(nn.ReLU(), nn.Dropout(0.1)),
        "all_frozen": nn.Linear(3, 2).requires_grad_(False),
    }


_M = _models()

register(Exercise("00.parameters", "count a model's parameters", count_parameters, level="warm-up", minutes=5,
    hints=("a parameter tensor holds p.numel() values; model.parameters() lists every tensor once, nested layers and shared weights included.",
           "return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)"),
    cases=[
        Case((_M["linear"],), label="nn.Linear(4, 3)"),
        Case((_M["mlp"],), label="a small MLP with a nested nn.Sequential"),
        Case((_M["norm"],), label="Linear + BatchNorm1d (BatchNorm keeps running statistics as buffers)"),
        Case((_M["tied"],), label="an embedding tied to the output layer (one shared weight)"),
        Case((_M["frozen"],), {"trainable_only": True}, label="first layer frozen, trainable_only=True"),
        Case((_M["frozen"],), {"trainable_only": False}, label="first layer frozen, trainable_only=False"),
        Case((_M["no_parameters"],), label="ReLU and Dropout only: no parameters at all"),
        Case((_M["all_frozen"],), {"trainable_only": True}, label="every parameter frozen, trainable_only=True"),
    ],
    mistakes=[
        Mistake(lambda m, trainable_only=False: len(list(m.parameters())),
                "that is the number of parameter tensors; add up p.numel(), the number of values in each."),
        Mistake(lambda m, trainable_only=False: sum(p.numel() for sub in m.modules() for p in sub.parameters()),
                "model.parameters() already includes every submodule; looping over modules() counts nested "
                "layers again."),
        Mistake(lambda m, trainable_only=False: sum(p.numel() for p in m.parameters()),
                "with trainable_only=True, count only the parameters with requires_grad=True."),
        Mistake(lambda m, trainable_only=False: sum(v.numel() for v in m.state_dict().values()),
                "state_dict() also holds buffers (BatchNorm's running statistics) and lists a shared weight under "
                "every name; count model.parameters() instead."),
    ],
))
