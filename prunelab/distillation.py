"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a small student learns from a big teacher's soft targets.

With student logits z_s, teacher logits z_t (both [B, K]), labels y [B], a temperature T > 0 and a weight α ∈ [0, 1]:

    p_t = softmax(z_t / T),   p_s = softmax(z_s / T)                       (soft targets, [B, K])
    L   = α · T² · KL(p_t ‖ p_s) + (1 − α) · CE(z_s, y)

- KL(p_t ‖ p_s) = Σ_k p_t,k (log p_t,k − log p_s,k), averaged over the batch (nats); CE is the ordinary mean
  cross-entropy at T = 1.
- α weighs the teacher's soft targets: α = 0 is plain cross-entropy on the labels, exactly (the teacher term is
  not even computed); α = 1 learns from the teacher alone.
- T > 1 flattens both softmaxes, so the teacher's small probabilities for the wrong classes ("a shirt looks a bit
  like a T-shirt, not at all like a bag") carry weight; T = 1 is the ordinary softmax.
- Why T²: ∂KL/∂z_s = (p_s − p_t) / (T · B), and for large T, p_s − p_t ≈ (z_s − z_t) / (K T) (logits centred), so
  the soft term's gradient shrinks like 1/T². Multiplying by T² keeps it about the same size at every T, so α
  keeps its meaning when T changes (Hinton et al., section 2).

``distill_loss_fn(teacher, T=, alpha=)`` is a ``loss_fn(logits, y, x)`` for ``prunelab.train``: it runs the
teacher on each batch x in eval mode under ``torch.no_grad`` (its mode is put back afterwards; it gets no
gradients and is never changed). ``distill`` wraps ``train`` and checks everything before the first step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import masks as M
from ._helpers import in_mode
from .data import Data, ImageSet, as_image_set
from .training import EpochLog, LossFn, model_device, train

__all__ = ["check_temperature", "check_alpha", "soft_targets", "distillation_loss", "distill_loss_fn", "distill",
           "student_mlp"]


# ---------------------------------------------------------------------------------------------- the formulas

def check_temperature(T: float) -> None:
    """``ValueError`` unless T is a finite number > 0."""
    if isinstance(T, bool) or not isinstance(T, Real) or not (math.isfinite(T) and T > 0):
        raise ValueError(f"T (the temperature) must be a finite number > 0, got {T!r}. T = 1 is the ordinary "
                         "softmax; Hinton et al. use T from 2 to 20.")


def check_alpha(alpha: float) -> None:
    """``ValueError`` unless α is a number in [0, 1]."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the teacher's soft targets; "
                         f"0 = labels only, 1 = teacher only), got {alpha!r}.")


def soft_targets(logits: Tensor, T: float) -> Tensor:
    """p = softmax(z / T) over the last dimension (the classes): [..., K] -> [..., K], each row sums to 1."""
    check_temperature(T)
    return F.softmax(logits / T, dim=-1)


def _check_same_shape(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"The teacher's logits have shape {list(teacher_logits.shape)} but the student's have "
                         f"{list(student_logits.shape)}; distillation compares them class by class, so both models "
                         "must output [B, K] for the same K classes. Use a teacher trained on the same classes.")


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, y: Tensor, *, T: float,
                      alpha: float) -> Tensor:
    """L = α · T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) · CE(z_s, y), a scalar (nats).

    ``student_logits`` z_s and ``teacher_logits`` z_t: [B, K]; ``y``: int64 [B]. Gradients flow into z_s only
    (z_t is detached). α = 0 returns ``F.cross_entropy(z_s, y)`` exactly; α = 1 ignores ``y``.
    """
    check_temperature(T)
    check_alpha(alpha)
    _check_same_shape(student_logits, teacher_logits)
    if alpha == 0:
        return F.cross_entropy(student_logits, y)
    log_p_s = F.log_softmax(student_logits / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach() / T, dim=-1)
    soft = T ** 2 * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    if alpha == 1:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, y)


# ---------------------------------------------------------------------------------------------- training

def _eval_forward(model: nn.Module, x: Tensor) -> Tensor:
    """model(x) in eval mode under no_grad (no BatchNorm update, no graph); the model's mode is put back."""
    with in_mode(model, training=False), torch.no_grad():
        return model(x)


def distill_loss_fn(teacher: nn.Module, *, T: float, alpha: float) -> LossFn:
    """A ``loss_fn(logits, y, x)`` for ``prunelab.train``: ``distillation_loss(logits, teacher(x), y, T=, alpha=)``.

    The teacher runs on every batch in eval mode under ``torch.no_grad`` and must already be on the batch's
    device. ``pl.train`` only optimises the student's parameters, so the teacher is never changed.
    """
    check_temperature(T)
    check_alpha(alpha)
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}.")

    def loss_fn(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
        if alpha == 0:
            return F.cross_entropy(logits, y)
        teacher_device = model_device(teacher)
        if teacher_device != x.device:
            raise ValueError(f"The teacher is on {teacher_device} but the batch is on {x.device}; move it with "
                             f"teacher.to({str(x.device)!r}) or use prunelab.distillation.distill, which does.")
        return distillation_loss(logits, _eval_forward(teacher, x), y, T=T, alpha=alpha)

    return loss_fn


def _check_pair(student: nn.Module, teacher: nn.Module, data: ImageSet) -> None:
    """Distinct models that share no parameter, whose outputs on one sample batch have the same shape."""
    for role, m in (("student", student), ("teacher", teacher)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{role} must be an nn.Module, got {type(m).__name__}.")
    if teacher is student:
        raise ValueError("teacher and student are the same model; distillation needs a separate, trained teacher "
                         "(e.g. prunelab.load_pretrained('lenet300')) and a new student to train.")
    shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    if shared:
        raise ValueError(f"teacher and student share {len(shared)} parameter tensor(s), so training the student "
                         "would change the teacher; give the student its own copy (prunelab.masks.copy_model).")
    if len(data) == 0:
        raise ValueError("train_data holds no images.")
    x, _ = next(data.batches(2))
    z_s = _eval_forward(student, x.to(model_device(student)))
    z_t = _eval_forward(teacher, x.to(model_device(teacher)))
    _check_same_shape(z_s, z_t)


def distill(student: nn.Module, teacher: nn.Module, train_data: Data, *, T: float, alpha: float,
            epochs: int = 1, lr: float = 0.05, seed: int = 0, batch_size: int = 128,
            device: torch.device | str | None = None, **train_kwargs) -> list[EpochLog]:
    """Train ``student`` in place on ``distillation_loss`` against ``teacher``; returns ``train``'s logs.

    Everything is checked before the first step (T, α, distinct models, the same output shape on a sample
    batch); on a bad input both models are left as they were. The teacher is never changed: if it is on another
    device than the training one, a copy of it is used there. Other keyword arguments (``lr_schedule``,
    ``momentum``, ``weight_decay``, ``test_data``, ``progress``, ...) go to ``prunelab.train``.
    """
    check_temperature(T)
    check_alpha(alpha)
    if "loss_fn" in train_kwargs:
        raise ValueError("distill builds its own loss_fn; to train on another loss call prunelab.train directly.")
    train_data = as_image_set(train_data, "distill", "prunelab.load_fashion_mnist('train')")
    _check_pair(student, teacher, train_data)
    device = torch.device(device) if device is not None else model_device(student)
    if model_device(teacher) != device:
        teacher = M.copy_model(teacher).to(device)
    return train(student, train_data, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size, device=device,
                 loss_fn=distill_loss_fn(teacher, T=T, alpha=alpha), **train_kwargs)


# ---------------------------------------------------------------------------------------------- a student

def student_mlp(hidden: int = 30, *, num_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """A small student: 784 -> ``hidden`` -> ``num_classes``, ReLU; layers ``flatten``, ``fc1``, ``relu1``, ``fc2``.

    784-30-10 has 23,860 parameters, 11x fewer than LeNet-300-100 (266,610). Seeded like
    ``prunelab.build_model``: the same ``hidden`` and ``seed`` give bit-identical weights, torch's global
    random state is left as it was.
    """
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be a positive integer (the number of hidden units), got {hidden!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict(
            flatten=nn.Flatten(),                                  # [B, 1, 28, 28] -> [B, 784]
            fc1=nn.Linear(784, hidden), relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, num_classes),
        ))
