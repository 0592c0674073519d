"""``lmlab ablate``: runs x seeds with one shared configuration, resumable, summarised with
Welch's t-test; tiny studies on the synthetic long-range language only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from lmlab.analysis import ablation, ablation_cli
from lmlab.analysis.ablation import QUICK, StudyConfig, run_study, summarize
from lmlab.errors import LmlabError
from lmlab.neural.cells import VARIANTS
from tests.cli_helpers import fails, ok


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    folder, extra = ablation_cli._synthetic_data(tmp_path_factory.mktemp("lr") / "data", 4,
                                                 quick=True)
    return folder, extra


def quick(**kw) -> StudyConfig:
    return StudyConfig(**{**QUICK, "max_train_tokens": 1500, **kw})


def test_cli_variants_match_cells():
    assert ablation_cli.VARIANTS == VARIANTS


def test_study_writes_table_plot_and_tests(synth_dir, tmp_path):
    folder, extra = synth_dir
    summary = run_study(folder, tmp_path, quick(variants=["vanilla", "nfg", "cifg"]),
                        log=lambda line: None, extra=extra)
    for name in ("results.json", "results.md", "ablation.png", "study.json"):
        assert (tmp_path / name).stat().st_size > 0
    rows = {r["variant"]: r for r in summary["variants"]}
    assert set(rows) == {"vanilla", "nfg", "cifg"} and len(summary["runs"]) == 6
    # one gate fewer: 4 -> 3 gate blocks and one peephole vector fewer
    assert rows["nfg"]["parameters"] < rows["vanilla"]["parameters"]
    assert rows["vanilla"]["p_vs_vanilla"] is None
    for v in ("nfg", "cifg"):
        expected = stats.ttest_ind(rows[v]["test_ppl"], rows["vanilla"]["test_ppl"],
                                   equal_var=False).pvalue
        assert rows[v]["p_vs_vanilla"] == pytest.approx(expected)
        assert rows[v]["test_ppl_mean"] > 1
    assert summary["entropy_floor_ppl"] == pytest.approx(extra["entropy_floor_ppl"])
    md = (tmp_path / "results.md").read_text()
    assert "| nfg |" in md and "entropy floor" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["variants"] == json.loads(json.dumps(summary["variants"]))


def test_finished_runs_are_not_redone_and_checkpoints_resume(synth_dir, tmp_path, monkeypatch):
    folder, _ = synth_dir
    study = quick(variants=["vanilla"], seeds=1)
    # an interrupted run: a checkpoint after 2 steps, no result file
    from lmlab.neural.data import load_corpus
    from lmlab.neural.trainer import Trainer

    (tmp_path / "runs").mkdir()
    corpus = load_corpus(folder)
    corpus.train = ablation._head(corpus.train, study.max_train_tokens)
    t = Trainer(study.run_config("vanilla", 1), corpus, tmp_path / "runs" / "vanilla_s1.pt",
                plot=False)
    t.train(max_steps=2)
    t.close()
    resumed = run_study(folder, tmp_path, study, log=lambda line: None)
    fresh = run_study(folder, tmp_path / "fresh", study, log=lambda line: None)
    assert resumed["runs"][0]["test_ppl"] == pytest.approx(fresh["runs"][0]["test_ppl"],
                                                           rel=1e-6)
    assert resumed["runs"][0]["steps"] == fresh["runs"][0]["steps"]

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(ablation, "run_one", boom)
    again = run_study(folder, tmp_path, study, log=lambda line: None)
    assert again["runs"] == resumed["runs"]


def test_other_settings_in_the_same_folder_are_refused(synth_dir, tmp_path):
    folder, _ = synth_dir
    run_study(folder, tmp_path, quick(variants=["np"], seeds=1), log=lambda line: None)
    with pytest.raises(LmlabError, match="other settings .*hidden"):
        run_study(folder, tmp_path, quick(variants=["np"], seeds=1, hidden=8),
                  log=lambda line: None)
    # other data (files of other content), or a synthetic corpus made otherwise, is another
    # study too: its finished runs were reused as this one's
    other = tmp_path / "other"
    other.mkdir()
    for f in Path(folder).iterdir():
        (other / f.name).write_bytes(f.read_bytes().replace(b"\n", b" \n", 1))
    with pytest.raises(LmlabError, match=r"other settings \(data\)"):
        run_study(other, tmp_path, quick(variants=["np"], seeds=1), log=lambda line: None)
    with pytest.raises(LmlabError, match=r"other settings \(source\)"):
        run_study(folder, tmp_path, quick(variants=["np"], seeds=1), log=lambda line: None,
                  extra={"distance": 3})
    again = run_study(folder, tmp_path, quick(variants=["np"], seeds=1), log=lambda line: None)
    assert len(again["runs"]) == 1


def test_summarize_by_hand():
    runs = [{"variant": v, "seed": s, "parameters": 10, "test_ppl": t, "valid_ppl": t + 1,
             "train_ppl": t - 1, "train_tokens_per_s": 100.0, "epochs": 1}
            for v, s, t in [("vanilla", 1, 10.0), ("vanilla", 2, 12.0), ("nog", 1, 20.0),
                            ("nog", 2, 24.0)]]
    rows = {r["variant"]: r for r in summarize(runs, StudyConfig(), {})["variants"]}
    assert rows["vanilla"]["test_ppl_mean"] == 11.0
    assert rows["nog"]["test_ppl_std"] == pytest.approx(2 ** 1.5)
    assert rows["nog"]["p_vs_vanilla"] == pytest.approx(
        stats.ttest_ind([20.0, 24.0], [10.0, 12.0], equal_var=False).pvalue)


def test_diverged_runs_are_counted_not_averaged(tmp_path):
    def run(v, s, t, **kw):
        return {"variant": v, "seed": s, "parameters": 10, "test_ppl": t,
                "valid_ppl": None if t is None else t + 1, "train_ppl": 5.0,
                "train_tokens_per_s": 100.0, "epochs": 1, "device": "cpu", **kw}

    runs = [run("vanilla", 1, 10.0, diverged=False), run("vanilla", 2, 12.0, diverged=False),
            run("noaf", 1, 30.0, diverged=False), run("noaf", 2, None, diverged=True),
            run("nog", 1, None), run("nog", 2, None)]  # written before the key existed
    summary = summarize(runs, StudyConfig(), {})
    rows = {r["variant"]: r for r in summary["variants"]}
    assert [rows[v]["diverged"] for v in ("vanilla", "noaf", "nog")] == [0, 1, 2]
    assert rows["noaf"]["test_ppl"] == [30.0] and rows["noaf"]["test_ppl_mean"] == 30.0
    assert rows["noaf"]["p_vs_vanilla"] is None  # one finite run: no test
    assert rows["nog"]["test_ppl_mean"] is None
    md = ablation.markdown_table(summary)
    assert "| noaf | 2 | 1 | 31.00 ± 0.00 | 30.00 ± 0.00 | 30.00 |" in md
    assert "| nog | 2 | 2 | - | - | - |" in md and "diverged: runs whose" in md
    ablation.plot_study(summary, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0


def test_diverged_run_with_a_finite_validation_is_left_out_of_every_perplexity():
    def run(seed, valid, test, diverged):
        return {"variant": "noaf", "seed": seed, "parameters": 10, "test_ppl": test,
                "valid_ppl": valid, "train_ppl": 5.0, "train_tokens_per_s": 100.0 * seed,
                "epochs": 1, "device": "cpu", "diverged": diverged}

    # seed 2's validation was finite, its test overflowed (null)
    row = summarize([run(1, 31.0, 30.0, False), run(2, 90.0, None, True)], StudyConfig(),
                    {})["variants"][0]
    assert row["diverged"] == 1 and row["valid_ppl_mean"] == 31.0
    assert row["train_tokens_per_s_mean"] == 150.0  # speed counts every run


def test_run_with_overflowing_perplexity_is_marked_diverged(synth_dir, tmp_path, monkeypatch):
    from lmlab.neural.trainer import Trainer

    folder, _ = synth_dir
    monkeypatch.setattr(Trainer, "evaluate_test", lambda self: {"perplexity": float("inf")})
    record = ablation.run_one(folder, str(tmp_path), "vanilla", 1, quick(seeds=1))
    assert record["diverged"] is True
    saved = json.loads((tmp_path / "vanilla_s1.json").read_text())
    assert saved["diverged"] is True and saved["test_ppl"] is None


def test_cli_synthetic_quick_and_summary_only(tmp_path, capsys):
    out = ok(capsys, "ablate", "--synthetic", "--quick", "--distance", "3", "--out", tmp_path,
             "--variants", "vanilla", "noaf", "--seeds", "2", "--max-train-tokens", "800")
    assert "| noaf |" in out and "entropy floor" in out.lower()
    again = ok(capsys, "ablate", "--synthetic", "--quick", "--distance", "3", "--out", tmp_path,
               "--variants", "vanilla", "noaf", "--seeds", "2", "--max-train-tokens", "800",
               "--summary-only", "--json")
    assert {r["variant"] for r in json.loads(again)} == {"vanilla", "noaf"}


@pytest.mark.parametrize("argv, message", [
    (["--variants", "xyz"], "invalid choice"),
    (["--seeds", "0"], "--seeds must be an integer >= 1"),
    (["--hidden", "0"], "--hidden must be"),
    (["--summary-only"], "no finished runs"),
])
def test_cli_errors(tmp_path, capsys, argv, message):
    if message == "invalid choice":
        with pytest.raises(SystemExit):
            ok(capsys, "ablate", "--synthetic", "--out", tmp_path, *argv)
        assert message in capsys.readouterr().err
        return
    assert message in fails(capsys, "ablate", "--synthetic", "--quick", "--out", tmp_path,
                            *argv)


def test_cli_missing_data_dir(tmp_path, capsys):
    assert "no such data directory" in fails(capsys, "ablate", "--data", tmp_path / "nope",
                                             "--out", tmp_path / "o")


def test_queued_run_does_not_start_after_interruption(synth_dir, tmp_path):
    folder, _ = synth_dir
    (tmp_path / ablation.STOP).touch()
    assert ablation.run_one(folder, str(tmp_path), "vanilla", 1, quick()) is None
    assert not list(tmp_path.glob("vanilla_s1*"))
