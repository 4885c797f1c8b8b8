"""The HEAR downstream model: a shallow MLP trained on frozen embeddings, in plain PyTorch.

It follows heareval 2021.1.3 (``task_predictions.py``): ``FullyConnectedPrediction``'s layers
(Linear, BatchNorm1d, Dropout, ReLU per hidden layer; Xavier init with the gain of the activation
before the weights), Adam, validation every ``check_val_every_n_epoch`` epochs, and PyTorch
Lightning's ``EarlyStopping``/``ModelCheckpoint`` pair as the kit configures them: the monitored value
must strictly improve, ``patience`` checks without improvement stop training, a non-finite value
stops it at once (``check_finite``), and the best check's weights are restored for testing.

Training rows come in their stored order unless ``shuffle`` is asked for (the kit never shuffles;
see :class:`~.protocol.Protocol`). One unavoidable difference: a final training batch of a single
row is skipped when the model has BatchNorm, where the kit would fail ("Expected more than 1 value
per channel").
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .events import Postprocessing
from .metrics import VALIDATION_LOSS, Metric
from .protocol import HyperParameters, KnnParameters, Validator


class MLP(nn.Module):
    """The kit's prediction model."""

    def __init__(self, in_features: int, out_features: int, params: HyperParameters):
        super().__init__()
        initialize = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}[
            params.initialization
        ]
        norm = {"BatchNorm1d": nn.BatchNorm1d, "LayerNorm": nn.LayerNorm, "Identity": nn.Identity}[params.hidden_norm]
        layers: list[nn.Module] = []
        width, gain = in_features, nn.init.calculate_gain("linear")
        for _ in range(params.hidden_layers):
            linear = nn.Linear(width, params.hidden_dim)
            initialize(linear.weight, gain=gain)
            block = [nn.Dropout(params.dropout), nn.ReLU()]
            block = (
                block + [norm(params.hidden_dim)] if params.norm_after_activation else [norm(params.hidden_dim)] + block
            )
            layers += [linear, *block]
            width, gain = params.hidden_dim, nn.init.calculate_gain("relu")
        projection = nn.Linear(width, out_features)
        initialize(projection.weight, gain=gain)
        self.layers = nn.Sequential(*layers, projection)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def column_moments(rows, chunk: int = 8192, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Mean and (population) standard deviation of every column, computed in float64 in two passes
    (no cancellation for columns far from zero), read in chunks (a memmap stays on disk)."""
    total = np.zeros(rows.shape[1])
    for start in range(0, len(rows), chunk):
        total += np.asarray(rows[start : start + chunk], dtype=np.float64).sum(axis=0)
    mean = total / max(len(rows), 1)
    squares = np.zeros(rows.shape[1])
    for start in range(0, len(rows), chunk):
        squares += ((np.asarray(rows[start : start + chunk], dtype=np.float64) - mean) ** 2).sum(axis=0)
    std = np.sqrt(squares / max(len(rows), 1))
    return torch.from_numpy(mean).to(dtype), torch.from_numpy(std).to(dtype)


def probabilities(logits: Tensor, prediction_type: str) -> Tensor:
    return logits.softmax(dim=-1) if prediction_type == "multiclass" else logits.sigmoid()


def loss(logits: Tensor, targets: Tensor, prediction_type: str, reduction: str = "mean") -> Tensor:
    """Cross entropy on the argmax of one-hot targets (multiclass) or BCE with logits (multilabel)."""
    if prediction_type == "multiclass":
        return nn.functional.cross_entropy(logits, targets.argmax(dim=-1), reduction=reduction)
    return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction=reduction)


@dataclass
class TrainedPredictor:
    model: MLP
    params: HyperParameters
    #: Best monitored value: the primary validation score, or the validation loss when the task
    #: turns scoring off for early stopping. NaN when the first check was already non-finite.
    validation_score: float
    monitor: str  # "score" | "loss"
    best_epoch: int
    epochs_run: int
    #: Event decoding chosen at the best check (event tasks).
    postprocessing: Postprocessing | None

    def predict(self, x, prediction_type: str, device: str = "cpu") -> np.ndarray:
        return predict_logits(self.model, x, device, lambda logits: probabilities(logits, prediction_type))


def predict_logits(model: nn.Module, x, device: str = "cpu", transform=None, chunk: int = 8192) -> np.ndarray:
    """Logits (or ``transform(logits)``) for every row, computed in chunks (x may be a memmap)."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), chunk):
            batch = torch.from_numpy(np.array(x[start : start + chunk], dtype=np.float32)).to(device)
            logits = model(batch)
            outputs.append((transform(logits) if transform else logits).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, model.layers[-1].out_features), np.float32)


def train_predictor(
    x_train,
    y_train: np.ndarray,
    x_valid,
    y_valid: np.ndarray,
    params: HyperParameters,
    *,
    prediction_type: str,
    validate: Validator | None,
    metric: Metric | None = None,
    postprocessing: Postprocessing | None = None,
    shuffle: bool = False,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> TrainedPredictor:
    """Train one grid point with early stopping; the best validation check's weights are kept.

    ``validate`` + ``metric``: monitor the primary validation score. ``validate=None``: monitor the
    validation loss (lower is better) and use ``postprocessing`` as the event decoding, as the kit
    does for tasks with ``use_scoring_for_early_stopping: false``. ``progress`` shows an epoch bar
    with the best value so far: one grid point of a frame-level event task can train for many
    minutes on a CPU.
    """
    from tqdm import tqdm

    if validate is not None and metric is None:
        raise ValueError("monitoring a validation score needs its metric")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = Rows(x_train, device)
    targets = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    valid_targets = torch.as_tensor(y_valid, dtype=torch.float32)
    model = MLP(x_train.shape[1], targets.shape[1], params).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    has_batch_norm = params.hidden_layers > 0 and params.hidden_norm == "BatchNorm1d"

    def measure() -> tuple[float, Postprocessing | None]:
        logits = torch.from_numpy(predict_logits(model, x_valid, device))
        if validate is None:
            return float(loss(logits, valid_targets, prediction_type)), postprocessing
        return validate(probabilities(logits, prediction_type).numpy())

    rank = metric.rank if validate is not None else VALIDATION_LOSS.rank
    best_rank, best_value, best_state, best_epoch, best_postprocessing = -math.inf, math.nan, None, 0, postprocessing
    checks_without_improvement = 0
    epoch = 0
    with tqdm(total=params.max_epochs, desc="train", unit="epoch", leave=False, disable=not progress) as bar:
        for epoch in range(1, params.max_epochs + 1):
            bar.update()
            model.train()
            order = torch.randperm(len(targets), generator=generator) if shuffle else torch.arange(len(targets))
            for start in range(0, len(targets), params.batch_size):
                index = order[start : start + params.batch_size]
                if len(index) < 2 and has_batch_norm:
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss(model(inputs[index]), targets[index.to(device)], prediction_type).backward()
                optimizer.step()
            if epoch % params.check_val_every_n_epoch:
                continue
            value, chosen = measure()
            improved = rank(value) > best_rank
            if improved or best_state is None:  # ModelCheckpoint keeps the first check whatever its value
                best_rank, best_value, best_epoch, best_postprocessing = rank(value), value, epoch, chosen
                best_state = copy.deepcopy(model.state_dict())
                bar.set_postfix(best=f"{value:.4g}", at=epoch)
            if not math.isfinite(value):  # EarlyStopping(check_finite=True) stops on NaN or inf
                break
            checks_without_improvement = 0 if improved else checks_without_improvement + 1
            if checks_without_improvement >= params.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainedPredictor(
        model, params, best_value, "score" if validate is not None else "loss", best_epoch, epoch, best_postprocessing
    )


def free_bytes(device: str) -> int:
    """Free memory where tensors for `device` live: the GPU's own, else the host's."""
    if torch.device(device).type == "cuda":
        return torch.cuda.mem_get_info(torch.device(device))[0]
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Rows:
    """Training inputs: copied to the device when they fit in its memory, else read per batch from the memmap."""

    def __init__(self, rows, device: str):
        self.in_memory = rows.nbytes < free_bytes(device) // 2
        self.device = device
        self.rows = torch.from_numpy(np.array(rows, dtype=np.float32)).to(device) if self.in_memory else rows

    def __getitem__(self, index: Tensor) -> Tensor:
        if self.in_memory:
            return self.rows[index.to(self.device)]
        order = index.sort()  # sequential reads from the memory-mapped file
        batch = torch.from_numpy(np.asarray(self.rows[order.values.numpy()], dtype=np.float32))
        return batch[order.indices.argsort()].to(self.device)


@dataclass
class KnnPredictor:
    """The kNN probe: a clip's class probabilities are the mean label vector of its ``k`` most
    cosine-similar training clips (uniform votes, as scikit-learn's ``KNeighborsClassifier``)."""

    params: KnnParameters
    train_rows: Tensor  # L2-normalised
    train_targets: Tensor
    validation_score: float = math.nan
    monitor: str = "score"
    best_epoch: int = 0
    epochs_run: int = 0
    postprocessing: Postprocessing | None = None

    @classmethod
    def fit(cls, x_train, y_train: np.ndarray, params: KnnParameters) -> "KnnPredictor":
        rows = torch.from_numpy(np.array(x_train, dtype=np.float32))
        return cls(params, nn.functional.normalize(rows, dim=1), torch.as_tensor(y_train, dtype=torch.float32))

    def predict(self, x, prediction_type: str = "multiclass", device: str = "cpu", chunk: int = 2048) -> np.ndarray:
        k = min(self.params.k, len(self.train_rows))
        outputs = []
        for start in range(0, len(x), chunk):
            query = nn.functional.normalize(torch.from_numpy(np.array(x[start : start + chunk], np.float32)), dim=1)
            nearest = (query @ self.train_rows.T).topk(k, dim=1).indices
            outputs.append(self.train_targets[nearest].mean(dim=1).numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self.train_targets.shape[1]), np.float32)
