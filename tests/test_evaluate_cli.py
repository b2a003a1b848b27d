"""tools/evaluate.py as a subprocess: JSON output, exit codes, one-line errors, import budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "evaluate.py"
XQUAD_DIR = ROOT / ".." / "shared" / "data" / "xquad"


def run_cli(*args: str, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *python_flags, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def dataset(version: str, *qas: tuple[str, list[str]]) -> dict:
    return {
        "version": version,
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {"context": "c", "qas": [{"id": i, "question": "?", "answers": [{"text": t} for t in golds]}
                                             for i, golds in qas]}
                ],
            }
        ],
    }


@pytest.fixture
def squad_files(tmp_path):
    ds = write_json(
        tmp_path / "ds.json",
        dataset("1.1", ("q1", ["Paris"]), ("q2", ["the red car", "red automobile"]), ("q3", ["x"])),
    )
    pred = write_json(tmp_path / "pred.json", {"q1": "paris.", "q2": "a red car parked", "q3": "y"})
    return ds, pred


def test_squad_output_and_out_file(squad_files, tmp_path):
    ds, pred = squad_files
    out = tmp_path / "result.json"
    r = run_cli("squad", ds, pred, "--out", out)
    assert r.returncode == 0, r.stderr
    # q1 EM 1 F1 1; q2 F1 0.8 (P 2/3, R 1) EM 0; q3 0. EM = 100/3, F1 = 100 * 1.8 / 3 = 60
    res = last_json(r.stdout)
    assert list(res) == ["exact_match", "f1"]
    assert res["exact_match"] == pytest.approx(100 / 3, abs=1e-12)
    assert res["f1"] == pytest.approx(60.0, abs=1e-12)
    assert json.loads(out.read_text()) == res
    assert r.stderr == ""


def test_squad_missing_predictions_reported(squad_files, tmp_path):
    ds, _ = squad_files
    pred = write_json(tmp_path / "p.json", {"q1": "Paris"})
    r = run_cli("squad", ds, pred)
    assert r.returncode == 0
    # q1 = 1, q2 and q3 missing = 0: EM = F1 = 100/3
    assert last_json(r.stdout) == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 / 3)}
    assert "2 of 3 questions have no prediction" in r.stderr and "q2" in r.stderr and "q3" in r.stderr


def test_mlqa_zh(tmp_path):
    ds = write_json(tmp_path / "ds.json", dataset("1.0", ("a", ["北京是中国的首都"]), ("b", ["上海。"])))
    pred = write_json(tmp_path / "p.json", {"a": "北京是首都", "b": "上海"})
    r = run_cli("mlqa", ds, pred, "zh")
    assert r.returncode == 0, r.stderr
    # a: F1 10/13, EM 0; b: EM 1, F1 1 -> EM 50, F1 100 * (10/13 + 1) / 2 = 100 * 23/26
    res = last_json(r.stdout)
    assert res["exact_match"] == pytest.approx(50.0, abs=1e-12)
    assert res["f1"] == pytest.approx(100 * 23 / 26, abs=1e-12)
    assert r.stderr == ""  # version 1.0 matches what the MLQA script expects
    # the same files under SQuAD rules: zh strings are single tokens, '。' kept -> a: 0, b: 0
    r = run_cli("squad", ds, pred)
    assert last_json(r.stdout) == {"exact_match": 0.0, "f1": 0.0}
    assert "expects v-1.1, but got dataset with v-1.0" in r.stderr  # warning, like the official script


def _assert_error(r: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    """One stderr line ``evaluate.py: error: ...`` holding ``fragments``, exit ``code`` (common.errors: 2 for a
    usage error, 1 for a data error), nothing on stdout."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("evaluate.py: error: ")
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    assert r.stdout == ""


def test_error_unknown_language(squad_files):
    ds, pred = squad_files
    _assert_error(run_cli("mlqa", ds, pred, "fr"), 2, "'fr'", "ar, de, en, es, hi, vi, zh")


def test_error_missing_file(squad_files, tmp_path):
    ds, pred = squad_files
    missing = tmp_path / "nope.json"
    _assert_error(run_cli("squad", missing, pred), 2, "dataset file not found", str(missing))
    _assert_error(run_cli("squad", ds, missing), 2, "predictions file not found", str(missing))


def test_error_dataset_not_json(squad_files, tmp_path):
    _, pred = squad_files
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n  oops', encoding="utf-8")
    _assert_error(run_cli("squad", bad, pred), 1, str(bad), "not valid JSON: line 2 column 3")


def test_error_dataset_not_squad_format(squad_files, tmp_path):
    _, pred = squad_files
    bad = write_json(tmp_path / "bad.json", {"data": [{"paragraphs": [{"qas": [{"id": "q1", "answers": "Paris"}]}]}]})
    _assert_error(
        run_cli("squad", bad, pred),
        1,
        "not a SQuAD-format dataset",
        "data[0].paragraphs[0].qas[0].answers",
        "expected a non-empty array",
        "got string",
    )
    nodata = write_json(tmp_path / "nodata.json", [1, 2])
    _assert_error(run_cli("mlqa", nodata, pred, "en"), 1, "expected a top-level JSON object", "got array")
    bad_article = write_json(tmp_path / "art.json", {"version": "1.0", "data": [7]})
    _assert_error(run_cli("mlqa", bad_article, pred, "en"), 1, "data[0].paragraphs", "got number")


def test_error_predictions_not_object(squad_files, tmp_path):
    ds, _ = squad_files
    as_list = write_json(tmp_path / "l.json", ["Paris"])
    _assert_error(run_cli("squad", ds, as_list), 1, "expected a JSON object mapping question id", "got array")
    non_str = write_json(tmp_path / "n.json", {"q1": 3})
    _assert_error(run_cli("squad", ds, non_str), 1, "'q1'", "expected a string")


def test_data_errors_exit_1_usage_errors_exit_2(squad_files, tmp_path):
    """A file whose bytes are not UTF-8 is a data error (exit 1), an --out in a missing folder a usage
    error (exit 2): the same codes as every other entry script (common.errors.run_cli)."""
    ds, pred = squad_files
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"q1": "caf\u00e9"}'.encode("latin-1"))
    _assert_error(run_cli("squad", ds, latin1), 1, str(latin1), "is not UTF-8 text: byte 11")
    out = tmp_path / "no" / "such" / "dir.json"
    _assert_error(run_cli("squad", ds, pred, "--out", out), 2, f"cannot write output file {out}")


def test_error_bad_usage_exit_2(squad_files):
    ds, pred = squad_files
    r = run_cli("squad", ds)  # argparse: missing argument
    assert r.returncode == 2 and "prediction_file" in r.stderr


def test_mglm_mode(tmp_path):
    en = write_json(tmp_path / "en.json", dataset("1.1", ("a", ["one"]), ("b", ["two"])))
    de = write_json(tmp_path / "de.json", dataset("1.1", ("a", ["eins"]), ("c", ["drei"])))
    pen = write_json(tmp_path / "pen.json", {"a": "One", "b": "two"})
    pde = write_json(tmp_path / "pde.json", {"a": "zwei"})  # c missing: dropped from the denominator
    r = run_cli("mglm", en, pen, de, pde)
    try:
        import unidecode  # noqa: F401
    except ImportError:
        _assert_error(r, 2, "unidecode")
        return
    assert r.returncode == 0, r.stderr
    # pooled over 3 answered questions: en/a 1, en/b 1, de/a 0 -> 100 * 2/3
    res = last_json(r.stdout)
    assert res["exact_match"] == pytest.approx(200 / 3) and res["questions"] == 3


def test_mglm_mode_needs_pairs(tmp_path):
    en = write_json(tmp_path / "en.json", dataset("1.1", ("a", ["one"])))
    _assert_error(run_cli("mglm", en), 2, "DATASET PRED pairs")


def test_xquad_gold_via_cli(tmp_path):
    if not XQUAD_DIR.is_dir():
        pytest.skip(f"shared XQuAD data not found at {XQUAD_DIR} (../shared/data is absent in this checkout)")
    path = XQUAD_DIR / "xquad.zh.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    gold = {qa["id"]: qa["answers"][0]["text"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
    pred = write_json(tmp_path / "zh.json", gold)
    r = run_cli("squad", path, pred)
    assert r.returncode == 0 and last_json(r.stdout) == {"exact_match": 100.0, "f1": 100.0}
    r = run_cli("mlqa", path, pred, "zh")
    assert r.returncode == 0 and last_json(r.stdout) == {"exact_match": 100.0, "f1": 100.0}


def test_import_budget_no_torch(squad_files):
    """The scorer imports no torch/numpy/deepspeed/sentencepiece (checked with ``-X importtime``).

    Speed itself is not asserted here (house rule: no timed tests); keeping the heavy libraries out is what
    makes ``tools/evaluate.py`` start instantly, and that is what this checks."""
    ds, pred = squad_files
    r = run_cli("squad", ds, pred, python_flags=("-X", "importtime"))
    assert r.returncode == 0
    imported: dict[str, int] = {}
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        imported[name.strip()] = int(self_us)
    assert "tasks.metrics" in imported
    heavy = {m for m in imported if m.split(".")[0] in {"torch", "numpy", "deepspeed", "sentencepiece"}}
    assert not heavy, heavy


def test_sys_modules_after_run(squad_files):
    """Run the CLI in-process in a fresh interpreter and list what ended up in sys.modules."""
    ds, pred = squad_files
    code = (
        "import runpy, sys, json\n"
        f"sys.argv = ['evaluate.py', 'squad', {str(ds)!r}, {str(pred)!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'numpy', 'deepspeed', 'model', 'mpu', 'training', 'data_utils'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
