import numpy as np
import pytest
import torch
import torch.nn.functional as F

import prunelab as pl
from conftest import same, snapshot

EMPTY = pl.ImageSet(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))


@pytest.fixture(scope="module")
def small_train(train_set):
    return train_set.subset(3000, seed=0)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_is_deterministic_given_the_seed(small_train):
    runs = []
    for seed in (0, 0, 1):
        model = pl.build_model("lenet300")
        pl.train(model, small_train, epochs=1, seed=seed, device="cpu", progress=False)
        runs.append(weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["fc1.weight"], runs[2]["fc1.weight"])


def test_training_learns(small_train, test_set):
    model = pl.build_model("lenet300")
    before = pl.evaluate(model, test_set).accuracy
    logs = pl.train(model, small_train, epochs=3, device="cpu", test_data=test_set, progress=False)
    assert before < 0.2 and logs[-1].test_accuracy > 0.75
    assert logs[-1].train_loss < logs[0].train_loss
    assert [log.epoch for log in logs] == [1, 2, 3]


def test_evaluate_matches_a_hand_computation_and_restores_the_mode(test_set):
    data = test_set.subset(2000)
    model = pl.load_pretrained("vgg_small").train()
    stats = model.bn1.running_mean.clone()
    result = pl.evaluate(model, data, batch_size=300)
    assert model.training and torch.equal(model.bn1.running_mean, stats)
    model.eval()
    with torch.no_grad():
        logits = model(data.normalize(data.images))
    assert result.correct == int((logits.argmax(1) == data.labels).sum())
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, data.labels)), rel=1e-4)
    assert result.total == 2000 and result.accuracy == result.correct / 2000


def test_hooks_loss_and_cosine_schedule(small_train):
    model = pl.build_model("lenet300")
    calls, seen = [], []

    def loss_fn(logits, y, x):
        seen.append(x.shape)
        return F.cross_entropy(logits, y) + 1e-4 * model.fc1.weight.abs().sum()

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    pl.train(model, small_train, epochs=2, batch_size=500, optimizer=opt, lr_schedule="cosine",
             loss_fn=loss_fn, after_step=lambda m: calls.append(m), device="cpu", progress=False)
    assert len(calls) == 12 and calls[0] is model
    assert seen[0] == (500, 1, 28, 28)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_progress_bar_is_allowed_in_tests(small_train):
    logs = pl.train(pl.build_model("lenet300"), small_train.subset(256), epochs=1, device="cpu", progress=True)
    assert len(logs) == 1 and logs[0].seconds > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"lr": -0.1}, "lr must be a positive finite number"),
    ({"lr": float("nan")}, "lr must be a positive finite number"),
    ({"lr_schedule": "cosin"}, "lr_schedule must be 'constant' or 'cosine'"),
])
def test_bad_arguments_are_refused_before_the_model_changes(small_train, kwargs, message):
    model = pl.build_model("lenet300")
    before = weights(model)
    with pytest.raises(ValueError, match=message):
        pl.train(model, small_train, progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("data, error, message", [
    (EMPTY, ValueError, r"evaluate got an ImageSet with no images.*load_fashion_mnist\('test'\)"),
    (np.zeros((4, 28, 28), dtype=np.uint8), TypeError,
     r"evaluate needs images with labels: an ImageSet.*load_fashion_mnist\('test'\).*a pair \(x, y\).*Dataset.*"
     r"DataLoader; got a numpy\.ndarray of shape \[4, 28, 28\]"),
    (torch.zeros(4, 1, 28, 28), TypeError, r"needs images with labels.*got a torch\.Tensor of shape \[4, 1, 28, 28\]"),
])
def test_evaluate_refuses_what_is_not_a_labelled_image_set(data, error, message):
    model = pl.build_model("lenet300").train()
    before = snapshot(model)
    with pytest.raises(error, match=message):
        pl.evaluate(model, data)
    assert same(snapshot(model), before, ordered=True) and model.training


@pytest.mark.parametrize("kwargs, error, message", [
    ({"data": EMPTY}, ValueError, "train got an ImageSet with no images"),
    ({"data": np.zeros((4, 28, 28), dtype=np.uint8)}, TypeError,
     r"train needs images with labels.*got a numpy\.ndarray of shape \[4, 28, 28\]"),
    ({"test_data": torch.zeros(4, 28, 28)}, TypeError, r"train's test_data needs images with labels.*torch\.Tensor"),
])
def test_train_refuses_what_is_not_a_labelled_image_set_before_the_model_changes(small_train, kwargs, error,
                                                                                message):
    model = pl.build_model("lenet300")
    before = snapshot(model)
    with pytest.raises(error, match=message):
        pl.train(model, **{"data": small_train, **kwargs}, device="cpu", progress=False)
    assert same(snapshot(model), before, ordered=True)


def test_default_device_is_cuda_only_when_present(monkeypatch):
    monkeypatch.delenv("PRUNELAB_DEVICE", raising=False)
    assert pl.default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_prunelab_device_overrides_the_default(monkeypatch):
    monkeypatch.setenv("PRUNELAB_DEVICE", "cpu")
    assert pl.default_device() == torch.device("cpu")
    monkeypatch.setenv("PRUNELAB_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="PRUNELAB_DEVICE='gpu0' is not a torch device"):
        pl.default_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("PRUNELAB_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA device"):
            pl.default_device()


def test_training_stays_on_the_device_the_model_is_on(small_train, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # even where CUDA would be there
    model = pl.build_model("lenet300")
    pl.train(model, small_train.subset(64), epochs=1, progress=False)
    assert all(p.device.type == "cpu" for p in model.parameters())
