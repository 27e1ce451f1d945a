"""Iterative magnitude pruning with rewinding (prunelab.resets): the rates per round, masks that only shrink, round 0
as plain training from θ0, and the precomputed record behind notebook 08, whose cheap check case re-runs."""

import math

import pytest
import torch

import prunelab as pl
from prunelab import resets as R


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py: as the records were made


@pytest.fixture(scope="module")
def doc():
    return R.load_tickets()


@pytest.fixture(scope="module")
def tiny():
    return (pl.load_fashion_mnist("train").subset(512, seed=0), pl.load_fashion_mnist("validation").subset(300, seed=0),
            pl.load_fashion_mnist("test").subset(300, seed=0))


KWARGS = dict(epochs=1, lr=0.05, weight_decay=5e-4, lr_schedule="cosine")


def test_rates_per_round_are_the_papers():
    s = R.imp_sparsities(["fc1", "fc2", "fc3"], 2, 0.2)                 # 20% of the remaining, twice; output 10%
    assert s == pytest.approx({"fc1": 0.36, "fc2": 0.36, "fc3": 0.19})
    assert R.imp_sparsities(["fc1", "fc2", "fc3"], 0, 0.2) == {"fc1": 0, "fc2": 0, "fc3": 0}


def test_imp_prunes_the_remaining_weights_and_masks_only_shrink(tiny):
    one, two = pl.build_model("lenet300", seed=0), pl.build_model("lenet300", seed=0)
    fresh = pl.build_model("lenet300", seed=1)
    h1 = R.iterative_magnitude_pruning(one, fresh, *tiny, rounds=1, **KWARGS)
    h2 = R.iterative_magnitude_pruning(two, fresh, *tiny, rounds=2, **KWARGS)
    assert [r.round for r in h2] == [0, 1, 2] and h1 == h2[:2]          # deterministic: round 1 is the same run
    m1, m2 = pl.masks.get_masks(one), pl.masks.get_masks(two)
    for name, s in R.imp_sparsities(["fc1", "fc2", "fc3"], 2, 0.2).items():
        M = m2[f"{name}.weight"]
        assert abs((1 - M.float().mean().item()) - s) <= 1 / M.numel()
        assert not (M & ~m1[f"{name}.weight"]).any()                   # M_2 ⊆ M_1
    assert h2[0].sparsity == 0 and h2[2].sparsity == pytest.approx(pl.masks.mask_sparsity(
        {k: v for k, v in m2.items() if k.endswith(".weight")}))


def test_round_0_is_plain_training_from_theta_0_and_the_control_from_fresh(tiny):
    train_set, validation_set, test_set = tiny
    history = R.iterative_magnitude_pruning(pl.build_model("lenet300", seed=0), pl.build_model("lenet300", seed=1),
                                            *tiny, rounds=0, seed=3, **KWARGS)
    for seed, accuracy in ((0, history[0].ticket_test), (1, history[0].control_test)):
        dense = pl.build_model("lenet300", seed=seed)
        pl.train(dense, train_set, seed=3, progress=False, **KWARGS)
        assert pl.evaluate(dense, test_set).accuracy == accuracy


def test_the_one_shot_ticket_is_theta_0_on_the_one_shot_mask():
    theta_0 = R.snapshot_weights(pl.build_model("lenet300", seed=0))
    trained = pl.build_model("lenet300", seed=5)                        # any weights will do
    ticket = R.one_shot_ticket(trained, theta_0, {"fc1": 0.5, "fc2": 0.5, "fc3": 0.25})
    W = trained.fc1.weight.detach()
    M = W.abs() > W.abs().flatten().kthvalue(W.numel() // 2).values
    assert torch.equal(ticket.fc1.weight, theta_0["fc1.weight"] * M) and pl.masks.get_masks(trained) == {}


def test_the_record_says_how_it_was_made(doc):
    recipe = R.recipe_of(doc["recipe"])
    assert doc["command"].startswith("python benches/bench_lottery_ticket.py --write ")
    assert doc["torch"] and doc["threads"] >= 1 and doc["seconds"] > 0
    assert recipe == R.TICKET_RECIPE and doc["recipe"]["output_layer_rate"] == recipe.rate / 2
    assert [run["seed"] for run in doc["runs"]] == list(recipe.seeds)
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    for run in doc["runs"]:
        assert run["control_init_seed"] == run["seed"] + 1 and len(run["rounds"]) == recipe.rounds + 1
        for k, r in enumerate(run["rounds"]):
            layers = R.imp_sparsities(list(sizes), k, recipe.rate)
            assert r["round"] == k and r["layer_sparsity"] == pytest.approx(layers)
            pruned = sum(round(layers[n] * sizes[n]) for n in sizes)
            assert r["sparsity"] == pytest.approx(pruned / sum(sizes.values()), abs=3 / 266_200)
        first = run["rounds"][0]                 # round 0: nothing pruned, the one-shot ticket is the dense network
        assert (first["one_shot_validation"], first["one_shot_test"]) == (first["ticket_validation"],
                                                                           first["ticket_test"])


def test_the_check_case_matches_a_fresh_rerun(doc):
    torch.set_num_threads(doc["threads"])
    fresh = R.run_tickets(R.recipe_of(doc["check"]["recipe"]))
    # bit-identical on the recording's torch version, thread count and CPU; elsewhere allow 1.5 points (1 epoch on
    # 2,048 images ends far from convergence, where another summation order moves accuracy most)
    assert R.compare_tickets(doc["check"]["runs"], fresh) <= 0.015


def test_a_missing_record_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench_lottery_ticket.py --write"):
        R.load_tickets(tmp_path / "none.json")
    assert R.compare_tickets([{"rounds": [{"sparsity": 0.5}]}], [{"rounds": [{"sparsity": 0.4}]}]) == math.inf
