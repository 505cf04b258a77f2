"""`loihi-conv report` / loihi_conv.app.report: numbers consistent with the pipeline, real figures.

Runs the digits CNN on a few test images (seconds); the Lava part is one image, marked lava.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from loihi_conv.app import models, pipeline, plots
from loihi_conv.app import report as rep
from loihi_conv.app.cli import main
from loihi_conv.base.errors import LoihiConvError
from loihi_conv.convert import Recipe
from loihi_conv.emulate import emulator_predictions
from loihi_conv.fixed.decode import steps_for
from loihi_conv.fixed.quantize import TARGETS

MODEL, SAMPLES, TS = "digits_cnn", 60, (4, 16)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def data() -> rep.ReportData:
    return rep.collect(MODEL, "if-soft", TS, samples=SAMPLES, lava_samples=0, recipe=Recipe())


# ---- helpers with hand-computed values ----------------------------------------------------------
def test_pearson_cases():
    assert rep.pearson(np.array([1, 2, 3]), np.array([2, 4, 6])) == pytest.approx(1.0)
    assert rep.pearson(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert rep.pearson(np.array([5, 5]), np.array([5, 5])) == 1.0  # identical, even if constant
    assert math.isnan(rep.pearson(np.array([5, 5]), np.array([1, 2])))
    assert math.isnan(rep.pearson(np.zeros(0), np.zeros(0)))


def test_channel_relative_error_by_hand():
    # 2 samples, 2 channels, 1x2 positions; channel 1 is silent in the ANN and dropped
    x = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]], [[[0.0, 2.0]], [[0.0, 0.0]]]])
    s = torch.tensor([[[[1.0, 1.0]], [[3.0, 0.0]]], [[[1.0, 2.0]], [[1.0, 1.0]]]])
    # channel 0: ((0)^2 + 1^2 + 1^2 + 0^2) / (1 + 4 + 0 + 4) = 2/9
    assert rep.channel_relative_error(x, s).tolist() == pytest.approx([2 / 9])


def test_channel_mean_layouts():
    a = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    assert rep.channel_mean(a).tolist() == pytest.approx([a[:, c].mean() for c in range(3)])
    assert rep.channel_mean(np.array([[1.0, 3.0], [3.0, 5.0]])).tolist() == [2.0, 4.0]


def test_pareto_by_hand():
    # (steps, accuracy): (7, .9) is beaten by (7, .95); (11, .95) by (7, .95); (11, .97) and the tie stay
    steps, acc = [7, 7, 11, 11, 15, 15], [0.9, 0.95, 0.95, 0.97, 0.97, 0.99]
    assert rep.pareto(steps, acc) == [False, True, False, True, False, True]
    assert rep.pareto([5, 5], [0.5, 0.5]) == [True, True] and rep.pareto([], []) == []


# ---- collected numbers ----------------------------------------------------------------------------
def test_accuracies_match_evaluate_and_emulator(data):
    ref = models.resolve(MODEL, progress=False)
    ev = pipeline.evaluate(ref, Recipe(), TS, SAMPLES)
    assert data.samples == ev.samples == SAMPLES
    assert data.ann_accuracy == ev.ann_accuracy
    assert data.snn_accuracy == ev.snn_accuracy
    snn, _ = pipeline.convert_model(ref, Recipe())
    qnet = pipeline.quantize_snn(snn, ref, Recipe(), "if-soft", 16)
    acc, _ = pipeline.emulator_accuracy(qnet, ref.dataset, 16, SAMPLES)
    assert data.emulator_accuracy[16] == pytest.approx(acc)
    assert data.steps_run == 16 + qnet.depth


def test_frontier_every_target_and_t_matches_emulator(data):
    fr = data.frontier
    assert fr["targets"] == list(TARGETS) and fr["refused"] == {}  # default: every registered target
    assert [(p["target"], p["T"]) for p in fr["points"]] == [(t, T) for t in TARGETS for T in TS]
    ref = models.resolve(MODEL, progress=False)
    snn, _ = pipeline.convert_model(ref, Recipe())
    x, y = pipeline.test_data(ref.dataset, SAMPLES)
    for p in fr["points"]:
        qnet = pipeline.quantize_snn(snn, ref, Recipe(), p["target"], p["T"])
        assert p["steps"] == steps_for(qnet, p["T"]) == p["T"] + qnet.depth
        assert p["accuracy"] == float((emulator_predictions(qnet, x, p["T"]) == y.numpy()).mean())
        assert p["seconds"] > 0
        if p["target"] == data.target:  # the emulator curve's own points
            assert p["accuracy"] == data.emulator_accuracy[p["T"]]
    best = rep.pareto([p["steps"] for p in fr["points"]], [p["accuracy"] for p in fr["points"]])
    assert [p["pareto"] for p in fr["points"]] == best and any(best)
    assert [line.split(":")[0] for line in rep.frontier_summary(data)] == list(TARGETS)


def test_frontier_refused_target_and_no_double_quantization(monkeypatch):
    asked = []
    quantize = pipeline.quantize_snn

    def counting(snn, ref, recipe, target, timesteps, **kw):
        asked.append((target, timesteps))
        return quantize(snn, ref, recipe, target, timesteps, **kw)

    monkeypatch.setattr(pipeline, "quantize_snn", counting)
    # a spike-count readout: sdnn sends no spikes, so its quantizer refuses the network
    d = rep.collect(MODEL, "if-soft", (4, 8), samples=20, lava_samples=0, recipe=Recipe(output="spikes"),
                    frontier_targets=("sdnn", "if-soft", "cuba"))
    assert len(asked) == len(set(asked))  # every (target, T) quantized once, the curve's points reused
    assert set(asked) == {("if-soft", 4), ("if-soft", 8), ("sdnn", 4), ("cuba", 4), ("cuba", 8)}
    fr = d.frontier
    assert fr["targets"] == ["sdnn", "if-soft", "cuba"] and set(fr["refused"]) == {"sdnn"}
    assert fr["refused"]["sdnn"]["T"] == 4 and "output='spikes'" in fr["refused"]["sdnn"]["reason"]
    assert "\n" not in fr["refused"]["sdnn"]["reason"]
    assert [(p["target"], p["T"]) for p in fr["points"]] == [("if-soft", 4), ("if-soft", 8), ("cuba", 4), ("cuba", 8)]
    assert "sdnn: refused at T=4: " in rep.frontier_summary(d)[0]
    none = rep.collect(MODEL, "if-soft", (4,), samples=10, lava_samples=0, frontier_targets=())
    assert none.frontier == {"targets": [], "points": [], "refused": {}} and "frontier" not in none.seconds
    with pytest.raises(LoihiConvError, match="unknown target.*loihi3"):
        rep.collect(MODEL, "if-soft", (4,), samples=10, lava_samples=0, frontier_targets=("cuba", "loihi3"))


def test_frontier_figure_with_refused_target(data, tmp_path):
    refused = {"sdnn": {"T": 4, "reason": "why"}}
    d = rep.ReportData(**{**data.__dict__, "frontier": {**data.frontier, "refused": refused}})
    sec = next(s for s in rep.sections(d) if s.title == "Accuracy-latency frontier")
    assert "Refused: **sdnn** (at T=4): why" in sec.text and sec.figure == "frontier"
    assert len(sec.table[1]) == len(data.frontier["points"])
    lines = {t: [(p["T"], p["steps"], p["accuracy"]) for p in pts] for t, pts in rep.frontier_lines(d.frontier).items()}
    fig = plots.accuracy_vs_steps(lines, d.ann_accuracy, "t", 5, [(7, 1.0)], {"sdnn": "refused at T=4"})
    png = plots.save(fig, tmp_path, "frontier")["png"]
    assert png.read_bytes().startswith(PNG_MAGIC) and matplotlib.image.imread(png).shape[1] > 300
    # every target refused: the section says why and has no figure
    d.frontier = {"targets": ["sdnn"], "points": [], "refused": refused}
    sec = next(s for s in rep.sections(d) if s.title == "Accuracy-latency frontier")
    assert sec.figure is None and sec.table[1] == []


def test_layers_errors_rates_agreement(data):
    layers = list(data.layer_error)
    assert layers == list(data.rates["float SNN"]) == list(data.rates["emulator"]) == ["net_2", "net_6"]
    for name in layers:
        e = np.asarray(data.layer_error[name])
        assert e.size > 0 and np.all(e >= 0) and np.all(np.isfinite(e))
        f, m = np.asarray(data.rates["float SNN"][name]), np.asarray(data.rates["emulator"][name])
        assert np.all((f >= 0) & (f <= 1)) and np.all((m >= 0) & (m <= 1))
        # the fixed-point if-soft network fires like its float model
        assert abs(f.mean() - m.mean()) < 0.02
        assert data.agreement["float vs emulator"][name] > 0.9
    assert data.lava == {"samples": 0} and set(data.agreement) == {"float vs emulator"}


def test_raster_record(data):
    r = data.raster
    assert r["steps"] == data.steps_run and r["state"] == "v"
    for name, s in r["spikes"].items():
        s = np.asarray(s)
        assert s.shape[0] == data.steps_run and 0 < s.shape[1] <= 24 and set(np.unique(s)) <= {0, 1}
    assert len(r["trace"]) >= 1
    for label, v in r["trace"].items():
        spikes = np.asarray(r["trace_spikes"][label])
        assert len(v) == len(spikes) == data.steps_run
        assert f"({int(spikes.sum())} spikes)" in label
        assert r["threshold"][label] > 0 and r["threshold"][label] % 64 == 0  # vth << 6
        # SoftIF: reset by subtraction keeps v below its threshold after every step
        assert max(v) < r["threshold"][label] or spikes.sum() > 0


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_write_report_files(data, tmp_path, fmt):
    paths = rep.write(data, tmp_path, fmt)
    page = paths["report"].read_text()
    for name in ("accuracy", "frontier", "layer_error", "firing_rates", "raster", "agreement"):
        png, svg = paths[f"{name}_png"], paths[f"{name}_svg"]
        raw = png.read_bytes()
        assert raw.startswith(PNG_MAGIC) and len(raw) > 5000
        h, w = matplotlib.image.imread(png).shape[:2]
        assert h > 300 and w > 300
        assert ET.parse(svg).getroot().tag.endswith("svg")
        assert f"figures/{name}.png" in page
    js = json.loads(paths["json"].read_text())
    assert js == data.to_dict()
    assert js["snn_accuracy"]["16"] == data.snn_accuracy[16]
    assert f"{100 * data.snn_accuracy[16]:.2f}%" in page and f"{100 * data.ann_accuracy:.2f}%" in page
    assert ("<table>" in page) == (fmt == "html")
    assert "Accuracy-latency frontier" in page and js["frontier"] == data.to_dict()["frontier"]
    for p in data.frontier["points"]:  # one table row per point, same numbers as the figure
        assert f"{p['steps']}" in page and f"{100 * p['accuracy']:.2f}%" in page


def test_cli_report_and_bad_input(tmp_path):
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(main, ["-q", "report", "--model", MODEL, "-n", "20", "-T", "8", "--lava-samples", "0",
                               "--no-emulator-curve", "--frontier-targets", "none",
                               "--out", str(tmp_path / "r"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.stderr
    js = json.loads((tmp_path / "r.json").read_text())
    assert js["samples"] == 20 and list(js["emulator_accuracy"]) == ["8"] and js["detail_t"] == 8
    assert js["frontier"] == {"targets": [], "points": [], "refused": {}}
    res = runner.invoke(main, ["report", "--model", MODEL, "-n", "20", "-T", "4,8", "--lava-samples", "0",
                               "--no-emulator-curve", "--frontier-targets", "cuba", "--out", str(tmp_path / "f"),
                               "--json", str(tmp_path / "f.json")])
    assert res.exit_code == 0, res.stderr
    js = json.loads((tmp_path / "f.json").read_text())
    assert [(p["target"], p["T"]) for p in js["frontier"]["points"]] == [("cuba", 4), ("cuba", 8)]
    line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("cuba:"))
    assert all(f"T={p['T']} ({p['steps']} steps) {100 * p['accuracy']:.2f}%" in line for p in js["frontier"]["points"])
    bad = runner.invoke(main, ["report", "--model", MODEL, "--frontier-targets", "cuba,nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "nope" in bad.stderr
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "figures" / "raster.png").is_file()
    bad = runner.invoke(main, ["report", "--model", MODEL, "-n", "3", "--lava-samples", "5", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--lava-samples" in bad.stderr
    bad = runner.invoke(main, ["report", "--model", MODEL, "--detail-T", "0", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--detail-T 0" in bad.stderr


@pytest.mark.lava
def test_lava_counts_equal_emulator():
    d = rep.collect(MODEL, "cuba", (8,), samples=4, lava_samples=1, emulator_curve=False)
    assert d.lava["samples"] == 1 and d.lava["predictions_agree"]
    assert d.exact_match and all(v == 1.0 for v in d.exact_match.values())
    assert all(r == 1.0 for r in d.agreement["emulator vs Lava"].values())
    assert set(d.agreement) == {"float vs emulator", "emulator vs Lava", "float vs Lava"}
