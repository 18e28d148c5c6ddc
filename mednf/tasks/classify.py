"""``mednf classify``: k-NN and MLP classifiers on a MedNF dataset's latents, with raw pixels as the baseline
(MedFuncta Table 4: the same classifier on the latents φ and on the flattened source images, with parameter
counts and training time).

Libraries:

- **scikit-learn** for k-NN (``KNeighborsClassifier``: Euclidean distance, uniform vote; multi-output for
  multi-label ChestNF) and for every metric (``accuracy_score``, ``f1_score``, ``roc_auc_score``): standard,
  tested implementations, so the numbers are comparable with other work and nothing is hand-written.
- **torch** for the MLP, the network of the official MedFuncta code (``downstream_tasks/classification.py``,
  ``SimpleClassifier``): Linear(F, 1024) → ReLU → Dropout(0.3) → Linear(1024, 512) → ReLU → Dropout(0.3) →
  Linear(512, C); batch 32, lr 1e-3, 50 epochs, the weights of the epoch with the best validation accuracy.

Choices (each recorded in :attr:`ClassificationReport.config`):

- Optimiser **AdamW** (lr 1e-3, torch's default weight decay 0.01), as issue #5 and the paper state; the
  official script uses Adam. Loss: cross-entropy; multi-label: ``BCEWithLogitsLoss`` per label.
- MLP inputs are **standardised** per feature with the train split's mean and std (std < 1e-6, e.g. constant
  border pixels → 1); the official script feeds raw latents. k-NN uses the raw features.
- Model selection on **val**: accuracy (multi-label: mean per-label AUC, since a 0.5 threshold on rare
  labels makes accuracy nearly constant); the first epoch reaching the best value is kept, and a copy of its
  weights is restored for the test split (the official script keeps a reference to the live
  ``state_dict()``, so it in fact evaluates the last epoch).
- Metrics on **test**. Accuracy (multi-label: mean over labels of the per-label accuracy at 0.5, MedMNIST's
  convention); macro F1 over the classes present in the labels or predictions (as torchmetrics'
  ``MulticlassF1Score`` used by the official script; multi-label: over all labels); AUC from probabilities
  (softmax / sigmoid for the MLP, the neighbour vote for k-NN): binary → probability of class 1,
  multi-class → one-vs-rest macro, multi-label → one AUC per label and their mean. An AUC that is undefined
  (a class absent from the test labels) is NaN with a note, not an error; the multi-label mean skips NaNs.
- Parameters: the MLP's weight count; k-NN has no weights and stores its training matrix, so its column
  holds N·F stored values (marked in the table).
- Chance: the classifier that always answers the train split's majority class (per label for multi-label).
- Seeded and deterministic on CPU (``torch.random.fork_rng``: the caller's RNG state is left as it was).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednf.errors import ClassifyError, ConfigError, SourceError
from mednf.format.splits import SPLITS
from mednf.loading import load
from mednf.optional import optional_import
from mednf.sources import read as source_read
from mednf.sources.kinds import images_unavailable

MODELS = ("knn", "mlp")
FEATURES = ("latents", "pixels")
KNN_K = (1, 3)
MLP_HIDDEN = (1024, 512)
MLP_DROPOUT = 0.3
MLP_LR = 1e-3
MLP_WEIGHT_DECAY = 0.01  # torch.optim.AdamW's default
MLP_BATCH_SIZE = 32




@dataclass
class Split:
    """Features and labels of one split."""

    x: np.ndarray  # [N, F] float32
    y: np.ndarray  # [N] int64 class ids, or [N, L] int64 0/1 for multi-label


@dataclass
class ClassifierResult:
    """One row of the table: one model on one kind of features, evaluated on the test split."""

    features: str  # "latents", "pixels" (or any name given to classify_arrays)
    model: str  # "1-NN", "3-NN" or "MLP"
    accuracy: float
    f1_macro: float
    auc: float  # NaN when undefined (see notes); multi-label: mean of the defined per-label AUCs
    auc_per_label: list[float] | None  # [L] for multi-label, else None
    parameters: int  # MLP: weights; k-NN: stored training values N·F (parameters_kind says which)
    parameters_kind: str  # "weights" or "stored"
    train_seconds: float  # k-NN: fit; MLP: all epochs including the per-epoch val evaluation
    test_seconds: float  # predicting the test split
    input_dim: int  # F
    predictions: np.ndarray  # [N_test] class ids, or [N_test, L] 0/1
    scores: np.ndarray  # [N_test, C] class probabilities, or [N_test, L] label probabilities
    best_epoch: int | None = None  # MLP: the epoch (1-based) chosen on val
    val_score: float | None = None  # MLP: its val accuracy (multi-label: val mean AUC)
    val_history: list[float] | None = None  # MLP: [epochs] the val score after each epoch
    notes: list[str] = field(default_factory=list)

    def to_dict(self, predictions: bool = False) -> dict[str, Any]:
        """The row as JSON-ready fields (NaN as None); with ``predictions``, also the test predictions and scores."""
        out = {k: getattr(self, k) for k in ("features", "model", "accuracy", "f1_macro", "auc", "auc_per_label",
                                             "parameters", "parameters_kind", "train_seconds", "test_seconds",
                                             "input_dim", "best_epoch", "val_score", "val_history", "notes")}
        out = {k: _json_float(v) for k, v in out.items()}
        if out["auc_per_label"] is not None:
            out["auc_per_label"] = [_json_float(v) for v in out["auc_per_label"]]
        if predictions:
            out["predictions"] = self.predictions.tolist()
            out["scores"] = self.scores.tolist()
        return out


def _json_float(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


# ----------------------------------------------------------------- metrics
def evaluate(y_true: np.ndarray, predictions: np.ndarray, scores: np.ndarray, *, num_classes: int,
             multi_label: bool) -> tuple[float, float, float, list[float] | None, list[str]]:
    """``(accuracy, macro F1, AUC, per-label AUC or None, notes)`` of predictions against ``y_true``.

    ``y_true`` / ``predictions``: ``[N]`` class ids or ``[N, L]`` 0/1; ``scores``: ``[N, C]`` class
    probabilities or ``[N, L]`` label probabilities. See the module docstring for the conventions.
    """
    metrics = optional_import("sklearn.metrics", "mednf classify")
    accuracy_score, f1_score, roc_auc_score = metrics.accuracy_score, metrics.f1_score, metrics.roc_auc_score
    notes: list[str] = []
    if multi_label:
        L = y_true.shape[1]
        accuracy = float(np.mean([accuracy_score(y_true[:, j], predictions[:, j]) for j in range(L)]))
        f1 = float(f1_score(y_true, predictions, average="macro", zero_division=0))
        per_label = []
        for j in range(L):
            if len(np.unique(y_true[:, j])) < 2:
                per_label.append(float("nan"))
            else:
                per_label.append(float(roc_auc_score(y_true[:, j], scores[:, j])))
        undefined = int(np.isnan(per_label).sum())
        if undefined:
            notes.append(f"AUC undefined for {undefined} of {L} labels (one value only in the test labels); "
                         "the mean skips them")
        auc = float(np.nanmean(per_label)) if undefined < L else float("nan")
        return accuracy, f1, auc, per_label, notes
    accuracy = float(accuracy_score(y_true, predictions))
    f1 = float(f1_score(y_true, predictions, average="macro", zero_division=0))
    present = np.unique(y_true)
    if len(present) < num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        notes.append(f"AUC undefined: class(es) {missing} absent from the test labels")
        return accuracy, f1, float("nan"), None, notes
    if num_classes == 2:
        auc = float(roc_auc_score(y_true, scores[:, 1]))
    else:
        probs = scores.astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)  # sklearn checks that each row sums to 1
        auc = float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=np.arange(num_classes)))
    return accuracy, f1, auc, None, notes


def chance(train_y: np.ndarray, test_y: np.ndarray, *, num_classes: int, multi_label: bool) -> dict[str, Any]:
    """Metrics of always answering the train split's majority class (per label for multi-label)."""
    if multi_label:
        majority = (train_y.mean(axis=0) > 0.5).astype(np.int64)  # [L]
        predictions = np.broadcast_to(majority, test_y.shape).copy()
        scores = np.broadcast_to(train_y.mean(axis=0), test_y.shape).astype(np.float64)
    else:
        counts = np.bincount(train_y, minlength=num_classes)
        majority = int(np.argmax(counts))
        predictions = np.full(len(test_y), majority)
        scores = np.broadcast_to(counts / counts.sum(), (len(test_y), num_classes)).astype(np.float64)
    accuracy, f1, auc, _, _ = evaluate(test_y, predictions, scores, num_classes=num_classes, multi_label=multi_label)
    return {"majority": majority.tolist() if multi_label else majority, "accuracy": accuracy, "f1_macro": f1,
            "auc": auc}


# ----------------------------------------------------------------- classifiers
def _knn(train: Split, test: Split, k: int, *, num_classes: int, multi_label: bool) -> dict[str, Any]:
    neighbors = optional_import("sklearn.neighbors", "the k-NN classifier")
    if len(train.x) < k:
        raise ConfigError(f"{k}-NN needs at least {k} training samples, the train split has {len(train.x)}; "
                          "use --model mlp or a larger dataset")
    clf = neighbors.KNeighborsClassifier(n_neighbors=k)
    started = time.perf_counter()
    clf.fit(train.x, train.y)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    proba = clf.predict_proba(test.x)  # multi-label: a list of L arrays [n, classes of label j]
    test_s = time.perf_counter() - started
    if multi_label:
        scores = np.zeros(test.y.shape, dtype=np.float64)  # [n, L]
        for j, (p, classes) in enumerate(zip(proba, clf.classes_)):
            if 1 in classes:
                scores[:, j] = p[:, list(classes).index(1)]
        predictions = (scores > 0.5).astype(np.int64)  # = clf.predict for k = 1, 3 (odd k: no ties)
    else:
        scores = np.zeros((len(test.x), num_classes), dtype=np.float64)  # [n, C]
        scores[:, clf.classes_] = proba
        predictions = clf.classes_[np.argmax(proba, axis=1)]  # = clf.predict (ties → first class)
    return {"predictions": predictions, "scores": scores, "train_s": train_s, "test_s": test_s,
            "parameters": int(train.x.size), "parameters_kind": "stored"}


def _mlp_network(in_dim: int, out_dim: int) -> torch.nn.Sequential:
    h1, h2 = MLP_HIDDEN
    return torch.nn.Sequential(torch.nn.Linear(in_dim, h1), torch.nn.ReLU(), torch.nn.Dropout(MLP_DROPOUT),
                               torch.nn.Linear(h1, h2), torch.nn.ReLU(), torch.nn.Dropout(MLP_DROPOUT),
                               torch.nn.Linear(h2, out_dim))


@torch.no_grad()
def _mlp_scores(model: torch.nn.Module, x: torch.Tensor, multi_label: bool, batch: int = 4096) -> np.ndarray:
    model.eval()
    logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)
    return probs.double().cpu().numpy()  # [n, L] or [n, C]


def _mlp_predict(scores: np.ndarray, multi_label: bool) -> np.ndarray:
    return (scores > 0.5).astype(np.int64) if multi_label else np.argmax(scores, axis=1)


def _mlp(train: Split, val: Split, test: Split, *, num_classes: int, multi_label: bool, epochs: int, seed: int,
         device: torch.device, batch_size: int, progress: bool, desc: str) -> dict[str, Any]:
    from tqdm.auto import tqdm

    mean = train.x.mean(axis=0, dtype=np.float64)  # [F]
    std = train.x.std(axis=0, dtype=np.float64)  # [F]
    std[std < 1e-6] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)

    def tensor(x: np.ndarray) -> torch.Tensor:  # [N, F] standardised, float32 on the device
        return torch.from_numpy((np.asarray(x, dtype=np.float32) - mean) / std).to(device)

    x_train, x_val, x_test = tensor(train.x), tensor(val.x), tensor(test.x)
    y_train = torch.from_numpy(train.y.astype(np.float32 if multi_label else np.int64)).to(device)
    out_dim = train.y.shape[1] if multi_label else num_classes
    loss_fn = torch.nn.BCEWithLogitsLoss() if multi_label else torch.nn.CrossEntropyLoss()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = _mlp_network(train.x.shape[1], out_dim).to(device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
        best, best_epoch, best_state, history = -math.inf, 0, copy.deepcopy(model.state_dict()), []
        bar = tqdm(range(epochs), desc=desc, unit="epoch", dynamic_ncols=True, disable=not progress, leave=False)
        started = time.perf_counter()
        for epoch in bar:
            model.train()
            order = torch.randperm(len(x_train), device=device)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                optimiser.zero_grad(set_to_none=True)
                loss_fn(model(x_train[idx]), y_train[idx]).backward()
                optimiser.step()
            val_scores = _mlp_scores(model, x_val, multi_label)
            if multi_label:
                _, _, score, _, _ = evaluate(val.y, _mlp_predict(val_scores, True), val_scores,
                                             num_classes=num_classes, multi_label=True)
                score = -math.inf if math.isnan(score) else score
            else:
                score = float(np.mean(_mlp_predict(val_scores, False) == val.y))
            history.append(score)
            if score > best:  # the first epoch reaching the best value
                best, best_epoch = score, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            bar.set_postfix(val=f"{score:.4f}", best=f"{best:.4f}@{best_epoch}")
        train_s = time.perf_counter() - started
        bar.close()
    model.load_state_dict(best_state)
    started = time.perf_counter()
    scores = _mlp_scores(model, x_test, multi_label)
    predictions = _mlp_predict(scores, multi_label)
    test_s = time.perf_counter() - started
    return {"predictions": predictions, "scores": scores, "train_s": train_s, "test_s": test_s,
            "parameters": sum(p.numel() for p in model.parameters()), "parameters_kind": "weights",
            "best_epoch": best_epoch, "val_score": best, "val_history": history}


def classify_arrays(train: Split, val: Split, test: Split, *, num_classes: int, multi_label: bool = False,
                    models: str | Sequence[str] = MODELS, features: str = "latents", epochs: int = 50, seed: int = 0,
                    device: str | torch.device | None = None, batch_size: int = MLP_BATCH_SIZE,
                    progress: bool = False) -> list[ClassifierResult]:
    """Train the chosen models on ``train`` (MLP: selected on ``val``) and evaluate them on ``test``.

    ``num_classes`` is C (multi-label: L, the label count); ``features`` only names the rows.
    Returns one :class:`ClassifierResult` per k (``knn``) and one for ``mlp``.
    """
    models = _check_models(models)
    _check_training(epochs, batch_size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    splits = {"train": train, "val": val, "test": test}
    for name, split in splits.items():
        if split.x.ndim != 2 or len(split.x) != len(split.y) or len(split.x) == 0:
            raise ClassifyError(f"{name} split has features {split.x.shape} and labels {split.y.shape}: expected "
                                "a non-empty [N, F] matrix and N labels")
    if len({s.x.shape[1] for s in splits.values()}) > 1:
        raise ClassifyError(f"the splits have different feature sizes {[s.x.shape[1] for s in splits.values()]}")
    results = []
    runs: list[tuple[str, dict[str, Any]]] = []
    if "knn" in models:
        runs += [(f"{k}-NN", _knn(train, test, k, num_classes=num_classes, multi_label=multi_label)) for k in KNN_K]
    if "mlp" in models:
        runs.append(("MLP", _mlp(train, val, test, num_classes=num_classes, multi_label=multi_label, epochs=epochs,
                                 seed=seed, device=device, batch_size=batch_size, progress=progress,
                                 desc=f"MLP on {features}")))
    for model, run in runs:
        accuracy, f1, auc, per_label, notes = evaluate(test.y, run["predictions"], run["scores"],
                                                       num_classes=num_classes, multi_label=multi_label)
        results.append(ClassifierResult(
            features=features, model=model, accuracy=accuracy, f1_macro=f1, auc=auc, auc_per_label=per_label,
            parameters=run["parameters"], parameters_kind=run["parameters_kind"], train_seconds=run["train_s"],
            test_seconds=run["test_s"], input_dim=int(train.x.shape[1]), predictions=run["predictions"],
            scores=run["scores"], best_epoch=run.get("best_epoch"), val_score=run.get("val_score"),
            val_history=run.get("val_history"), notes=notes))
    return results


# ----------------------------------------------------------------- report
@dataclass
class ClassificationReport:
    """Every (model, features) row on one dataset's test split, the chance level and the configuration."""

    name: str
    task: str  # "multi-class", "multi-label" or "ordinal" (treated as multi-class)
    label_names: list[str]
    counts: dict[str, int]  # samples per split
    y_test: np.ndarray  # [N_test] or [N_test, L]
    chance: dict[str, Any]  # always the train majority: majority, accuracy, f1_macro, auc
    results: list[ClassifierResult]
    config: dict[str, Any]

    @property
    def multi_label(self) -> bool:
        """Each sample may have several labels."""
        return self.task == "multi-label"

    def result(self, model: str, features: str = "latents") -> ClassifierResult:
        """The row of ``model`` ("1-NN", "3-NN", "MLP") on ``features``."""
        for r in self.results:
            if r.model.lower() == model.lower() and r.features == features:
                return r
        raise KeyError(f"no {model} row on {features} (rows: {[(r.model, r.features) for r in self.results]})")

    def config_line(self) -> str:
        """The classifiers' settings in one line (k, MLP shape and training, selection, seed, device)."""
        c = self.config
        return (f"k-NN k ∈ {{{', '.join(map(str, c['knn_k']))}}} (Euclidean, raw features); MLP "
                f"{'-'.join(map(str, c['mlp_hidden']))} ReLU, dropout {c['mlp_dropout']}, AdamW lr {c['mlp_lr']:g} "
                f"wd {c['mlp_weight_decay']:g}, batch {c['batch_size']}, {c['epochs']} epochs, inputs standardised "
                f"with train mean/std, epoch chosen on val {c['selection']}; seed {c['seed']}, {c['device']}")

    def to_markdown(self) -> str:
        """A Markdown table (models side by side on latents and pixels), the chance level and notes."""
        order = {m: i for i, m in enumerate(["1-NN", "3-NN", "MLP"])}
        features = list(dict.fromkeys(r.features for r in self.results))
        rows = sorted(self.results, key=lambda r: (order.get(r.model, 9), features.index(r.features)))
        lines = ["| model | features | input dim | parameters | train s | test s | accuracy | macro F1 | AUC |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            params = _human(r.parameters) + (" ¹" if r.parameters_kind == "stored" else "")
            epoch = f" (epoch {r.best_epoch})" if r.best_epoch else ""
            lines.append(f"| {r.model}{epoch} | {r.features} | {r.input_dim} | {params} | {r.train_seconds:.2f} | "
                         f"{r.test_seconds:.2f} | {r.accuracy:.3f} | {r.f1_macro:.3f} | {_fmt(r.auc)} |")
        c = self.chance
        majority = (f"per-label majority {c['majority']}" if self.multi_label
                    else f"always '{self.label_names[c['majority']]}', the most frequent train class")
        lines += ["", (f"Chance ({majority}): accuracy {c['accuracy']:.3f}, macro F1 {c['f1_macro']:.3f}, "
                       f"AUC {_fmt(c['auc'])}. Test split: {len(self.y_test)} samples.")]
        if any(r.parameters_kind == "stored" for r in rows):
            lines.append("¹ k-NN has no weights: the number of stored training values (N·F).")
        if self.multi_label:
            lines += ["", "Test AUC per label:", "", "| model | features | " + " | ".join(self.label_names) + " |",
                      "|---|---|" + "---:|" * len(self.label_names)]
            for r in rows:
                lines.append(f"| {r.model} | {r.features} | " + " | ".join(_fmt(a) for a in r.auc_per_label or [])
                             + " |")
        notes = sorted({f"{r.model} on {r.features}: {n}" for r in rows for n in r.notes})
        lines += [""] + [f"- {n}" for n in notes] if notes else []
        return "\n".join(lines)

    def to_dict(self, predictions: bool = False) -> dict[str, Any]:
        """JSON-able (NaN → None); ``predictions=True`` adds each row's test predictions and scores."""
        return {"name": self.name, "task": self.task, "label_names": self.label_names, "counts": self.counts,
                "chance": {k: _json_float(v) for k, v in self.chance.items()}, "config": self.config,
                "results": [r.to_dict(predictions) for r in self.results]}


def _human(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _fmt(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.3f}"


# ----------------------------------------------------------------- datasets
def _names(value: str | Sequence[str], known: tuple[str, ...], what: str, option: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        item = str(item).lower()
        if item == "all":
            out += known
        elif item in known:
            out.append(item)
        else:
            raise ConfigError(f"{what} {item!r} is unknown: expected {', '.join(known)} or all; fix {option}")
    if not out:
        raise ConfigError(f"no {what} given: expected one or more of {', '.join(known)} (or all); fix {option}")
    return tuple(dict.fromkeys(out))


def _check_models(models: str | Sequence[str]) -> tuple[str, ...]:
    return _names(models, MODELS, "model", "--model")


def _check_training(epochs: int, batch_size: int) -> None:
    if epochs < 1:
        raise ConfigError(f"epochs = {epochs} is invalid: expected a positive number of MLP training epochs")
    if batch_size < 1:
        raise ConfigError(f"batch_size = {batch_size} is invalid: expected a positive MLP batch size")


def _pixels_unavailable(manifest: Any, medmnist_root: str | Path | None) -> SourceError:
    return SourceError(f"the pixel baseline of {manifest.name} needs its source images, but "
                       f"{images_unavailable(manifest, medmnist_root)}, or classify the latents only "
                       "(--features latents / features=('latents',))")


def classify(name_or_path: str | Path, models: str | Sequence[str] = MODELS, *,
             features: str | Sequence[str] = FEATURES, root: str | Path | None = None,
             medmnist_root: str | Path | None = None, epochs: int = 50, seed: int = 0,
             device: str | torch.device | None = None, batch_size: int = MLP_BATCH_SIZE,
             progress: bool = True) -> ClassificationReport:
    """Classify a built MedNF dataset: ``models`` ⊆ {"knn", "mlp"} (or "all") on ``features`` ⊆ {"latents",
    "pixels"} (or "all"); train on train, select the MLP epoch on val, report test metrics.

    ``name_or_path`` / ``root`` as :func:`mednf.load` (local datasets only, no download); pixels are the
    source images read with :func:`mednf.sources.read.source_images` from ``medmnist_root`` (``$MEDMNIST_ROOT``,
    ``~/.medmnist``) or regenerated (PhantomNF). ``device``: the MLP's (default CPU).
    """
    models = _check_models(models)
    features = _names(features, FEATURES, "features", "--features")
    _check_training(epochs, batch_size)
    data = load(name_or_path, split=None, root=root, download=False)
    present = {s: len(data[s]) for s in data.splits}
    missing = [s for s in SPLITS if present.get(s, 0) == 0]
    first = next(iter(data.splits.values()))
    if missing:
        raise ClassifyError(f"{first.name} has no samples in split(s) {missing} (splits: {present}): classify needs "
                            "train, val and test; rebuild it with all three splits")
    manifest, multi_label = first.manifest, first.multi_label
    num_classes = len(first.label_names)
    labels = {s: data[s].labels.astype(np.int64) for s in SPLITS}  # [N] or [N, L]
    inputs: dict[str, dict[str, np.ndarray]] = {}
    if "latents" in features:
        inputs["latents"] = {s: np.asarray(data[s].latents) for s in SPLITS}  # [N, P] (a URL's rows are fetched)
    if "pixels" in features:
        inputs["pixels"] = {}
        for s in SPLITS:
            images = source_read.source_images(manifest, s, data[s].source_index,
                                               root=medmnist_root)  # [N, D, *spatial]
            if images is None:
                raise _pixels_unavailable(manifest, medmnist_root)
            inputs["pixels"][s] = images.reshape(len(images), -1)  # [N, D·prod(spatial)]
    results = []
    for name in features:
        splits = {s: Split(inputs[name][s], labels[s]) for s in SPLITS}
        results += classify_arrays(splits["train"], splits["val"], splits["test"], num_classes=num_classes,
                                   multi_label=multi_label, models=models, features=name, epochs=epochs, seed=seed,
                                   device=device, batch_size=batch_size, progress=progress)
    config = {"models": list(models), "features": list(features), "knn_k": list(KNN_K), "knn_metric": "euclidean",
              "mlp_hidden": list(MLP_HIDDEN), "mlp_dropout": MLP_DROPOUT, "mlp_lr": MLP_LR,
              "mlp_weight_decay": MLP_WEIGHT_DECAY, "optimizer": "AdamW", "batch_size": batch_size, "epochs": epochs,
              "selection": "mean AUC" if multi_label else "accuracy", "standardize": "train mean/std (MLP only)",
              "seed": seed, "device": str(torch.device(device) if device is not None else torch.device("cpu")),
              "torch": torch.__version__, "path": str(first.root)}
    return ClassificationReport(
        name=first.name, task=manifest.labels.task, label_names=list(first.label_names), counts=present,
        y_test=labels["test"], chance=chance(labels["train"], labels["test"], num_classes=num_classes,
                                             multi_label=multi_label), results=results, config=config)
