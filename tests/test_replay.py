"""The replay subset's plan and what is read back from mace's log (the real runs that make
and use subsets are in ``tests/test_runs.py``)."""

from __future__ import annotations

import sys

from mlipft_core.replay import plan_subset, replay_of, replay_sentence

#: two lines as mace_finetuning_select and mace_run_train write them (from a run's log)
FELL_BACK = ("2026-12-02 13:38:54 ERROR    FPS failed, selecting random configurations "
             "instead: name 'fpsample' is not defined\n")
PT_SIZE = "2026-12-02 13:39:20 INFO     Head 'pt_head' training dataset size: 18\n"


def test_the_selection_command_and_a_farthest_point_sampling_that_fell_back(tmp_path):
    sub = plan_subset("/data/pool.xyz", 30, {"num_samples_pt": 20, "subselect_pt": "fps",
                                             "seed": 3, "device": "cpu"},
                      tmp_path, "/models/fm.model")
    assert sub.subsets and sub.file == str(tmp_path / "replay_subset.xyz")
    assert sub.command() == [
        sys.executable, "-m", "mace.cli.fine_tuning_select", "--configs_pt", "/data/pool.xyz",
        "--output", str(tmp_path / "replay_subset.xyz"), "--num_samples", "20",
        "--subselect", "fps", "--filtering_type", "none", "--seed", "3",
        "--model", "/models/fm.model", "--device", "cpu", "--default_dtype", "float64"]
    before = replay_of({"replay": sub.to_dict()}, tmp_path)  # no log yet
    assert before["used"] is None and before["method_used"] == "fps"
    assert replay_sentence(before) == ("Replays 20 of the replay file's 30 structures, chosen "
                                       "by farthest point sampling.")
    (tmp_path / "train.log").write_text(FELL_BACK + PT_SIZE)
    after = replay_of({"replay": sub.to_dict()}, tmp_path)
    assert after["method_used"] == "random"
    assert after["fps_failure"] == "name 'fpsample' is not defined"
    assert after["used"] == 18
    assert replay_sentence(after) == (
        "Replays 20 of the replay file's 30 structures, chosen by farthest point sampling "
        "(farthest point sampling failed: name 'fpsample' is not defined; "
        "mace_finetuning_select chose them at random instead); the pretraining head trained "
        "on 18 of them and validates on the other 2.")
    # random selection needs no model
    rand = plan_subset("/data/pool.xyz", 30, {"num_samples_pt": 20, "subselect_pt": "random"},
                       tmp_path, "/models/fm.model")
    assert "--model" not in rand.command()
    assert replay_of({"settings": {}}, tmp_path) is None  # a run without replay
