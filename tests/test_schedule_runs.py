"""The precomputed schedule runs: the recorded schedules are the formulas, the runs are the package's own
iterative and gradual pruning, and the cheap check case re-runs to the recorded numbers."""

import math
from dataclasses import replace

import pytest
import torch
from conftest import same, snapshot

import prunelab as pl
from prunelab import schedule_runs as S
from prunelab.schedules import cubic_sparsity, gradual_pruning, iterative_pruning, iterative_sparsities


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py: as the records were made


@pytest.fixture(scope="module")
def doc():
    return S.load_schedule_runs()


@pytest.fixture(scope="module")
def check_data():
    return S._data(S.CHECK_RECIPE)


def expected_prune_steps(schedule, s_final, recipe, spe):
    """The schedule written out from the formulas, independently of schedule_runs."""
    if schedule == "one-shot":
        return [[0, iterative_sparsities(s_final, 1)[0]]]
    if schedule == "iterative":
        per_round = recipe["epochs"] // recipe["rounds"]
        return [[k * per_round * spe, s] for k, s in enumerate(iterative_sparsities(s_final, recipe["rounds"]))]
    dt = recipe["prune_every"]
    n = (3 * recipe["epochs"] // 4) * spe // dt                  # pruning ends at 3/4 of the epochs
    return [[t, cubic_sparsity(t, 0.0, s_final, 0, n, dt)] for t in range(dt, n * dt + 1, dt)]


def test_the_record_says_how_it_was_made(doc):
    assert doc["command"].startswith("python -m prunelab.schedule_runs --write ")
    assert doc["torch"] and doc["threads"] >= 1 and doc["seconds"] > 0
    assert doc["checkpoint_sha256"] == pl.checkpoint_info("lenet300")["sha256"]
    assert doc["baseline_accuracy"] == pl.checkpoint_info("lenet300")["test_accuracy"]
    assert doc["steps_per_epoch"] == math.ceil(55000 / doc["recipe"]["batch_size"])
    assert {(r["schedule"], r["s_final"]) for r in doc["runs"]} == {
        (name, s) for name in S.SCHEDULES for s in doc["final_sparsities"]}


def test_recorded_schedules_are_the_formulas(doc):
    spe, epochs = doc["steps_per_epoch"], doc["recipe"]["epochs"]
    for run in doc["runs"]:
        expected = expected_prune_steps(run["schedule"], run["s_final"], doc["recipe"], spe)
        assert run["prune_steps"] == expected, (run["schedule"], run["s_final"])
        assert run["prune_steps"][-1][1] == pytest.approx(run["s_final"])
        assert run["final_sparsity"] == pytest.approx(run["s_final"], abs=1 / 266200)
        # accuracy: dense at step 0, after every prune event, after every epoch; the same budget for all
        steps = [t for t, _ in run["accuracy"]]
        assert run["accuracy"][0] == [0, doc["baseline_accuracy"]] and steps == sorted(steps)
        assert set(range(spe, epochs * spe + 1, spe)) <= set(steps) and steps[-1] == run["steps"] == epochs * spe
        assert run["final_accuracy"] == run["accuracy"][-1][1]


def test_the_gradual_schedule_is_fast_first_then_slow(doc):
    s = [s for _, s in S.find_run(doc, "gradual", 0.9)["prune_steps"]]
    steps = [b - a for a, b in zip([0.0, *s], s)]
    assert all(x > 0 for x in steps) and steps[0] > 10 * steps[-1]


def test_the_check_case_matches_a_fresh_rerun(doc):
    torch.set_num_threads(doc["threads"])
    fresh = S.run_all([doc["check"]["s_final"]], S.Recipe(**doc["check"]["recipe"]))
    for recorded, run in zip(doc["check"]["runs"], fresh, strict=True):
        assert run["prune_steps"] == recorded["prune_steps"]
        assert run["final_sparsity"] == recorded["final_sparsity"]
        # bit-identical on the recording's torch version and thread count (and, in practice, CPU); allow
        # 5 of 1,000 test images elsewhere
        assert [t for t, _ in run["accuracy"]] == [t for t, _ in recorded["accuracy"]]
        assert [a for _, a in run["accuracy"]] == pytest.approx([a for _, a in recorded["accuracy"]], abs=0.005)


def test_an_iterative_run_is_iterative_pruning(check_data):
    """(one-shot is the same code with one round)"""
    train_set, test_set = check_data
    rounds = S.CHECK_RECIPE.rounds
    ours, theirs = pl.load_pretrained("lenet300"), pl.load_pretrained("lenet300")
    run = S.run_schedule("iterative", 0.8, ours, train_set, test_set, S.CHECK_RECIPE)
    history = iterative_pruning(theirs, train_set, test_set, iterative_sparsities(0.8, rounds),
                                epochs_per_round=S.CHECK_RECIPE.epochs // rounds, lr=S.CHECK_RECIPE.lr,
                                scope="global")
    assert same(snapshot(ours), snapshot(theirs), ordered=True)
    assert run["final_accuracy"] == history[-1].accuracy_tuned
    assert run["accuracy"][1] == [0, history[0].accuracy_pruned]          # right after the first prune


def test_a_constant_rate_gradual_run_is_gradual_pruning(check_data):
    train_set, test_set = check_data
    recipe = replace(S.CHECK_RECIPE, lr_schedule="constant", weight_decay=0.0)
    ours, theirs = pl.load_pretrained("lenet300"), pl.load_pretrained("lenet300")
    run = S.run_schedule("gradual", 0.8, ours, train_set, test_set, recipe)
    _, trace = gradual_pruning(theirs, train_set, 0.8, epochs=recipe.epochs, prune_every=recipe.prune_every,
                               lr=recipe.lr, scope="global")
    assert [tuple(e) for e in run["prune_steps"]] == trace
    assert same(snapshot(ours), snapshot(theirs), ordered=True)


def test_bad_recipes_and_missing_files_say_what_to_do(tmp_path, check_data):
    train_set, test_set = check_data
    with pytest.raises(ValueError, match="multiple of rounds"):
        S.run_schedule("iterative", 0.5, pl.load_pretrained("lenet300"), train_set, test_set,
                       replace(S.CHECK_RECIPE, epochs=3))
    with pytest.raises(ValueError, match="schedule must be one of"):
        S.run_schedule("cyclic", 0.5, pl.load_pretrained("lenet300"), train_set, test_set, S.CHECK_RECIPE)
    with pytest.raises(FileNotFoundError, match="python -m prunelab.schedule_runs --write"):
        S.load_schedule_runs(tmp_path / "none.json")
