"""bench/registration.py --steps: the home agent's time per Binding Update broken into the steps
of its path, for the three kinds of update; --baseline-tree: the same cases measured on another
checkout in the same run."""

import json
import os
import subprocess
import sys


def test_steps_are_measured_where_each_kind_of_update_spends_them():
    """On a few nodes, --steps prints every step for each case; the steps every update passes
    (parse, ESP open, decode, core, the BA sent) took time in all three cases; the first
    contact and the refresh stored a binding and published it to the peers, who spent time on
    the BIUs; the duplicate (same sequence number) stored nothing, published nothing and gave
    the peers nothing to do; the parts of send_mh and of core add up to no more than it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "registration.py"),
                          "--nodes", "60", "--steps"],
                         capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout)
    assert doc["bench"] == "registration-steps" and doc["nodes"] == 60
    names = set(doc["steps"]) | set(doc["substeps"])
    assert set(doc["cases"]) == {"first", "new_number", "same_number"}
    for case, steps in doc["cases"].items():
        assert names <= set(steps), case
        for name in ("parse", "esp_open", "decode", "core", "send_mh", "encode", "esp_seal"):
            assert steps[name] > 0, (case, name)
        assert steps["total"] > 0 and steps["wrapped_total"] > 0
        assert steps["encode"] + steps["esp_seal"] + steps["build"] <= steps["send_mh"]
        assert steps["cache_store"] + steps["sync_publish"] <= steps["core"]
    for case in ("first", "new_number"):
        steps = doc["cases"][case]
        assert steps["cache_store"] > 0 and steps["sync_publish"] > 0 and steps["peers"] > 0
    same = doc["cases"]["same_number"]
    assert same["cache_store"] == same["sync_publish"] == same["peers"] == 0


def test_baseline_tree_is_measured_in_the_same_run_and_a_missing_one_refused(tmp_path):
    """--baseline-tree with this checkout itself gives every case its figure on that tree and
    the ratio to it (the switch requests too, measured in that tree by this file's code); a
    directory without haha's benchmark stops with a message naming it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "bench", "registration.py")
    out = subprocess.run([sys.executable, script, "--nodes", "30", "--rounds", "1",
                          "--echo-datagrams", "0", "--send-datagrams", "0",
                          "--switch-requests", "40", "--baseline-tree", root],
                         capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout)
    assert doc["baseline_tree"] == root
    assert [r["case"] for r in doc["results"]] == ["first", "same_number", "new_number",
                                                   "switch_request"]
    for r in doc["results"]:
        tree = r["baselines"]["baseline_tree"]
        # value is rounded to 0.1 us, the ratio computed before rounding
        assert tree > 0 and abs(r["ratio_to_baseline_tree"] - r["value"] / tree) < 0.002
    bad = subprocess.run([sys.executable, script, "--nodes", "30", "--rounds", "1",
                          "--echo-datagrams", "0", "--send-datagrams", "0",
                          "--switch-requests", "0", "--baseline-tree", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and str(tmp_path) in bad.stderr and not bad.stdout
