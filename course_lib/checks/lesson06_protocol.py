"""Exercises of lesson 06 on evaluation: the protocol (``06.protocol``, core: choose by cross-validation on the
training split, test once) and a decision threshold chosen on validation (``06.threshold``, stretch). The warm-ups
are in :mod:`course_lib.checks.lesson06`."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from course_lib.checks import Case, Exercise, Mistake, _short, compare_outputs, register
from course_lib.evaluation import bootstrap_interval


# ----------------------------------------------------------------------------------------------- 06.protocol
PROTOCOL_FOLDS = 5  # stratified, shuffled with the seed


def _classifier(C):
    """The model every setting is scored with: standardise (fitted on the rows it is given), then a logistic
    regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def _protocol_result(pooling, C, cv_accuracy, correct, seed):
    interval = bootstrap_interval(np.asarray(correct, dtype=float), seed=seed)  # over the test examples
    return {"pooling": pooling, "C": float(C), "cv_accuracy": float(cv_accuracy),
            "test_accuracy": float(np.mean(correct)), "test_interval": (interval.low, interval.high)}


def choose_and_evaluate(train_features_by_pooling, y_train, test_features_by_pooling, y_test, Cs, seed):
    """Choose the pooling and the regularisation ``C`` by stratified k-fold cross-validation on the training split
    only, refit the chosen setting on the whole training split, and touch the test split once.

    ``*_features_by_pooling``: ``{pooling: (N, D) array}`` with the same keys; ``Cs``: the values of ``C`` to try.
    Ties go to the earlier pooling, then the earlier ``C``. Returns the choice, its mean cross-validated accuracy,
    the test accuracy and a seeded 95% bootstrap interval over the test examples.
    """
    if not train_features_by_pooling or set(train_features_by_pooling) != set(test_features_by_pooling):
        raise ValueError("expected the same, non-empty set of poolings for the training and the test features")
    if len(Cs) == 0:
        raise ValueError("expected at least one value of C to try")
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    folds = StratifiedKFold(n_splits=PROTOCOL_FOLDS, shuffle=True, random_state=seed)
    best = None  # (mean cross-validated accuracy, pooling, C)
    for pooling, x_train in train_features_by_pooling.items():
        for C in Cs:
            score = cross_val_score(_classifier(C), x_train, y_train, cv=folds).mean()  # training split only
            if best is None or score > best[0]:
                best = (score, pooling, C)
    cv_accuracy, pooling, C = best
    final = _classifier(C).fit(train_features_by_pooling[pooling], y_train)  # the whole training split
    correct = final.predict(test_features_by_pooling[pooling]) == y_test  # (N_test,): the one look at the test split
    return _protocol_result(pooling, C, cv_accuracy, correct, seed)


def _scored_settings(train, y_train, Cs, folds):
    """[(mean cross-validated accuracy, pooling, C)] in the order the reference tries them."""
    return [(cross_val_score(_classifier(C), x, y_train, cv=folds).mean(), pooling, C)
            for pooling, x in train.items() for C in Cs]


def _first_best(scored):
    return max(enumerate(scored), key=lambda item: (item[1][0], -item[0]))[1]  # ties: the earlier setting


def _protocol_with(train, y_train, test, y_test, Cs, seed, folds=None, choose_on_test=False, refit=True,
                   bootstrap_train=False, cv_as_test=False):
    """The protocol with one step done wrong: each known mistake below is this function with one switch."""
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    folds = folds if folds is not None else StratifiedKFold(PROTOCOL_FOLDS, shuffle=True, random_state=seed)
    scored = _scored_settings(train, y_train, Cs, folds)
    if choose_on_test:
        on_test = [(_classifier(C).fit(train[p], y_train).score(test[p], y_test), p, C) for _, p, C in scored]
        _, pooling, C = _first_best(on_test)
        cv_accuracy = next(score for score, p, c in scored if (p, c) == (pooling, C))
    else:
        cv_accuracy, pooling, C = _first_best(scored)
    if refit:
        final = _classifier(C).fit(train[pooling], y_train)
    else:  # the model of the last fold
        fitted = cross_validate(_classifier(C), train[pooling], y_train, cv=folds, return_estimator=True)
        final = fitted["estimator"][-1]
    correct = final.predict(test[pooling]) == y_test
    result = _protocol_result(pooling, C, cv_accuracy, correct, seed)
    if bootstrap_train:
        interval = bootstrap_interval((final.predict(train[pooling]) == y_train).astype(float), seed=seed)
        result["test_interval"] = (interval.low, interval.high)
    if cv_as_test:
        result["test_accuracy"] = float(cv_accuracy)
    return result


def _scaler_fitted_on_everything(train, y_train, test, y_test, Cs, seed):
    """Standardised once, with the mean and spread of the training AND test rows, before any split."""
    scaled_train, scaled_test = {}, {}
    for pooling in train:
        scaler = StandardScaler().fit(np.vstack([train[pooling], test[pooling]]))
        scaled_train[pooling], scaled_test[pooling] = scaler.transform(train[pooling]), scaler.transform(test[pooling])
    return _protocol_with(scaled_train, y_train, scaled_test, y_test, Cs, seed)


def _compare_protocol(got, expected):
    """The choice first, then the cross-validated score, the test accuracy and its interval; each named."""
    if not isinstance(got, dict) or set(got) != set(expected):
        return f"expected a dict with the keys {sorted(expected)}, got {_short(got)}"
    if compare_outputs(got["pooling"], expected["pooling"]) or compare_outputs(got["C"], expected["C"]):
        return (f"the choice differs: expected pooling {expected['pooling']!r} with C={expected['C']:g} (the best "
                f"mean accuracy over the stratified, shuffled folds), got {got['pooling']!r} with C={_short(got['C'])}")
    notes = {"cv_accuracy": "the mean accuracy over the 5 folds of the chosen setting",
             "test_accuracy": "the chosen setting, refitted on the whole training split, scored on the test split",
             "test_interval": "bootstrap_interval over the test examples' right/wrong, with the seed"}
    for key, note in notes.items():
        problem = compare_outputs(got[key], expected[key])
        if problem:
            return f"{key} ({note}): {problem}"
    return None


def _protocol_cases():
    """Small, seeded random slices of the lesson's real features (both poolings of the course encoder)."""
    from course_lib.assets import load_encoder, load_tokenizer
    from course_lib.data import load_movie_reviews, load_tweets
    from course_lib.features import extract_features

    model, tokenizer = load_encoder(attn_implementation="sdpa"), load_tokenizer()

    def sliced(splits, split, size, seed):  # the rows are stored in source order: draw them at random
        rows = splits[split].select(np.sort(np.random.default_rng(seed).choice(len(splits[split]), size, False)))
        pooled = extract_features(rows["text"], model, tokenizer, progress=False)  # {"cls": (N, D), "mean": (N, D)}
        return {"cls": pooled["cls"], "mean": pooled["mean"]}, np.array(rows["label"])

    movies, tweets = load_movie_reviews("quick"), load_tweets("quick")
    cases = []
    for name, splits, (n_train, n_test), Cs, seed in (("movie reviews", movies, (160, 100), (0.01, 0.1, 1.0), 0),
                                                      ("tweets", tweets, (180, 120), (0.003, 0.03, 0.3), 1)):
        train, y_train = sliced(splits, "train", n_train, seed)
        test, y_test = sliced(splits, "test", n_test, seed + 10)
        cases.append(Case((train, y_train, test, y_test, Cs, seed),
                          label=f"{name}: {n_train} training and {n_test} test texts, Cs={Cs}, seed={seed}"))
    train, y_train, test, y_test = cases[0].args[:4]  # the movie reviews again, with a test split from elsewhere
    shifted = {pooling: 3.0 * x + 1.0 for pooling, x in test.items()}  # (100, D): another scale and offset
    cases.append(Case((train, y_train, shifted, y_test, (0.01, 0.1, 1.0), 2),
                      label="movie reviews whose test features come from a source with another scale (3x + 1): "
                            "nothing learned from the training rows may depend on them"))
    return cases


register(Exercise("06.protocol", "choose by cross-validation on the training split, test once", choose_and_evaluate,
    level="core", minutes=30, cases=_protocol_cases, compare=_compare_protocol,
    hints=("Three steps, three kinds of data: the folds of the training split choose (pooling, C); the whole "
           "training split fits the chosen setting once more; the test split is scored once, at the very end, and "
           "bootstrap_interval over its right/wrong gives the interval.",
           "folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed); for each pooling and C: "
           "score = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)), "
           "x_train, y_train, cv=folds).mean(); keep the best (first on ties); refit it on all of x_train."),
    mistakes=[
        Mistake(lambda *a: _protocol_with(*a, choose_on_test=True),
                "you chose the pooling and C by their accuracy on the TEST split. Choose by the mean "
                "cross-validated accuracy on the training split; the test split is scored once, after the choice."),
        Mistake(lambda tr, ytr, te, yte, Cs, seed: _protocol_with(tr, ytr, te, yte, Cs, seed,
                                                                   folds=StratifiedKFold(PROTOCOL_FOLDS)),
                "your folds are not shuffled (cv=5 or StratifiedKFold(5) without shuffle=True): use "
                "StratifiedKFold(n_splits=5, shuffle=True, random_state=seed), so the folds depend on the seed and "
                "not on the order the rows happen to be stored in."),
        Mistake(lambda tr, ytr, te, yte, Cs, seed: _protocol_with(
                    tr, ytr, te, yte, Cs, seed, folds=KFold(PROTOCOL_FOLDS, shuffle=True, random_state=seed)),
                "KFold ignores the labels, so a fold can hold more or fewer of a rare class than the data: use "
                "StratifiedKFold(n_splits=5, shuffle=True, random_state=seed), which keeps each class's share."),
        Mistake(lambda *a: _protocol_with(*a, refit=False),
                "your test predictions come from a model fitted on one fold's share of the training rows. After "
                "choosing, refit the chosen setting on the WHOLE training split, then predict the test split."),
        Mistake(_scaler_fitted_on_everything,
                "the scaler saw the test rows (fitted on training and test together, before any split): a leak. "
                "Put StandardScaler inside the pipeline, so each fit learns its scale from its own training rows."),
        Mistake(lambda *a: _protocol_with(*a, bootstrap_train=True),
                "your interval resamples the TRAINING rows' right/wrong: it says how well the model remembers its "
                "training data. Bootstrap the test examples: bootstrap_interval(correct_on_test, seed=seed)."),
        Mistake(lambda *a: _protocol_with(*a, cv_as_test=True),
                "test_accuracy is the cross-validated score of the choice, not a test score: it was the best of "
                "several, so it is optimistic. Score the refitted model on the test split."),
    ],
))


# ----------------------------------------------------------------------------------------------- 06.threshold
def predict_with_threshold(probabilities, positive: int, threshold: float) -> np.ndarray:
    """Class ids (N,): ``positive`` where its probability reaches ``threshold``, else the likeliest other class."""
    probabilities = np.asarray(probabilities, dtype=float)  # (N, C)
    others = probabilities.copy()
    others[:, positive] = -np.inf  # (N, C): the positive class cannot win the fallback
    return np.where(probabilities[:, positive] >= threshold, positive, others.argmax(axis=1))  # (N,)


def choose_threshold(probabilities, y_true, positive, thresholds, score=None):
    """The threshold (of ``thresholds``, the first on ties) whose predictions give the best macro F1 on the labels
    given (a validation split): ``{"threshold": float, "macro_f1": float}``."""
    probabilities, y_true = np.asarray(probabilities, dtype=float), np.asarray(y_true)
    if probabilities.ndim != 2 or probabilities.shape[0] != y_true.shape[0] or len(thresholds) == 0:
        raise ValueError(f"expected probabilities (N, C) for N labels and some thresholds, got {probabilities.shape}, "
                         f"{y_true.shape} and {len(thresholds)} thresholds")
    score = score or (lambda y, predicted: f1_score(y, predicted, average="macro"))
    best = None
    for threshold in thresholds:
        value = score(y_true, predict_with_threshold(probabilities, positive, threshold))
        if best is None or value > best[1]:
            best = (float(threshold), float(value))
    return {"threshold": best[0], "macro_f1": best[1]}


def _probabilities(n: int, classes: int, seed: int, rare: int, bias: float = -0.8) -> tuple[np.ndarray, np.ndarray]:
    """Seeded labels (the rare class a fifth) and probabilities rounded to 0.05 (so some sit exactly on a threshold)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, n, p=[0.2 if c == rare else 0.8 / (classes - 1) for c in range(classes)])
    logits = rng.normal(size=(n, classes)) + 1.2 * np.eye(classes)[y]  # (N, C): informative, far from perfect
    logits[:, rare] += bias  # < 0: under-predicted, as after training on imbalanced data; > 0: over-predicted
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p = np.round(p / 0.05) * 0.05
    return p / p.sum(axis=1, keepdims=True), y


_GRID = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())
_P1, _Y1 = _probabilities(200, 3, seed=3, rare=2)
_P2, _Y2 = _probabilities(120, 4, seed=4, rare=0)
_P3, _Y3 = _probabilities(200, 3, seed=5, rare=1, bias=1.5)
_TIE = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.2, 0.3]])


def _accuracy(y, predicted):
    return float(np.mean(y == predicted))


register(Exercise("06.threshold", "a decision threshold for the rare class, chosen for macro F1", choose_threshold,
    level="stretch", minutes=20,
    cases=[
        Case((_P1, _Y1, 2, _GRID), label="200 validation tweets, positive (class 2) is rare and under-predicted"),
        Case((_P2, _Y2, 0, (0.2, 0.3, 0.4, 0.5)), label="4 classes, the rare class is 0; probabilities sit exactly "
             "on the thresholds"),
        Case((_P3, _Y3, 1, _GRID), label="200 examples where the rare class (1) is over-predicted, as after "
             "oversampling: the best threshold is high, and below it another class must be predicted"),
        Case((_TIE, np.array([0, 1, 2, 2]), 2, (0.2, 0.3, 0.5, 0.6)),
             label="4 examples where several thresholds give the same macro F1: the first of them wins"),
    ],
    hints=("For each threshold: predict the rare class where its probability is at least the threshold, otherwise "
           "the likeliest of the OTHER classes; score with macro F1; keep the first best.",
           "others = probabilities.copy(); others[:, positive] = -np.inf; predicted = np.where(probabilities[:, "
           "positive] >= t, positive, others.argmax(axis=1)); f1_score(y_true, predicted, average='macro')"),
    mistakes=[
        Mistake(lambda p, y, pos, ts: choose_threshold(p, y, pos, ts, score=_accuracy) | {
                    "macro_f1": choose_threshold(p, y, pos, [choose_threshold(p, y, pos, ts, score=_accuracy)[
                        "threshold"]])["macro_f1"]},
                "you chose the threshold by accuracy; the goal here is macro F1 (f1_score(..., average='macro')), "
                "which counts the rare class as much as the frequent ones."),
        Mistake(lambda p, y, pos, ts: choose_threshold(p, y, pos, ts, score=lambda a, b: f1_score(
                    a, b, average="weighted")),
                "average='weighted' weighs each class by its size, so the rare class hardly counts: use "
                "average='macro'."),
        Mistake(lambda p, y, pos, ts: choose_threshold(p, y, pos, [t + 1e-9 for t in ts]) | {
                    "threshold": choose_threshold(p, y, pos, [t + 1e-9 for t in ts])["threshold"] - 1e-9},
                "a probability equal to the threshold counts as reaching it: use >= threshold, not >."),
        Mistake(lambda p, y, pos, ts: max(({"threshold": float(t), "macro_f1": float(f1_score(y, np.where(
                    np.asarray(p)[:, pos] >= t, pos, np.asarray(p).argmax(axis=1)), average="macro"))} for t in ts),
                    key=lambda r: r["macro_f1"]),
                "below the threshold, the prediction must be one of the OTHER classes: set the rare class's "
                "probability to -inf before the argmax, or the rare class still wins where it is the likeliest."),
    ],
))
