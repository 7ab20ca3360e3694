"""The mutation check: each deliberate fault of tests/mutants.py, injected from outside the
code under test into a fresh pytest process (``-p mutants``, ``$TSF_MUTANT``), must make at
least one of the tests meant to catch it fail (a mutation score of 100% over these mutants,
the idea of mutmut and cosmic-ray, on a handful of faults chosen by hand). The killers are
printed (``pytest -s``) and named in the failure message of a mutant that survives.

A surviving mutant means the suite no longer notices that fault: a test was weakened or the
code path it guards moved; fix the test, do not drop the mutant. ``TSF_MUTANTS_FULL=1`` adds
slower second killers (:data:`MORE`: the training runs of test_train_learns.py, the HF model).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LEARNS = "tests/test_train_learns.py::test_divided_learns_the_direction_of_time_space_only_cannot"
STEP = "tests/test_train_learns.py::test_one_step_moves_what_the_recipe_says_and_nothing_else"
# mutant -> the tests that must catch it, cheap enough for every CI run
KILLERS = {
    "optimizer_noop": [STEP],
    "lr_zero": [STEP],
    "labels_rolled": ["tests/test_data_datamodule.py::test_kinetics_frames_labels_and_batch_types"],
    "frames_reversed": ["tests/test_data_readers.py::test_readers_return_the_indexed_frames"],
    "time_attention_skipped": ["tests/test_model.py::test_every_parameter_gets_a_gradient"],
}
# slower second opinions, with TSF_MUTANTS_FULL=1 (the training run; transformers' import)
MORE = {
    "optimizer_noop": [LEARNS],
    "lr_zero": [LEARNS],
    "labels_rolled": [LEARNS],
    "time_attention_skipped": ["tests/test_hf_equality.py::test_logits_equal_hf", LEARNS],
}
FULL = os.environ.get("TSF_MUTANTS_FULL") == "1"


def run_mutant(name: str, tests: list[str]) -> tuple[int, str]:
    env = {**os.environ, "TSF_MUTANT": name, "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-p", "mutants", "-p", "no:cacheprovider", "-q",
           "-rf", "--no-header", "-W", "ignore", *tests]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mutant", list(KILLERS))
def test_mutant_is_killed(mutant: str) -> None:
    tests = KILLERS[mutant] + (MORE.get(mutant, []) if FULL else [])
    rc, out = run_mutant(mutant, tests)
    ran = re.search(rf"mutant {mutant} ran (\d+) times", out)
    assert ran and int(ran.group(1)) > 0, f"the mutant was never reached:\n{out[-3000:]}"
    killers = re.findall(r"^FAILED (\S+)", out, re.M)
    assert rc == 1 and killers, f"mutant {mutant} SURVIVED {tests}:\n{out[-3000:]}"
    print(f"mutant {mutant} killed by: {', '.join(killers)}")
