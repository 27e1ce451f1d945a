"""The schedule explorer shows exactly the precomputed numbers; driven by setting its widgets."""

import copy

import pytest

from prunelab.explorers.schedule import ScheduleExplorer
from prunelab.schedule_runs import SCHEDULES, find_run, load_schedule_runs


@pytest.fixture(scope="module")
def doc():
    return load_schedule_runs()


@pytest.fixture
def explorer(doc):
    return ScheduleExplorer(doc)


def drawn(line):
    return list(map(float, line.get_xdata())), list(map(float, line.get_ydata()))


def test_the_shown_curves_are_the_recorded_numbers(explorer, doc):
    spe, epochs = doc["steps_per_epoch"], doc["recipe"]["epochs"]
    for s_final in doc["final_sparsities"]:
        explorer.slider.value = s_final
        assert explorer.error is None and explorer.s_final == s_final
        for name in SCHEDULES:
            run = find_run(doc, name, s_final)
            x, y = drawn(explorer.accuracy_lines[name])
            assert x == [t / spe for t, _ in run["accuracy"]] and y == [a for _, a in run["accuracy"]]
            x, y = drawn(explorer.sparsity_lines[name])
            assert x == [0.0, *(t / spe for t, _ in run["prune_steps"]), epochs]
            assert y == [0.0, *(s for _, s in run["prune_steps"]), run["prune_steps"][-1][1]]
            assert f"{name}</span><br><span style='font-size:24px;font-weight:" in explorer.headline.value
            assert f">{run['final_accuracy']:.2%}</span>" in explorer.headline.value
        assert drawn(explorer.target_line)[1] == [s_final, s_final]
        assert drawn(explorer.final_marker)[0] == [s_final, s_final]
        assert f"s_f = {s_final:g}" in explorer.ax_accuracy.get_title()


def test_the_final_accuracy_panel_holds_every_final_sparsity(explorer, doc):
    for line, name in zip(explorer.ax_final.lines, SCHEDULES):
        x, y = drawn(line)
        assert x == doc["final_sparsities"]
        assert y == [find_run(doc, name, s)["final_accuracy"] for s in doc["final_sparsities"]]


def test_the_accuracy_axis_stays_put_while_s_f_moves(explorer, doc):
    limits = set()
    for s_final in doc["final_sparsities"]:
        explorer.slider.value = s_final
        limits.add(explorer.ax_accuracy.get_ylim())
    assert len(limits) == 1
    lowest = min(a for run in doc["runs"] for _, a in run["accuracy"])
    assert limits.pop()[0] < lowest                     # every run of every s_f fits


def test_tied_schedules_are_all_bold(doc):
    tied = copy.deepcopy(doc)
    s_final = tied["final_sparsities"][0]
    runs = {name: find_run(tied, name, s_final) for name in SCHEDULES}
    runs["iterative"]["final_accuracy"] = runs["gradual"]["final_accuracy"] = 0.99   # above one-shot
    explorer = ScheduleExplorer(tied)
    explorer.slider.value = s_final
    rows = explorer.readout.value.split("<tr")
    bold = {name for name in SCHEDULES for row in rows if f"<td>{name}</td>" in row and "font-weight:bold" in row}
    assert bold == {"iterative", "gradual"}
    cells = explorer.headline.value.split("<td")                          # the headline too
    assert {name for name in SCHEDULES for cell in cells
            if f">{name}</span>" in cell and "font-weight:bold" in cell} == {"iterative", "gradual"}


def test_the_accuracy_axis_fits_the_shown_curves(explorer, doc):
    explorer.slider.value = max(doc["final_sparsities"])
    lowest = min(a for name in SCHEDULES for _, a in explorer.shown[name]["accuracy"])
    assert explorer.ax_accuracy.get_ylim()[0] < lowest
    explorer.show["one-shot"].value = False            # hide the deepest dip: the axis zooms in
    assert not explorer.accuracy_lines["one-shot"].get_visible()
    assert not explorer.sparsity_lines["one-shot"].get_visible()
    rest = min(a for name in ("iterative", "gradual") for _, a in explorer.shown[name]["accuracy"])
    assert lowest <= explorer.ax_accuracy.get_ylim()[0] < rest
    assert explorer.error is None and explorer.image.value[:4] == b"\x89PNG"


def test_a_missing_run_is_shown_as_an_error_and_the_last_figure_stays(doc):
    partial = copy.deepcopy(doc)
    partial["runs"] = [r for r in partial["runs"] if not (r["schedule"] == "gradual" and r["s_final"] == 0.95)]
    explorer = ScheduleExplorer(partial, s_final=0.9)
    before = drawn(explorer.accuracy_lines["iterative"]), explorer.image.value
    explorer.slider.value = 0.95
    assert isinstance(explorer.error, ValueError) and "No 'gradual' run at s_f = 0.95" in str(explorer.error)
    assert "run at s_f = 0.95" in explorer.error_box.value and explorer.error_box.layout.display != "none"
    assert explorer.s_final == 0.9 and (drawn(explorer.accuracy_lines["iterative"]), explorer.image.value) == before
    explorer.slider.value = 0.8
    assert explorer.error is None and explorer.error_box.layout.display == "none" and explorer.s_final == 0.8


def test_the_readout_names_the_recipe_and_the_command(explorer, doc):
    text = explorer.readout.value
    assert doc["command"] in text and f"{doc['recipe']['epochs']} epochs" in text
    assert "prunelab-accuracy" in explorer.headline.value
