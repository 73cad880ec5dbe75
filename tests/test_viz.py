"""course_lib.viz: the offline attention views (data, determinism, self-containment, errors) and the heatmap.

The weights and vectors the views carry are checked against the real ``transformers`` models; the inlined
JavaScript against the files of the pinned packages. Drawing in a browser is tested in test_viz_browser.py.
"""
from __future__ import annotations

import copy
import html.parser
import importlib.util
import json
import re
from pathlib import Path

import matplotlib
import pytest
import torch

from course_lib.viz import (
    MAX_TOKENS, RUN_CELL_MESSAGE, attention_heatmap, head_view, model_view, neuron_view, page_html,
)

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations

# A view stores numbers rounded to 3 (weights) or 2 (vectors) decimals: it may differ from the model's float32
# value by half a unit of the last kept decimal, plus the float32 noise of a forward pass (another CPU, thread
# count or kernel may move a weight across a rounding boundary).
HALF_UNIT_3, HALF_UNIT_2, FLOAT32_NOISE = 0.0005, 0.005, 1e-5

matplotlib.use("Agg")

TEXT, PAIR = "The cat sat on the mat.", "It was very tired today."


@pytest.fixture(scope="module")
def pair_encoding(tokenizer):
    return tokenizer(TEXT, PAIR, return_tensors="pt")


@pytest.fixture(scope="module")
def model_attentions(hf_encoder, pair_encoding):
    """transformers' own weights for the pair: (L, H, T, T)."""
    with torch.no_grad():
        output = hf_encoder(**pair_encoding, output_attentions=True)
    return torch.stack([a[0] for a in output.attentions])


@pytest.fixture(scope="module")
def pair_head_view(hf_encoder, tokenizer):
    return head_view(hf_encoder, tokenizer, TEXT, PAIR)


def view_json(view) -> tuple[str, dict]:
    """The JSON text embedded in the view's HTML, and its parsed value."""
    match = re.search(r'<script type="application/json" class="course-viz-data">(.*?)</script>', view.html, re.S)
    assert match, "the view has no embedded JSON data"
    return match.group(1), json.loads(match.group(1))


def numbers(value):
    if isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


class StaticMarkup(html.parser.HTMLParser):
    """What a browser shows without running scripts: text and tags outside <script> elements."""

    def __init__(self):
        super().__init__()
        self.in_script, self.text, self.tags = False, [], []

    def handle_starttag(self, tag, attrs):
        self.in_script = self.in_script or tag == "script"
        if not self.in_script:
            self.tags.append(tag)

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False

    def handle_data(self, data):
        if not self.in_script and data.strip():
            self.text.append(data.strip())


# ----------------------------------------------------------------------------------------------- data
def test_head_view_carries_one_matrix_per_layer_and_head_for_every_token(pair_head_view, tokenizer, pair_encoding):
    tokens = tokenizer.convert_ids_to_tokens(pair_encoding["input_ids"][0].tolist())
    full = pair_head_view.data["attention"][0]
    attn = torch.tensor(full["attn"])
    assert attn.shape == (6, 12, len(tokens), len(tokens))
    assert full["left_text"] == full["right_text"] == tokens


def test_pair_filters_split_at_the_tokenizers_second_segment(pair_head_view, pair_encoding):
    b_start = pair_encoding["token_type_ids"][0].tolist().index(1)
    T = pair_encoding["input_ids"].shape[1]
    slices = {s["name"]: (s["rows"], s["cols"]) for s in pair_head_view.data["slices"]}
    assert slices == {
        "Sentence A -> Sentence A": ([0, b_start], [0, b_start]),
        "Sentence B -> Sentence B": ([b_start, T], [b_start, T]),
        "Sentence A -> Sentence B": ([0, b_start], [b_start, T]),
        "Sentence B -> Sentence A": ([b_start, T], [0, b_start]),
    }


def test_head_view_weights_are_the_models_weights_rounded_to_three_decimals(pair_head_view, model_attentions):
    attn = torch.tensor(pair_head_view.data["attention"][0]["attn"], dtype=torch.float64)
    torch.testing.assert_close(attn, model_attentions.double(), atol=HALF_UNIT_3 + FLOAT32_NOISE, rtol=0)
    text, data = view_json(pair_head_view)
    assert all(round(x, 3) == x for x in numbers(data["attention"][0]["attn"]))
    decimals = [len(m) for m in re.findall(r"(?<![\w.])-?\d+\.(\d+)", text)]
    assert decimals and max(decimals) <= 3


def test_view_is_a_third_of_bertviz_own_html_libraries_included(pair_head_view, model_attentions, pair_encoding,
                                                                  tokenizer):
    import bertviz

    tokens = tokenizer.convert_ids_to_tokens(pair_encoding["input_ids"][0].tolist())
    b_start = pair_encoding["token_type_ids"][0].tolist().index(1)
    original = bertviz.head_view([a[None] for a in model_attentions], tokens, sentence_b_start=b_start,
                                 html_action="return").data  # full-precision JSON, scripts from a CDN
    assert len(pair_head_view.html) < len(original) / 3
    assert len(view_json(pair_head_view)[0]) < len(original) / 10


def test_model_view_keeps_only_the_chosen_layers_and_heads(hf_encoder, tokenizer, model_attentions):
    view = model_view(hf_encoder, tokenizer, TEXT, PAIR, layers=[1, 4], heads=[0, 5, 7], mode="dark")
    attn = torch.tensor(view.data["attention"][0]["attn"], dtype=torch.float64)
    expected = model_attentions[[1, 4]][:, [0, 5, 7]].double()
    torch.testing.assert_close(attn, expected, atol=HALF_UNIT_3 + FLOAT32_NOISE, rtol=0)
    assert (view.data["include_layers"], view.data["include_heads"]) == ([1, 4], [0, 5, 7])
    assert view.data["display_mode"] == "dark" and "course-viz-dark" in view.html


def test_neuron_view_queries_and_keys_are_the_models_projections(hf_encoder, tokenizer):
    encoding = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        hidden = hf_encoder(**encoding, output_hidden_states=True).hidden_states  # L+1 x (1, T, 384)
        self_attention = hf_encoder.encoder.layer[3].attention.self
        query = self_attention.query(hidden[3])[0].view(-1, 12, 32).transpose(0, 1)  # (H, T, d)
        key = self_attention.key(hidden[3])[0].view(-1, 12, 32).transpose(0, 1)
    view = neuron_view(hf_encoder, tokenizer, TEXT, layer=3, head=2)
    data = view.data["attention"]["all"]
    queries, keys = torch.tensor(data["queries"]), torch.tensor(data["keys"])
    assert queries.shape == keys.shape == (6, 12, encoding["input_ids"].shape[1], 32)
    torch.testing.assert_close(queries[3], query, atol=HALF_UNIT_2 + FLOAT32_NOISE, rtol=0)
    torch.testing.assert_close(keys[3], key, atol=HALF_UNIT_2 + FLOAT32_NOISE, rtol=0)
    assert (view.data["layer"], view.data["head"]) == (3, 2)


def test_neuron_view_with_some_layers_labels_them_by_their_real_index(hf_encoder, tokenizer):
    view = neuron_view(hf_encoder, tokenizer, TEXT, PAIR, layer=5, layers=[2, 5])
    assert view.data["layer_labels"] == [2, 5] and view.data["layer"] == 1  # index of layer 5 in the data
    assert len(view.data["attention"]["all"]["queries"]) == 2
    assert sorted(s["key"] for s in view.data["slices"]) == ["aa", "ab", "ba", "bb"]


# ----------------------------------------------------------------------------------------------- determinism
def test_two_calls_give_byte_identical_html(hf_encoder, tokenizer, pair_head_view):
    assert head_view(hf_encoder, tokenizer, TEXT, PAIR).html == pair_head_view.html
    first = neuron_view(hf_encoder, tokenizer, TEXT)
    assert neuron_view(hf_encoder, tokenizer, TEXT).html == first.html
    assert repr(first) == repr(neuron_view(hf_encoder, tokenizer, TEXT))
    assert "0x" not in repr(first)  # no memory address: notebooks store the text next to the HTML


def test_different_texts_options_and_views_get_different_ids(hf_encoder, tokenizer, pair_head_view):
    views = [
        pair_head_view,
        head_view(hf_encoder, tokenizer, TEXT),
        head_view(hf_encoder, tokenizer, "A dog barked.", PAIR),
        head_view(hf_encoder, tokenizer, TEXT, PAIR, layer=2),
        head_view(hf_encoder, tokenizer, TEXT, PAIR, mode="dark"),
        model_view(hf_encoder, tokenizer, TEXT, PAIR),
    ]
    ids = [v.id for v in views]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"cv-(head|model)-[0-9a-f]{12}", i) for i in ids)
    assert all(f'id="{v.id}"' in v.html for v in views)


def test_model_in_training_mode_gives_the_same_view_and_stays_in_training_mode(hf_encoder, tokenizer,
                                                                                pair_head_view):
    hf_encoder.train()
    try:
        view = head_view(hf_encoder, tokenizer, TEXT, PAIR)  # dropout would change the weights
        assert hf_encoder.training
    finally:
        hf_encoder.eval()
    assert view.html == pair_head_view.html


def test_views_do_not_depend_on_the_thread_count(hf_encoder, tokenizer):
    """In float32 a few rounded numbers of this view flip between 1 and 2 threads; nbval would then fail."""
    threads = torch.get_num_threads()
    try:
        pages = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            pages.append(neuron_view(hf_encoder, tokenizer, "The cat sat.").html)
    finally:
        torch.set_num_threads(threads)
    assert pages[0] == pages[1] == pages[2]


def test_model_comes_back_bit_for_bit_in_its_own_dtype(tiny_llama, decoder_tokenizer):
    model = copy.deepcopy(tiny_llama).to(torch.bfloat16)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    head_view(model, decoder_tokenizer, "The cat sat.")
    after = model.state_dict()
    assert all(after[name].dtype == tensor.dtype and torch.equal(after[name], tensor) for name, tensor in before.items())


# ----------------------------------------------------------------------------------------------- offline
def _package_file(module: str, relative: str) -> str:
    folder = next(iter(importlib.util.find_spec(module).submodule_search_locations))
    return (Path(folder) / relative).read_text(encoding="utf-8")


def test_view_inlines_d3_and_jquery_from_the_pinned_packages(pair_head_view):
    assert _package_file("mpld3", "js/d3.v5.min.js") in pair_head_view.html
    assert _package_file("sphinxcontrib.jquery", "jquery.js") in pair_head_view.html


def test_html_has_no_cdn_address_and_no_external_script(hf_encoder, tokenizer, pair_head_view):
    for view in (pair_head_view, model_view(hf_encoder, tokenizer, TEXT), neuron_view(hf_encoder, tokenizer, TEXT)):
        page = view.page()
        assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
        assert not re.search(r"<link[^>]*\bhref|@import", page, re.I)
        for needle in ("cdnjs", "cloudflare", "jsdelivr", "unpkg", "googleapis", "require.min.js", "require.config"):
            assert needle not in page.lower(), needle
        # Left: XML namespace names inside d3 and jQuery, and d3's copyright line; none of them is fetched.
        hosts = set(re.findall(r"https?://([^/\s\"')]+)", page))
        assert hosts <= {"www.w3.org", "d3js.org"}, hosts


def test_static_markup_says_run_this_cell_and_has_no_empty_controls(pair_head_view):
    markup = StaticMarkup()
    markup.feed(pair_head_view.html)
    assert any(RUN_CELL_MESSAGE in text for text in markup.text)
    assert "select" not in markup.tags and "svg" not in markup.tags  # the script adds them when it runs


def test_save_writes_a_standalone_utf8_page(pair_head_view, tmp_path):
    path = pair_head_view.save(tmp_path / "views" / "head.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert pair_head_view.html in page and '<meta charset="utf-8">' in page


def test_page_of_several_views_keeps_each_view(hf_encoder, tokenizer, pair_head_view):
    other = head_view(hf_encoder, tokenizer, "A dog barked.")
    page = page_html([pair_head_view, pair_head_view, other])
    assert page.count('class="course-viz ') == 3 and other.html in page
    with pytest.raises(TypeError, match="attention views"):
        page_html(["<div></div>"])


# ----------------------------------------------------------------------------------------------- errors
def test_text_longer_than_the_token_limit_is_refused(hf_encoder, tokenizer):
    long_text = "word " * (MAX_TOKENS + 5)
    with pytest.raises(ValueError, match=rf"{MAX_TOKENS + 7} tokens.*max_tokens={MAX_TOKENS}"):
        head_view(hf_encoder, tokenizer, long_text)
    view = head_view(hf_encoder, tokenizer, long_text, layers=[0], max_tokens=80)
    assert len(view.data["attention"][0]["left_text"]) == MAX_TOKENS + 7


@pytest.mark.parametrize("call, message", [
    (lambda m, t: head_view(m, t, TEXT, layer=6), r"layer=6 is out of range.*6 layers \(0 to 5\)"),
    (lambda m, t: head_view(m, t, TEXT, layer=-1), r"layer=-1 is out of range"),
    (lambda m, t: head_view(m, t, TEXT, heads=[0, 12]), r"heads=12 is out of range.*12 heads"),
    (lambda m, t: head_view(m, t, TEXT, layer=2, layers=[0, 1]), r"layer=2 is not among the included layers"),
    (lambda m, t: model_view(m, t, TEXT, layers=[]), r"at least one"),
    (lambda m, t: model_view(m, t, TEXT, heads=[1, 1]), r"repeated"),
    (lambda m, t: neuron_view(m, t, TEXT, head=12), r"head=12 is out of range"),
    (lambda m, t: neuron_view(m, t, TEXT, layer=7), r"layer=7 is out of range"),
    (lambda m, t: head_view(m, t, "   "), r"non-empty text"),
    (lambda m, t: head_view(m, t, TEXT, ""), r"text_pair must be a non-empty text"),
    (lambda m, t: head_view(m, t, TEXT, mode="blue"), r"mode must be 'light' or 'dark', got 'blue'"),
    (lambda m, t: head_view(m, t, TEXT, decimals=-1), r"decimals must be an integer from 0 to 8"),
], ids=["layer-too-high", "layer-negative", "head-too-high", "layer-not-included", "no-layers", "repeated-heads",
        "neuron-head", "neuron-layer", "empty-text", "empty-pair", "mode", "decimals"])
def test_bad_arguments_get_a_clear_error(hf_encoder, tokenizer, call, message):
    with pytest.raises(ValueError, match=message):
        call(hf_encoder, tokenizer)


def test_text_of_the_wrong_type_is_refused(hf_encoder, tokenizer):
    with pytest.raises(TypeError, match="text must be a string, got list"):
        head_view(hf_encoder, tokenizer, ["a", "list"])


def test_model_without_attention_weights_is_told_to_use_eager(hf_encoder_sdpa, tokenizer):
    for view in (head_view, model_view, neuron_view):
        with pytest.raises(ValueError, match=r"'sdpa'.*attn_implementation=\"eager\""):
            view(hf_encoder_sdpa, tokenizer, TEXT)


@pytest.fixture(scope="module")
def tiny_llama(decoder_tokenizer):
    """A small random Llama (transformers' own class) with the course decoder's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(decoder_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         attn_implementation="eager")
    return LlamaForCausalLM(config).eval()


def test_decoder_head_view_is_causal_with_one_label_per_token(tiny_llama, decoder_tokenizer):
    view = head_view(tiny_llama, decoder_tokenizer, "The cat sat.", "It slept.")
    ids = decoder_tokenizer("The cat sat.", "It slept.")["input_ids"]
    full = view.data["attention"][0]
    attn = torch.tensor(full["attn"])  # (2, 4, T, T)
    assert attn.shape == (2, 4, len(ids), len(ids))
    assert torch.all(attn.triu(diagonal=1) == 0)  # no token attends to a later one
    assert full["left_text"][1] == " cat"  # byte-level "Ġcat" shown with its space
    assert view.data["slices"][0]["rows"] == [0, len(decoder_tokenizer("The cat sat.")["input_ids"])]


@pytest.mark.slow
def test_course_decoder_head_view_carries_its_causal_weights(hf_decoder, decoder_tokenizer):
    encoding = decoder_tokenizer("The cat sat on the mat.", return_tensors="pt")
    with torch.no_grad():
        expected = torch.stack([a[0] for a in hf_decoder(**encoding, output_attentions=True).attentions])
    view = head_view(hf_decoder, decoder_tokenizer, "The cat sat on the mat.", layers=[0, 15, 29])
    attn = torch.tensor(view.data["attention"][0]["attn"], dtype=torch.float64)  # (3, 9, T, T)
    torch.testing.assert_close(attn, expected[[0, 15, 29]].double(), atol=HALF_UNIT_3 + FLOAT32_NOISE, rtol=0)
    assert torch.all(attn.triu(diagonal=1) == 0)
    assert "30 layers" not in view.title and "3 layers \u00d7 9 heads" in view.title
    assert hf_decoder.dtype == torch.float32


def test_neuron_view_refuses_a_decoder(tiny_llama, decoder_tokenizer):
    with pytest.raises(TypeError, match="BERT-style encoder.*LlamaForCausalLM"):
        neuron_view(tiny_llama, decoder_tokenizer, "The cat sat.")


# ----------------------------------------------------------------------------------------------- heatmap
def test_heatmap_from_model_output_labels_both_axes_with_the_tokens(hf_encoder, tokenizer, pair_encoding,
                                                                    model_attentions):
    import matplotlib.pyplot as plt

    with torch.no_grad():
        output = hf_encoder(**pair_encoding, output_attentions=True)
    tokens = tokenizer.convert_ids_to_tokens(pair_encoding["input_ids"][0].tolist())
    ax = attention_heatmap(output.attentions, tokens, layer=2, head=7)
    try:
        assert [t.get_text() for t in ax.get_xticklabels()] == tokens
        assert [t.get_text() for t in ax.get_yticklabels()] == tokens
        assert ax.get_title() == "Attention weights, layer 2, head 7"
        assert ax.get_xlabel() and ax.get_ylabel()
        torch.testing.assert_close(torch.tensor(ax.images[0].get_array()), model_attentions[2, 7])
        assert len(ax.figure.axes) == 2  # the heatmap and its colorbar
    finally:
        plt.close(ax.figure)


def test_heatmap_runs_the_model_and_draws_on_a_given_axes(hf_encoder, tokenizer, model_attentions):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        drawn = attention_heatmap(model=hf_encoder, tokenizer=tokenizer, text=TEXT, text_pair=PAIR, layer=5, head=0,
                                  ax=ax)
        assert drawn is ax
        torch.testing.assert_close(torch.tensor(ax.images[0].get_array()).float(), model_attentions[5, 0])
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kwargs, error, message", [
    ({}, ValueError, "give attentions and tokens, or model, tokenizer and text"),
    ({"attentions": torch.rand(2, 3, 4, 4), "tokens": ["a", "b"]}, ValueError, "the 4 tokens"),
    ({"attentions": torch.rand(2, 3, 4, 5), "tokens": list("abcd")}, ValueError, r"shape \(layers, heads"),
    ({"attentions": torch.rand(2, 3, 4, 4), "tokens": list("abcd"), "head": 3}, ValueError, "head=3 is out of range"),
    ({"attentions": "weights", "tokens": list("abcd")}, TypeError, "got str"),
], ids=["nothing", "token-count", "not-square", "head", "type"])
def test_heatmap_bad_input_gets_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        attention_heatmap(**kwargs)
