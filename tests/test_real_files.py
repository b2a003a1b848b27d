"""The task readers on slices of the real benchmark files (``../shared/data/real``, each with its SOURCE.txt).

``check_readers.py`` there lays the files out in every ``--data-dir`` layout the README documents, calls each
task's ``read_split`` and compares the examples read per language with counts it takes from the files
itself (independently of mglm); it exits 1 when any case fails or reads other counts. Skipped, with the reason,
where the folder is not laid out (a user's clone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO, shared_path


def test_check_readers_on_the_real_files(tmp_path):
    script = shared_path("real", "check_readers.py")
    out = tmp_path / "results.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MGLM_ROOT": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    bad = [r for r in results if r["status"] not in ("ok", "expected-error", "skipped")]
    assert not bad, bad
    by_case = {(r["case"], r.get("split")): r for r in results}
    # The three cases issue 16 found failing read now, with every question / paper.
    ty = by_case[("tydiqa/xtreme train tydiqa.goldp.en.train.json", "train")]
    assert ty["status"] == "ok" and ty["counts"]["en"] > 89  # more questions than XTREME's distinct ids
    for split in ("dev", "test"):
        assert by_case[("scisummnet_zh per-split (records 1-6 / 801-806)", split)]["status"] == "ok"
