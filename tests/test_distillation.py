"""Knowledge distillation against known answers: hand-computed KL and cross-entropy, the T·(p_s − p_t) gradient,
a teacher that is never changed, bad inputs that leave both models as they were, deterministic training."""

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from conftest import same, snapshot
from torch import nn

import prunelab as pl
from prunelab import distillation as D


@pytest.fixture(scope="module")
def small_train(train_set):
    return train_set.subset(512, seed=1)


def tiny_teacher(num_classes=10, seed=3):
    """An MLP with BatchNorm, in training mode: run in training mode, its running statistics would change."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(784, 32), bn1=nn.BatchNorm1d(32),
                                            relu1=nn.ReLU(), fc2=nn.Linear(32, num_classes)))
    with torch.no_grad():
        teacher.bn1.running_mean.uniform_(-0.5, 0.5)
    return teacher.train()


# ------------------------------------------------------------------------------------------------ the formulas

def test_soft_targets_by_hand():
    z = torch.tensor([[0.0, math.log(2.0)], [0.0, 2 * math.log(3.0)]])
    assert torch.allclose(D.soft_targets(z, 1), torch.tensor([[1 / 3, 2 / 3], [0.1, 0.9]]))
    assert torch.allclose(D.soft_targets(z, 2)[1], torch.tensor([0.25, 0.75]))      # exp(ln 3) = 3: 1/4, 3/4
    flat = D.soft_targets(torch.randn(4, 10), 1e4)
    assert torch.allclose(flat, torch.full((4, 10), 0.1), atol=1e-4)                  # T -> inf: uniform
    assert torch.allclose(D.soft_targets(z, 1).sum(1), torch.ones(2))


def test_identical_logits_and_alpha_one_give_zero():
    z = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    for T in (1, 4, 20):
        assert D.distillation_loss(z, z.clone(), y, T=T, alpha=1.0).item() == 0.0


def test_alpha_zero_is_cross_entropy_exactly():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g) * 5
    y = torch.randint(0, 10, (16,), generator=g)
    assert torch.equal(D.distillation_loss(z_s, z_t, y, T=4, alpha=0.0), F.cross_entropy(z_s, y))


def test_loss_by_hand():
    # T = 2: z_t / T = [0, ln 3] -> p_t = [1/4, 3/4]; z_s = 0 -> p_s = [1/2, 1/2]
    z_t, z_s, y = torch.tensor([[0.0, 2 * math.log(3.0)]]), torch.zeros(1, 2), torch.tensor([0])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    ce = math.log(2.0)                                                  # -log softmax(0, 0)[0]
    assert D.distillation_loss(z_s, z_t, y, T=2, alpha=1.0).item() == pytest.approx(4 * kl, rel=1e-6)
    assert D.distillation_loss(z_s, z_t, y, T=2, alpha=0.3).item() == pytest.approx(0.3 * 4 * kl + 0.7 * ce,
                                                                                    rel=1e-6)


def test_gradient_is_T_times_p_s_minus_p_t():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 10, generator=g, requires_grad=True), torch.randn(4, 10, generator=g)
    T = 3.0
    D.distillation_loss(z_s, z_t, torch.zeros(4, dtype=torch.long), T=T, alpha=1.0).backward()
    expected = T * (F.softmax(z_s / T, 1) - F.softmax(z_t / T, 1)) / 4             # T² · (p_s − p_t) / (T · B)
    assert torch.allclose(z_s.grad, expected, atol=1e-7)


def test_T_squared_keeps_the_gradient_size_at_high_temperature():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    z_s, z_t = z_s - z_s.mean(1, keepdim=True), z_t - z_t.mean(1, keepdim=True)      # centred logits
    limit = (z_s - z_t) / (10 * 4)                                                   # (z_s − z_t) / (K · B)
    for T in (100.0, 400.0):
        z = z_s.clone().requires_grad_()
        D.distillation_loss(z, z_t, torch.zeros(4, dtype=torch.long), T=T, alpha=1.0).backward()
        assert torch.allclose(z.grad, limit, rtol=0.05, atol=2e-4)                 # independent of T


def test_teacher_logits_get_no_gradient():
    z_s, z_t = torch.randn(3, 10, requires_grad=True), torch.randn(3, 10, requires_grad=True)
    D.distillation_loss(z_s, z_t, torch.zeros(3, dtype=torch.long), T=2, alpha=0.5).backward()
    assert z_s.grad is not None and z_t.grad is None


@pytest.mark.parametrize("T", [0, -1.0, math.nan, math.inf, True, "4", None])
def test_bad_temperature(T):
    with pytest.raises(ValueError, match="temperature"):
        D.distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), T=T, alpha=0.5)
    with pytest.raises(ValueError, match="temperature"):
        D.soft_targets(torch.zeros(1, 2), T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, "0.5", None])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        D.distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), T=2, alpha=alpha)


def test_shape_mismatch_in_the_loss():
    with pytest.raises(ValueError, match=r"teacher's logits have shape \[4, 5\] but the student's have \[4, 10\]"):
        D.distillation_loss(torch.zeros(4, 10), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long), T=2, alpha=0)


# ------------------------------------------------------------------------------------------------ training

def test_teacher_is_untouched_and_keeps_its_mode(small_train):
    teacher, student = tiny_teacher(), D.student_mlp(16)
    before = snapshot(teacher)
    logs = pl.train(student, small_train, epochs=1, loss_fn=D.distill_loss_fn(teacher, T=4, alpha=0.9),
                    device="cpu", progress=False)
    assert math.isfinite(logs[0].train_loss)
    assert same(before, snapshot(teacher))          # incl. BatchNorm running statistics: it ran in eval mode
    assert teacher.training and all(p.grad is None for p in teacher.parameters())
    teacher.eval()
    D.distill(student, teacher, small_train, T=4, alpha=0.9, device="cpu", progress=False)
    assert not teacher.training and same(before, snapshot(teacher))


def test_loss_fn_uses_the_teacher_in_eval_mode():
    teacher, x = tiny_teacher(), torch.randn(5, 1, 28, 28)
    y = torch.arange(5)
    z_s = torch.randn(5, 10)
    loss = D.distill_loss_fn(teacher, T=2, alpha=1.0)(z_s, y, x)
    with torch.no_grad():
        z_t = teacher.eval()(x)
    assert torch.equal(loss, D.distillation_loss(z_s, z_t, y, T=2, alpha=1.0))


def test_loss_fn_checks_the_shape_on_every_batch():
    loss_fn = D.distill_loss_fn(tiny_teacher(num_classes=5), T=2, alpha=0.5)
    with pytest.raises(ValueError, match="same K classes"):
        loss_fn(torch.zeros(3, 10), torch.zeros(3, dtype=torch.long), torch.zeros(3, 1, 28, 28))


def test_distill_is_deterministic_and_differs_from_plain_training(small_train):
    teacher = pl.load_pretrained("lenet300")
    runs = []
    for _ in range(2):
        student = D.student_mlp(20, seed=0)
        D.distill(student, teacher, small_train, T=4, alpha=0.9, epochs=1, seed=7, device="cpu", progress=False)
        runs.append(snapshot(student))
    assert same(runs[0], runs[1])
    plain = D.student_mlp(20, seed=0)
    pl.train(plain, small_train, epochs=1, seed=7, device="cpu", progress=False)
    assert not same(runs[0], snapshot(plain))


def test_distill_with_alpha_zero_is_plain_training(small_train):
    a, b = D.student_mlp(20, seed=0), D.student_mlp(20, seed=0)
    D.distill(a, tiny_teacher(), small_train, T=4, alpha=0.0, seed=2, device="cpu", progress=False)
    pl.train(b, small_train, seed=2, device="cpu", progress=False)
    assert same(snapshot(a), snapshot(b))


def _shared_student(teacher):
    return nn.Sequential(teacher, nn.Linear(10, 10))


@pytest.mark.parametrize("case, match", [
    ({"T": 0}, "temperature"),
    ({"T": math.inf}, "temperature"),
    ({"alpha": 1.01}, "alpha"),
    ({"teacher": "student"}, "same model"),
    ({"teacher": "five_classes"}, r"shape \[2, 5\] but the student's have \[2, 10\]"),
    ({"student": "shares"}, "share 6 parameter"),
    ({"loss_fn": F.cross_entropy}, "builds its own loss_fn"),
])
def test_distill_bad_input_leaves_both_models_untouched(small_train, case, match):
    teacher = tiny_teacher(num_classes=5) if case.get("teacher") == "five_classes" else tiny_teacher()
    student = _shared_student(teacher) if case.get("student") == "shares" else D.student_mlp(16)
    if case.get("teacher") == "student":
        teacher = student
    kwargs = {"T": 4, "alpha": 0.5, **{k: v for k, v in case.items() if k not in ("teacher", "student")}}
    s_before, t_before = snapshot(student), snapshot(teacher)
    with pytest.raises(ValueError, match=match):
        D.distill(student, teacher, small_train, device="cpu", progress=False, **kwargs)
    assert same(s_before, snapshot(student)) and same(t_before, snapshot(teacher))
    assert teacher.training


def test_student_mlp():
    a, b = D.student_mlp(30, seed=4), D.student_mlp(30, seed=4)
    assert pl.count_parameters(a) == 784 * 30 + 30 + 30 * 10 + 10 == 23_860
    assert same(snapshot(a), snapshot(b)) and not same(snapshot(a), snapshot(D.student_mlp(30, seed=5)))
    assert a(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        D.student_mlp(0)
