import json
import shutil

import pytest
import torch

import prunelab as pl
from prunelab.checkpoints import CheckpointError, checkpoint_dir
from prunelab.data import sha256_of

BASELINES = ["lenet300", "lenet5", "vgg_small", "vit_tiny"]
TARGET = {"lenet300": 0.89, "lenet5": 0.90, "vgg_small": 0.90, "vit_tiny": 0.85}  # the issues' accuracy targets


def test_every_baseline_has_a_checkpoint():
    assert pl.available_checkpoints() == sorted(BASELINES)


@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_reaches_its_recorded_accuracy(name, test_set):
    info = pl.checkpoint_info(name)
    model = pl.load_pretrained(name)
    result = pl.evaluate(model, test_set)
    # The same machine reproduces the count exactly; another BLAS may flip a few borderline images.
    assert abs(result.correct - info["test_correct"]) <= 5, (result.correct, info["test_correct"])
    assert info["test_accuracy"] >= TARGET[name]
    assert info["sha256"] == sha256_of(checkpoint_dir() / info["file"])
    assert info["parameters"] == pl.count_parameters(model)
    assert info["recipe"]["seed"] == 0 and info["command"] == f"python -m prunelab.baselines {name}"


def test_checkpoint_is_a_plain_state_dict_for_torch_users():
    state = torch.load(checkpoint_dir() / "lenet300.pt", weights_only=True)
    model = pl.build_model("lenet300")
    model.load_state_dict(state)  # torch's own API, no prunelab needed
    assert set(state) == set(model.state_dict())


def test_wrong_architecture_is_refused_and_the_model_is_untouched():
    model = pl.build_model("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit this LeNet5.*fits prunelab's 'lenet300'"):
        pl.load_weights(model, checkpoint_dir() / "lenet300.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_partly_matching_checkpoint_changes_nothing(tmp_path):
    """torch's load_state_dict would copy the matching tensors before failing; prunelab checks first."""
    state = torch.load(checkpoint_dir() / "lenet300.pt", weights_only=True)
    state["fc3.weight"] = torch.zeros(5, 100)
    path = tmp_path / "half.pt"
    torch.save(state, path)
    model = pl.build_model("lenet300")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"fc3.weight: checkpoint \(5, 100\) vs model \(10, 100\)"):
        pl.load_weights(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_truncated_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes((checkpoint_dir() / "lenet300.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        pl.load_weights(pl.build_model("lenet300"), path)


def test_pickled_module_is_refused_because_loading_is_weights_only(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(pl.build_model("lenet300"), path)  # a pickled object, not a state_dict
    with pytest.raises(CheckpointError, match="weights_only=True"):
        pl.load_weights(pl.build_model("lenet300"), path)


def test_corrupt_baseline_is_caught_by_its_checksum(tmp_path, monkeypatch):
    shutil.copytree(checkpoint_dir(), tmp_path / "checkpoints")
    pt = tmp_path / "checkpoints" / "lenet5.pt"
    data = bytearray(pt.read_bytes())
    data[-2000] ^= 0x01  # one flipped bit inside a weight
    pt.write_bytes(data)
    monkeypatch.setenv("PRUNELAB_DATA", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"corrupt.*git checkout -- data/checkpoints/lenet5.pt"):
        pl.load_pretrained("lenet5")


def test_unknown_names_are_explained():
    with pytest.raises(ValueError, match="Did you mean 'lenet300'"):
        pl.load_pretrained("lenet-300")
    with pytest.raises(CheckpointError, match="No baseline checkpoint named 'resnet18'.*lenet300"):
        pl.load_pretrained("resnet18")


def test_metadata_files_are_valid_json_with_the_recipe():
    for name in BASELINES:
        info = json.loads((checkpoint_dir() / f"{name}.json").read_text())
        assert {"arch", "file", "sha256", "test_accuracy", "recipe", "torch"} <= set(info)
        assert {"epochs", "lr", "batch_size", "seed"} <= set(info["recipe"])


def test_the_recipes_write_what_the_committed_records_hold():
    """Re-training writes the recipe the committed JSON holds (fields added since then may come on top)."""
    from prunelab.baselines import RECIPES

    for name in BASELINES:
        recorded, fresh = pl.checkpoint_info(name)["recipe"], RECIPES[name].record()
        assert {k: fresh[k] for k in recorded} == recorded, name
    vit = pl.checkpoint_info("vit_tiny")
    assert vit["recipe"]["optimizer"] == "AdamW" and vit["threads"] == vit["recipe"]["threads"] == 1
    assert vit["validation_accuracy"] >= 0.85


def test_a_recipe_builds_the_optimizer_it_names():
    from prunelab.baselines import RECIPES, Recipe

    model = pl.build_model("lenet300")
    sgd = RECIPES["lenet300"].build_optimizer(model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == 0.05
    adamw = RECIPES["vit_tiny"].build_optimizer(model)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05
    with pytest.raises(ValueError, match="'SGD' or 'AdamW'"):
        Recipe("lenet300", epochs=1, lr=0.1, optimizer="Adam").build_optimizer(model)


def test_readme_reports_the_recorded_accuracies():
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    for name in BASELINES:
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        assert row.rstrip(" |").endswith(f"{pl.checkpoint_info(name)['test_accuracy']:.2%}"), row


def test_baseline_check_accepts_other_bits_within_the_tolerance_and_says_which():
    from prunelab.baselines import ACCURACY_TOLERANCE, compare_to_committed
    committed = pl.checkpoint_info("lenet300")
    same_file = dict(committed)
    other_bits = committed | {"sha256": "0" * 64, "threads": 1, "cpu_capability": "AVX2",
                              "test_accuracy": committed["test_accuracy"] - ACCURACY_TOLERANCE / 2}
    worse = other_bits | {"test_accuracy": committed["test_accuracy"] - 2 * ACCURACY_TOLERANCE}
    assert compare_to_committed(same_file, committed).startswith("identical")
    verdict = compare_to_committed(other_bits, committed)
    assert verdict.startswith("reproduced within the tolerance") and "1 threads, AVX2 kernels" in verdict
    assert compare_to_committed(worse, committed).startswith("NOT reproduced")
