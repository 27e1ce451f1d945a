"""The lottery-ticket explorer shows the precomputed IMP record's numbers, computed here again from the JSON with
plain Python; driven by setting its widgets."""

import copy
import statistics

import numpy as np
import pytest

from prunelab.explorers.tickets import RESTARTS, TicketExplorer
from prunelab.resets import load_tickets


@pytest.fixture(scope="module")
def record():
    return load_tickets()


@pytest.fixture
def explorer(record):
    return TicketExplorer(record)


def seeds(record, key, k):
    """Round k's ``key`` in every seed, straight from the record."""
    return [run["rounds"][k][key] for run in record["runs"]]


def kept_of(record):
    return [1 - r["sparsity"] for r in record["runs"][0]["rounds"]]


def test_it_starts_at_the_dense_round_with_a_stop_per_round(explorer, record):
    kept = kept_of(record)
    assert len(kept) == 19 and explorer.error is None
    assert [value for _, value in explorer.slider.options] == kept
    labels = [label for label, _ in explorer.slider.options]
    assert labels[0] == "100%" and labels[9] == "13.5%" and labels[13] == "5.57%" and labels[-1] == "1.85%"
    assert explorer.slider.description == "weights kept" and explorer.slider.value == 1.0 == explorer.kept
    assert explorer.k == 0 and all(box.value for box in explorer.show.values())
    assert explorer.image.value[:4] == b"\x89PNG"
    assert "validation accuracy at <b>100%</b> kept (round 0), mean of 5 seeds" in explorer.headline.value
    width, height = explorer.fig.get_size_inches() * explorer.fig.dpi / explorer.pixel_ratio
    assert width <= 900 and explorer.image.layout.width == f"{round(width)}px"


def test_the_figures_are_the_mean_and_range_over_the_seeds_of_the_record(explorer, record):
    for k, kept in enumerate(kept_of(record)):
        explorer.slider.value = kept
        assert explorer.error is None and explorer.k == k and explorer.kept == kept
        for restart in RESTARTS:
            for split in ("validation", "test"):
                a = seeds(record, f"{restart}_{split}", k)
                assert explorer.summary(restart, split) == pytest.approx(
                    (statistics.fmean(a), min(a), max(a)), abs=1e-12)
            mean, lo, hi = explorer.summary(restart)
            assert f">{mean:.2%}</td>" in explorer.headline.value
            assert f"seeds: {100 * lo:.2f} to {100 * hi:.2f}%" in explorer.headline.value
            assert explorer.dots[restart].get_xdata()[0] == pytest.approx(100 * kept)
            assert explorer.dots[restart].get_ydata()[0] == pytest.approx(100 * mean)
        gaps = [t - c for t, c in zip(seeds(record, "ticket_validation", k), seeds(record, "control_validation", k))]
        assert list(explorer.gaps()) == pytest.approx(gaps, abs=1e-12)
        assert explorer.seeds_ahead == sum(g > 0 for g in gaps)
        assert f"{100 * statistics.fmean(gaps):+.2f} points" in explorer.headline.value
        assert f"ahead in <b>{explorer.seeds_ahead} of 5</b> seeds" in explorer.headline.value
        assert f"each {100 * min(gaps):+.2f} to {100 * max(gaps):+.2f}" in explorer.headline.value
        assert list(explorer.marker.get_xdata()) == pytest.approx([100 * kept] * 2)
        assert explorer.marker_text.get_text().strip() == f"{explorer.slider.options[k][0]} kept"


def test_the_lines_and_bands_are_every_round_of_the_record(explorer, record):
    kept = kept_of(record)
    for restart in RESTARTS:
        x, y = explorer.lines[restart].get_data()
        assert list(x) == pytest.approx([100 * f for f in kept])
        means = [100 * statistics.fmean(seeds(record, f"{restart}_validation", k)) for k in range(len(kept))]
        assert list(y) == pytest.approx(means, abs=1e-9)
        _, _, lo, hi = explorer.curve(restart)
        assert list(lo) == pytest.approx([100 * min(seeds(record, f"{restart}_validation", k))
                                          for k in range(len(kept))], abs=1e-9)
        assert list(hi) == pytest.approx([100 * max(seeds(record, f"{restart}_validation", k))
                                          for k in range(len(kept))], abs=1e-9)
    assert explorer.ax.get_xscale() == "log" and explorer.ax.xaxis_inverted()   # 100% on the left


def test_the_checkboxes_hide_a_restart_from_the_figure_and_the_readout(explorer, record):
    explorer.slider.value = kept_of(record)[13]
    before = explorer.image.value
    explorer.show["one_shot"].value = False
    assert explorer.error is None and explorer.image.value != before
    assert not explorer.lines["one_shot"].get_visible() and not explorer.bands["one_shot"].get_visible()
    assert not explorer.dots["one_shot"].get_visible() and explorer.lines["ticket"].get_visible()
    assert RESTARTS["one_shot"] not in explorer.headline.value and RESTARTS["ticket"] in explorer.headline.value
    assert [t.get_text() for t in explorer.legend.get_texts()][:2] == [
        f"{RESTARTS['ticket']}: mean of 5 seeds", f"{RESTARTS['control']}: mean of 5 seeds"]
    assert len(explorer.legend.get_texts()) == 3                                   # and the dense line
    for box in explorer.show.values():
        box.value = False
    assert "ticket − re-init" in explorer.headline.value                          # the gap stays
    assert not any(line.get_visible() for line in explorer.lines.values())


def test_the_axes_stay_put_while_the_controls_move(explorer, record):
    limits = {(explorer.ax.get_xlim(), explorer.ax.get_ylim())}
    for _, kept in explorer.slider.options:
        explorer.slider.value = kept
        explorer.show["control"].value = not explorer.show["control"].value
        limits.add((explorer.ax.get_xlim(), explorer.ax.get_ylim()))
    assert len(limits) == 1
    (x0, x1), (y0, y1) = limits.pop()
    values = [100 * r[f"{restart}_validation"] for run in record["runs"] for r in run["rounds"] for restart in RESTARTS]
    assert y0 < min(values) and max(values) < y1
    assert x0 > 100 and x1 < 100 * min(kept_of(record))


def test_events_only_blit_onto_backgrounds_drawn_once(explorer, monkeypatch):
    assert len(explorer.renderer._backgrounds) == 8              # every set of checkboxes, drawn after the first
    draws = []
    monkeypatch.setattr(explorer.renderer.canvas, "draw", lambda: draws.append(1))
    for _, kept in explorer.slider.options:
        explorer.slider.value = kept
    explorer.show["ticket"].value = False
    explorer.reset()
    assert explorer.error is None and draws == [] and len(explorer.event_seconds) >= 19


def test_reset_brings_the_first_fraction_and_every_restart_back(record):
    kept = kept_of(record)
    explorer = TicketExplorer(record, kept=kept[9])
    first, first_headline = explorer.image.value, explorer.headline.value
    explorer.slider.value = kept[-1]
    explorer.show["control"].value = explorer.show["ticket"].value = False
    assert explorer.image.value != first
    explorer.reset()
    assert explorer.error is None and explorer.slider.value == kept[9] == explorer.kept and explorer.k == 9
    assert all(box.value for box in explorer.show.values()) and all(line.get_visible()
                                                                    for line in explorer.lines.values())
    assert explorer.image.value == first and explorer.headline.value == first_headline


def test_it_shows_the_record_it_is_given(record):
    changed = copy.deepcopy(record)
    changed["runs"][2]["rounds"][18]["control_validation"] = 0.99      # one seed's re-init now beats its ticket
    explorer = TicketExplorer(changed, kept=kept_of(record)[-1])
    assert explorer.seeds_ahead == 4 and "ahead in <b>4 of 5</b> seeds" in explorer.headline.value
    assert explorer.summary("control")[2] == 0.99 and TicketExplorer(record).summary("control")[2] < 0.9


@pytest.mark.parametrize("break_it, message", [
    (lambda doc: doc.pop("runs"), r"needs 'runs', a list with one entry per seed; got a dict with keys"),
    (lambda doc: doc["runs"].clear(), r"needs 'runs'"),
    (lambda doc: doc["runs"][1].pop("rounds"), r"run 1 \(seed 1\) has no 'rounds'"),
    (lambda doc: doc["runs"][3]["rounds"][7].pop("one_shot_validation"),
     r"run 3 \(seed 3\), round 7, has no 'one_shot_validation'; every round needs 'sparsity', 'ticket_validation'"),
    (lambda doc: [doc["runs"][0]["rounds"][2].pop(k) for k in ("control_test", "sparsity")],
     r"run 0 \(seed 0\), round 2, has no 'sparsity', 'control_test'"),
    (lambda doc: doc["runs"][4]["rounds"].pop(), r"run 4 \(seed 4\) has other rounds than run 0 \(18 rounds"),
])
def test_a_bad_record_says_what_is_missing(record, break_it, message):
    doc = copy.deepcopy(record)
    break_it(doc)
    with pytest.raises(ValueError, match=message) as caught:
        TicketExplorer(doc)
    assert "bench_lottery_ticket.py --write" in str(caught.value)


def test_a_record_that_is_not_a_dict_and_a_kept_that_is_no_round_are_refused(record):
    with pytest.raises(ValueError, match="needs 'runs'.*got a list"):
        TicketExplorer([1, 2])
    with pytest.raises(ValueError, match=r"kept must be the fraction of weights kept at one of the record's rounds: "
                                         r"1, 0\.8004, .*; got 0\.5"):
        TicketExplorer(record, kept=0.5)
    assert TicketExplorer(record, kept=0.0557).kept == kept_of(record)[13]    # as printed, 4 digits, is enough


def test_a_slider_value_from_the_page_moves_the_marker_and_the_readout(explorer, record):
    kept = kept_of(record)
    explorer.slider.index = 16                                 # the page sends the index of the stop
    assert explorer.kept == kept[16] and "<b>2.87%</b>" in explorer.headline.value
    assert np.isclose(explorer.marker.get_xdata()[0], 100 * kept[16])


def test_projector_mode_draws_the_same_figure_with_twice_the_pixels(record, monkeypatch):
    plain = TicketExplorer(record)
    monkeypatch.setenv("PRUNELAB_PROJECTOR", "1")
    projected = TicketExplorer(record)
    assert projected.projector and plain.image.layout.width == projected.image.layout.width == "840px"
    w_plain, w_projected = (int.from_bytes(e.image.value[16:20], "big") for e in (plain, projected))   # PNG IHDR
    assert (w_plain, w_projected) == (840, 1680)
    assert projected.headline.value == plain.headline.value
