"""Fine-tuning helpers against their peers: scikit-learn metrics, torch's cross-entropy, onnxruntime."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from course_lib import training

pytestmark = pytest.mark.numeric  # floating-point results: run under both numeric configurations


@pytest.fixture(scope="module")
def classifier():
    """The course encoder with a fresh two-class head (seeded), in eval mode."""
    from transformers import AutoModelForSequenceClassification

    from course_lib.assets import encoder_path

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder_path(), num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    return model.eval()


@pytest.mark.parametrize("seed,classes,rows", [(0, 2, 50), (1, 3, 97), (2, 5, 13), (3, 4, 1)])
def test_compute_metrics_equals_sklearn_accuracy_and_weighted_f1(seed, classes, rows):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=rows)
    got = training.compute_metrics((logits, labels))
    predictions = logits.argmax(-1)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-12)
    expected_f1 = f1_score(labels, predictions, average="weighted", labels=np.arange(classes), zero_division=0)
    assert got["f1"] == pytest.approx(expected_f1, abs=1e-12)


def test_compute_metrics_weighted_f1_differs_from_macro_on_imbalanced_labels():
    labels = np.array([0] * 8 + [1] * 2)
    logits = np.zeros((10, 2), dtype=np.float32)
    logits[:9, 0] = 1.0  # predicts class 0 nine times, class 1 once (correctly)
    logits[9, 1] = 1.0
    got = training.compute_metrics((logits, labels))
    predictions = logits.argmax(-1)
    assert got["f1"] == pytest.approx(f1_score(labels, predictions, average="weighted"))
    assert got["f1"] != pytest.approx(f1_score(labels, predictions, average="macro"))


def test_compute_metrics_accepts_an_eval_prediction_and_torch_tensors():
    from transformers import EvalPrediction

    rng = np.random.default_rng(4)
    logits, labels = rng.normal(size=(20, 3)), rng.integers(0, 3, size=20)
    from_numpy = training.compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    from_torch = training.compute_metrics((torch.tensor(logits), torch.tensor(labels)))
    assert from_numpy == pytest.approx(from_torch)
    assert from_numpy["accuracy"] == pytest.approx(accuracy_score(labels, logits.argmax(-1)))


@pytest.mark.parametrize("logits,labels,needle", [
    (np.zeros(4), np.zeros(4, dtype=int), "shape (examples, classes)"),
    (np.zeros((4, 2)), np.zeros(3, dtype=int), "labels of shape (4,)"),
    (np.zeros((0, 2)), np.zeros(0, dtype=int), "at least one example"),
    (np.zeros((2, 2)), np.array([0.0, 1.0]), "integer class labels"),
    (np.zeros((2, 2)), np.array([0, 2]), "labels must lie in [0, 1]"),
])
def test_bad_metric_inputs_are_rejected_with_a_clear_message(logits, labels, needle):
    with pytest.raises(ValueError) as caught:
        training.compute_metrics((logits, labels))
    assert needle in str(caught.value)


@pytest.mark.parametrize("seed,classes", [(0, 2), (1, 3), (2, 7)])
def test_per_example_loss_equals_torch_cross_entropy_without_reduction(seed, classes):
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(16, classes, generator=generator)
    labels = torch.randint(0, classes, (16,), generator=generator)
    got = training.per_example_loss(logits, labels)
    torch.testing.assert_close(got, F.cross_entropy(logits, labels, reduction="none"))
    assert got.mean().item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_per_example_loss_stays_finite_for_confident_logits():
    logits = torch.tensor([[200.0, -200.0], [-200.0, 200.0]])
    labels = torch.tensor([1, 1])
    got = training.per_example_loss(logits, labels)
    torch.testing.assert_close(got, F.cross_entropy(logits, labels, reduction="none"))
    assert torch.isfinite(got).all()


def test_loss_table_puts_the_confident_mistake_first_and_the_easy_case_last():
    logits = np.array([[2.0, -2.0], [0.1, 0.0], [-4.0, 4.0]], dtype=np.float32)
    labels = np.array([0, 1, 0])
    table = training.loss_table(["easy", "unsure", "confidently wrong"], labels, logits, ["rotten", "fresh"])
    assert list(table["text"]) == ["confidently wrong", "unsure", "easy"]
    assert list(table["predicted"]) == ["fresh", "rotten", "rotten"]
    expected = F.cross_entropy(torch.tensor(logits), torch.tensor(labels), reduction="none").numpy()
    np.testing.assert_allclose(table["loss"], np.sort(expected)[::-1], rtol=1e-6)
    np.testing.assert_allclose(table["p_label"], np.exp(-table["loss"]), rtol=1e-5)


def test_freeze_body_leaves_exactly_the_classifier_trainable(classifier):
    import copy

    model = training.freeze_body(copy.deepcopy(classifier))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    assert training.count_parameters(model, trainable_only=True) == 384 * 2 + 2
    assert training.count_parameters(model) == sum(p.numel() for p in classifier.parameters())


def test_frozen_body_gets_no_gradient_and_the_head_does(classifier, tokenizer):
    import copy

    model = training.freeze_body(copy.deepcopy(classifier))
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.base_model.parameters())


def test_freeze_body_refuses_a_model_without_a_head(hf_encoder):
    with pytest.raises(ValueError, match="no separate body"):
        training.freeze_body(hf_encoder)


def test_unfreeze_top_layers_trains_the_last_layers_the_pooler_and_the_head_only(classifier, tokenizer):
    import copy

    model = training.unfreeze_top_layers(training.freeze_body(copy.deepcopy(classifier)), 2)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    wanted = ("bert.encoder.layer.4.", "bert.encoder.layer.5.", "bert.pooler.", "classifier.")
    assert trainable == {name for name, _ in classifier.named_parameters() if name.startswith(wanted)}
    assert any(name.startswith("bert.encoder.layer.4.") for name in trainable)
    batch = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    model(**batch, labels=torch.tensor([1, 0])).loss.backward()
    layers = model.bert.encoder.layer
    assert all(p.grad is None for p in layers[3].parameters()) and model.bert.embeddings.word_embeddings.weight.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[4].parameters())


def test_unfreeze_top_layers_with_zero_layers_leaves_a_frozen_body_frozen(classifier):
    import copy

    model = training.unfreeze_top_layers(training.freeze_body(copy.deepcopy(classifier)), 0)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("num_layers", [-1, 7, 2.0, True])
def test_unfreeze_top_layers_rejects_a_number_of_layers_the_body_does_not_have(classifier, num_layers):
    with pytest.raises(ValueError, match="from 0 to 6"):
        training.unfreeze_top_layers(classifier, num_layers)


def test_unfreeze_top_layers_refuses_a_model_without_encoder_layers(hf_encoder):
    with pytest.raises(ValueError, match="no encoder layers"):
        training.unfreeze_top_layers(hf_encoder, 1)


def test_training_arguments_follow_the_profile_and_take_overrides(tmp_path):
    from course_lib.settings import get_profile

    args = training.training_arguments(tmp_path, profile="quick", learning_rate=1e-3)
    quick = get_profile("quick")
    assert args.num_train_epochs == quick.epochs and args.per_device_train_batch_size == quick.batch_size
    assert args.learning_rate == 1e-3 and args.weight_decay > 0 and 0 < args.warmup_steps < 1
    assert args.eval_strategy == "epoch" and args.report_to == [] and args.disable_tqdm
    assert args.train_sampling_strategy == "group_by_length"
    if not torch.cuda.is_available():
        assert args.use_cpu and not (args.fp16 or args.bf16)


def test_log_table_merges_train_and_eval_entries_of_a_step():
    history = [
        {"loss": 0.69312, "learning_rate": 4.5e-05, "epoch": 0.5, "step": 10},
        {"loss": 0.51234, "learning_rate": 1.0e-05, "epoch": 1.0, "step": 20},
        {"eval_loss": 0.45678, "eval_accuracy": 0.8123, "eval_f1": 0.8111, "epoch": 1.0, "step": 20},
        {"train_runtime": 12.3, "train_loss": 0.6, "epoch": 1.0, "step": 20},
    ]
    table = training.log_table(history)
    assert list(table["step"]) == [10, 20]
    assert table.loc[1, "train_loss"] == 0.512 and table.loc[1, "eval_accuracy"] == 0.812
    assert table.loc[0, "eval_f1"] == ""


def test_log_table_keeps_a_macro_f1_column_when_compute_metrics_reports_one():
    history = [{"loss": 0.7, "learning_rate": 1e-4, "epoch": 1.0, "step": 5},
               {"eval_loss": 0.5, "eval_accuracy": 0.75, "eval_f1": 0.74, "eval_macro_f1": 0.7249, "epoch": 1.0,
                "step": 5}]
    table = training.log_table(history)
    assert table.loc[0, "eval_macro_f1"] == 0.725 and list(table.columns)[-1] == "eval_macro_f1"


@pytest.mark.slow
def test_onnx_export_gives_the_same_logits_as_torch(classifier, tokenizer, tmp_path):
    path = training.export_onnx(classifier, tokenizer, tmp_path / "classifier.onnx")
    session = training.onnx_session(path)
    # batch sizes and lengths unlike the export example, with and without padding
    for texts in (["one"], ["no padding here", "no padding here"],
                  ["short", "a much longer review that needs many more tokens than the others", "mid length text"]):
        got = training.onnx_logits(session, tokenizer, texts)
        with torch.no_grad():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
            expected = classifier(**batch).logits.numpy()
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_onnx_logits_rejects_a_bare_string(tokenizer):
    with pytest.raises(ValueError, match="non-empty list of texts"):
        training.onnx_logits(None, tokenizer, "just one string")
