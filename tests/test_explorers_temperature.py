"""The temperature explorer shows a teacher's soft targets softmax(z / T), computed here independently; driven by
setting its widgets. The models are only evaluated, never changed."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import prunelab as pl
from conftest import same, snapshot
from prunelab.distillation import student_mlp
from prunelab.explorers import TemperatureExplorer


@pytest.fixture(scope="module")
def teacher():
    return pl.load_pretrained("lenet300")


@pytest.fixture(scope="module")
def data(test_set):
    return pl.ImageSet(test_set.images[:50], test_set.labels[:50], name="test")


def logits(model, data, i):
    """z [K] of image i, float64, without the explorer."""
    with torch.no_grad():
        return model.eval()(data.normalize(data.images[i:i + 1]))[0].double()


def softmax_T(z, T):
    e = torch.exp((z - z.max()) / T)
    return e / e.sum()


def heights(bars):
    return torch.tensor([b.get_height() for b in bars], dtype=torch.float64)


def test_the_bars_are_softmax_z_over_T_and_the_entropy_is_in_bits(teacher, data):
    explorer = TemperatureExplorer(teacher, data, image=4)
    z = logits(teacher, data, 4)
    for T in [1.0, 2.0, 4.0, 8.0, 20.0, 50.0]:
        explorer.slider.value = T
        assert explorer.error is None and explorer.T == T
        p = softmax_T(z, T)
        assert torch.allclose(heights(explorer.bars), p, atol=1e-6)
        H = -(p * torch.log2(p)).sum().item()
        assert explorer.entropy == pytest.approx(H, abs=1e-5)
        assert f"{H:.3f} bits" in explorer.readout.value and f"{H:.2f} bits" in explorer.headline.value
        order = p.argsort(descending=True)
        assert explorer.top == (int(order[0]), pytest.approx(p[order[0]].item(), abs=1e-6))
        assert explorer.second == (int(order[1]), pytest.approx(p[order[1]].item(), abs=1e-6))
        assert f"T = {T:g}" in explorer.T_text.get_text()


def test_T_1_is_the_ordinary_softmax_and_a_large_T_tends_to_uniform(teacher, data):
    explorer = TemperatureExplorer(teacher, data, image=4)
    z = logits(teacher, data, 4)
    assert explorer.T == 1.0
    assert torch.allclose(heights(explorer.bars), torch.softmax(z, 0), atol=1e-6)
    entropies, order = [], z.argsort(descending=True)
    for T in explorer.slider.options:
        explorer.slider.value = T[1]
        entropies.append(explorer.entropy)
        assert torch.equal(explorer.p_t.argsort(descending=True)[:2], order[:2])   # the top two never swap
    assert all(a < b for a, b in zip(entropies, entropies[1:]))             # flatter at every step of T
    assert entropies[0] < 1 and math.log2(10) - 0.02 < entropies[-1] < math.log2(10)
    assert explorer.slider.options[-1][1] >= 20


def test_the_picker_shows_another_image_and_marks_its_true_class(teacher, data):
    explorer = TemperatureExplorer(teacher, data)
    explorer.slider.value = 4.0
    explorer.picker.value = 7
    assert explorer.error is None and explorer.index == 7 and explorer.T == 4.0
    assert torch.allclose(heights(explorer.bars), softmax_T(logits(teacher, data, 7), 4.0), atol=1e-6)
    truth = pl.CLASSES[int(data.labels[7])]
    assert f"true class: {truth}" in explorer.ax_image.get_title()
    green = [t.get_text() for t in explorer.ax_bars.get_xticklabels() if t.get_color() == "tab:green"]
    assert green == [truth]
    assert explorer.image.value[:4] == b"\x89PNG"


def test_reset_brings_T_1_and_the_first_image_back(teacher, data):
    explorer = TemperatureExplorer(teacher, data, image=3)
    first = explorer.image.value
    explorer.slider.value, explorer.picker.value = 12.0, 9
    assert explorer.image.value != first
    explorer.reset()
    assert (explorer.T, explorer.index, explorer.slider.value, explorer.picker.value) == (1.0, 3, 1.0, 3)
    assert torch.allclose(heights(explorer.bars), torch.softmax(logits(teacher, data, 3), 0), atol=1e-6)
    assert explorer.image.value == first


def test_a_student_is_drawn_next_to_the_teacher_with_its_distillation_term(teacher, data):
    student = student_mlp(30, seed=0)
    before_t, before_s = snapshot(teacher), snapshot(student)
    explorer = TemperatureExplorer(teacher, data, image=4, student=student)
    explorer.slider.value = 4.0
    p_t, p_s = softmax_T(logits(teacher, data, 4), 4.0), softmax_T(logits(student, data, 4), 4.0)
    assert torch.allclose(heights(explorer.student_bars), p_s, atol=1e-6)
    kl = (p_t * (p_t.log() - p_s.log())).sum().item()
    assert explorer.kl_term == pytest.approx(4.0 ** 2 * kl, rel=1e-4)
    assert f"{explorer.kl_term:.4f} nats" in explorer.readout.value
    assert TemperatureExplorer(teacher, data).student_bars is None and "KL" not in \
        TemperatureExplorer(teacher, data).readout.value
    assert same(snapshot(teacher), before_t) and same(snapshot(student), before_s)


def test_the_models_are_only_evaluated_never_changed(teacher, data):
    model = pl.masks.copy_model(teacher).train()         # in training mode: the explorer puts it back
    before = snapshot(model)
    explorer = TemperatureExplorer(model, data)
    for T in (2.0, 50.0):
        explorer.slider.value = T
    explorer.picker.value = 20
    explorer.reset()
    assert explorer.error is None and model.training and all(m.training for m in model.modules())
    assert same(snapshot(model), before, ordered=True)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("image", [50, -1, 2.0, True])
def test_an_image_index_out_of_range_says_which_are_valid(teacher, data, image):
    with pytest.raises(ValueError, match=r"an integer from 0 to 49 \(50 test images\)"):
        TemperatureExplorer(teacher, data, image=image)


def test_a_model_whose_output_is_not_logits_per_class_is_refused(teacher, data):
    before = snapshot(teacher)
    with pytest.raises(ValueError, match=r"teacher's output .* \[1, 1, 28, 28\]; .*\[N, classes\] = \[1, 10\]"):
        TemperatureExplorer(nn.Identity(), data)                                 # images, not logits
    with pytest.raises(ValueError, match="gives 784 scores per image but data has 10 classes"):
        TemperatureExplorer(nn.Flatten(), data)                                  # pixels, not logits
    five = nn.Sequential(nn.Flatten(), nn.Linear(784, 5))
    with pytest.raises(ValueError, match="gives 5 scores per image but data has 10 classes"):
        TemperatureExplorer(five, data)
    with pytest.raises(ValueError, match="student gives 5 scores per image"):
        TemperatureExplorer(teacher, data, student=five)
    with pytest.raises(ValueError, match=r"could not run on one image .*\[1, 1, 28, 28\]"):
        TemperatureExplorer(nn.Linear(10, 10), data)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        TemperatureExplorer(lambda x: x, data)
    assert same(snapshot(teacher), before, ordered=True)


class Breakable(nn.Module):
    """The teacher, failing on demand."""

    def __init__(self, model):
        super().__init__()
        self.model, self.broken = model, False

    def forward(self, x):
        if self.broken:
            raise RuntimeError("broken on purpose")
        return self.model(x)


def test_a_failure_while_moving_is_shown_and_the_last_image_stays(teacher, data):
    model = Breakable(teacher)
    explorer = TemperatureExplorer(model, data, image=4)
    explorer.slider.value = 4.0
    shown, bars = explorer.image.value, heights(explorer.bars)
    model.broken = True
    explorer.picker.value = 8
    assert isinstance(explorer.error, ValueError) and "broken on purpose" in str(explorer.error)
    assert "could not run" in explorer.error_box.value and explorer.error_box.layout.display != "none"
    assert explorer.index == 4 and torch.equal(heights(explorer.bars), bars) and explorer.image.value == shown
    model.broken = False
    explorer.slider.value = 8.0                         # the next event clears the message
    assert explorer.error is None and explorer.error_box.layout.display == "none" and explorer.index == 4


def test_an_image_set_from_tensors_is_taken_as_is(teacher):
    x = torch.randn(5, 1, 28, 28)                        # already normalised floats
    y = torch.tensor([0, 1, 2, 3, 9])
    explorer = TemperatureExplorer(teacher, (x, y), image=2)
    with torch.no_grad():
        z = teacher.eval()(x[2:3])[0].double()
    assert torch.allclose(heights(explorer.bars), torch.softmax(z, 0), atol=1e-6)
    assert np.isfinite(explorer.entropy)
