"""The HEAR downstream protocol: a shallow MLP trained on frozen embeddings, in plain PyTorch.

Faithful to the HEAR 2021 kit: hidden layers of 1024 with BatchNorm, dropout 0.1 and ReLU
(in that order), Xavier initialisation with the ReLU/linear gain, Adam, batch 1024,
validation every 3 epochs, early stopping on the primary metric after 20 checks without
improvement, at most 500 epochs, and the weights of the best validation check restored
for testing. Grid: hidden layers {1, 2} x lr {3.2e-3, 1e-3, 3.2e-4, 1e-4} x init
{xavier uniform, xavier normal}, 8 configurations drawn with a fixed seed.

One deliberate difference: training batches are shuffled (with a seeded generator); the
kit read memory-mapped embeddings in file order because random access was slow.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import random
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from scipy.ndimage import median_filter
from torch import Tensor, nn


@dataclass(frozen=True)
class HyperParameters:
    hidden_layers: int
    lr: float
    initialization: str  # "xavier_uniform" | "xavier_normal"
    hidden_dim: int = 1024
    dropout: float = 0.1
    batch_size: int = 1024
    max_epochs: int = 500
    check_every: int = 3
    patience: int = 20

    def to_dict(self) -> dict:
        return asdict(self)


GRID = {
    "hidden_layers": [1, 2],
    "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
    "initialization": ["xavier_uniform", "xavier_normal"],
}
GRID_SIZE = math.prod(len(values) for values in GRID.values())


def hyperparameter_grid(points: int = 8, seed: int = 0, **overrides) -> list[HyperParameters]:
    """``points`` configurations of the HEAR grid, drawn in a fixed order for a seed."""
    configs = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    random.Random(seed).shuffle(configs)
    return [HyperParameters(**config, **overrides) for config in configs[:points]]


class MLP(nn.Module):
    def __init__(self, in_features: int, out_features: int, params: HyperParameters):
        super().__init__()
        initialize = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}[
            params.initialization
        ]
        layers: list[nn.Module] = []
        width, gain = in_features, nn.init.calculate_gain("linear")
        for _ in range(params.hidden_layers):
            linear = nn.Linear(width, params.hidden_dim)
            initialize(linear.weight, gain=gain)
            layers += [linear, nn.BatchNorm1d(params.hidden_dim), nn.Dropout(params.dropout), nn.ReLU()]
            width, gain = params.hidden_dim, nn.init.calculate_gain("relu")
        projection = nn.Linear(width, out_features)
        initialize(projection.weight, gain=gain)
        self.layers = nn.Sequential(*layers, projection)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def probabilities(logits: Tensor, prediction_type: str) -> Tensor:
    return logits.softmax(dim=-1) if prediction_type == "multiclass" else logits.sigmoid()


def _loss(logits: Tensor, targets: Tensor, prediction_type: str) -> Tensor:
    if prediction_type == "multiclass":
        return nn.functional.cross_entropy(logits, targets.argmax(dim=-1))
    return nn.functional.binary_cross_entropy_with_logits(logits, targets)


@dataclass
class TrainedPredictor:
    model: MLP
    params: HyperParameters
    validation_score: float
    best_epoch: int
    epochs_run: int
    validation_extra: dict  # e.g. the event decoding chosen on validation

    def predict(self, x: np.ndarray | Tensor, prediction_type: str, device: str = "cpu") -> np.ndarray:
        return predict(self.model, x, prediction_type, device)


def predict(model: nn.Module, x, prediction_type: str, device: str = "cpu", chunk: int = 8192) -> np.ndarray:
    """Class probabilities for every row, computed in chunks (x may be a memmap)."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), chunk):
            batch = torch.from_numpy(np.array(x[start : start + chunk], dtype=np.float32)).to(device)
            outputs.append(probabilities(model(batch), prediction_type).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, model.layers[-1].out_features), np.float32)


#: Scores validation predictions: returns (score, extra info such as the decoding chosen).
Validator = Callable[[np.ndarray], tuple[float, dict]]


def train_predictor(
    x_train,
    y_train: np.ndarray,
    x_valid,
    validate: Validator,
    params: HyperParameters,
    *,
    prediction_type: str,
    higher_is_better: bool = True,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> TrainedPredictor:
    """Train one configuration with early stopping; the best validation check's weights are kept.

    ``progress`` shows an epoch bar with the best validation score so far: one configuration
    of a frame-level event task can train for many minutes on a CPU.
    """
    from tqdm import tqdm

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = _Rows(x_train, device)
    targets = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    model = MLP(x_train.shape[1], targets.shape[1], params).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    sign = 1.0 if higher_is_better else -1.0
    best_score, best_state, best_epoch, best_extra = -np.inf, None, 0, {}
    checks_without_improvement = 0
    epoch = 0
    with tqdm(total=params.max_epochs, desc="train", unit="epoch", leave=False, disable=not progress) as bar:
        for epoch in range(1, params.max_epochs + 1):
            bar.update()
            model.train()
            order = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(targets), params.batch_size):
                index = order[start : start + params.batch_size]
                if len(index) < 2 and params.hidden_layers:  # BatchNorm needs two samples
                    continue
                optimizer.zero_grad(set_to_none=True)
                _loss(model(inputs[index]), targets[index.to(device)], prediction_type).backward()
                optimizer.step()
            if epoch % params.check_every:
                continue
            score, extra = validate(predict(model, x_valid, prediction_type, device))
            score = 0.0 if np.isnan(score) else score
            if sign * score > best_score:
                best_score, best_epoch, best_extra = sign * score, epoch, extra
                best_state = copy.deepcopy(model.state_dict())
                bar.set_postfix(best=f"{score:.4g}", at=epoch)
                checks_without_improvement = 0
            else:
                checks_without_improvement += 1
                if checks_without_improvement >= params.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainedPredictor(model, params, sign * best_score, best_epoch, epoch, best_extra)


class _Rows:
    """Training inputs: copied to the device when they fit in memory, else read per batch from the memmap."""

    def __init__(self, rows, device: str):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        self.in_memory = rows.nbytes < available // 2
        self.device = device
        self.rows = torch.from_numpy(np.array(rows, dtype=np.float32)).to(device) if self.in_memory else rows

    def __getitem__(self, index: Tensor) -> Tensor:
        if self.in_memory:
            return self.rows[index.to(self.device)]
        order = index.sort()  # sequential reads from the memory-mapped file
        batch = torch.from_numpy(np.asarray(self.rows[order.values.numpy()], dtype=np.float32))
        return batch[order.indices.argsort()].to(self.device)


def decode_events(
    frame_probabilities: np.ndarray,
    timestamps: np.ndarray,
    labels: list[str],
    *,
    threshold: float = 0.5,
    median_filter_ms: float = 0.0,
    min_duration: float = 0.0,
) -> list[dict]:
    """Frame probabilities of one file ``(T, n_labels)`` -> events ``{label, start, end}`` in ms.

    As the HEAR kit: optional median filter over ``round(median_filter_ms / hop)`` frames,
    frames above the threshold, runs of consecutive positive frames become events from the
    first to the last frame's timestamp, and events shorter than ``min_duration`` are dropped.
    """
    order = np.argsort(timestamps, kind="stable")
    timestamps, frame_probabilities = np.asarray(timestamps)[order], np.asarray(frame_probabilities)[order]
    if median_filter_ms and len(timestamps) > 1:
        width = int(round(median_filter_ms / float(np.mean(np.diff(timestamps)))))
        if width:
            frame_probabilities = median_filter(frame_probabilities, size=(width, 1))
    active = frame_probabilities > threshold
    events = []
    for label_index, label in enumerate(labels):
        frames = np.flatnonzero(active[:, label_index])
        if not len(frames):
            continue
        breaks = np.flatnonzero(np.diff(frames) > 1)
        for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, len(frames) - 1]):
            start, end = float(timestamps[frames[first]]), float(timestamps[frames[last]])
            if end - start >= min_duration:
                events.append({"label": label, "start": start, "end": end})
    events.sort(key=lambda event: event["start"])
    return events


def frame_targets(events: list[dict], timestamps: np.ndarray, label_to_index: dict[str, int]) -> np.ndarray:
    """Multi-hot frame labels: a label is on at every timestamp within [start, end] of one of its events."""
    targets = np.zeros((len(timestamps), len(label_to_index)), dtype=np.float32)
    for event in events:
        inside = (timestamps >= float(event["start"])) & (timestamps <= float(event["end"]) + 1e-4)
        targets[inside, label_to_index[str(event["label"])]] = 1.0
    return targets
