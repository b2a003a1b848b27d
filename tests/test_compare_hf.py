"""benchmarks/compare_hf.py --quick: every selected case runs on both sides and the JSON has the fields the
README table and the issue's checks read."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

from benchmarks.compare_hf import cases, main  # noqa: E402


def test_case_names_cover_the_issue() -> None:
    names = set(cases(quick=False))
    assert names == {"train/small", "train/base"} | {f"decode/{m}/b{b}" for m in ("greedy", "sample", "beam")
                                                     for b in (1, 8, 32)}
    small, base = cases(False)["train/small"], cases(False)["train/base"]
    assert (small.dims.layers, small.dims.hidden, small.seq, small.batch, small.dims.vocab) == (4, 256, 256, 8, 32000)
    assert (base.dims.layers, base.dims.hidden, base.seq, base.batch) == (12, 512, 512, 4)
    beam = cases(False)["decode/beam/b32"]
    assert (beam.context, beam.new_tokens, beam.num_beams, beam.dims.layers, beam.dims.hidden) == (512, 64, 5, 4, 256)


def test_quick_run_writes_json(tmp_path) -> None:
    out_file = tmp_path / "cmp.json"
    out = main(["--quick", "--repeats", "2", "--cases", "train/small", "decode/*/b2", "--out", str(out_file)])
    assert json.loads(out_file.read_text()) == json.loads(json.dumps(out))
    assert set(out["cases"]) == {"train/small", "decode/greedy/b2", "decode/sample/b2", "decode/beam/b2"}
    assert out["quick"] is True and out["matmul_flops"] > 0
    for name, c in out["cases"].items():
        assert len(c["ours_times"]) == len(c["hf_times"]) == 2, name
        assert c["ratio"] == pytest.approx(c["ours_s"] / c["hf_s"]), name
        if c["kind"] == "train":
            assert c["ours_matmul_fraction"] == pytest.approx(c["model_flops_per_step"] / c["ours_s"] / out["matmul_flops"])
        else:
            assert c["ours_tokens_per_s"] == pytest.approx(c["batch"] * c["new_tokens"] / c["ours_s"])


def test_unknown_case_is_one_clear_error() -> None:
    with pytest.raises(SystemExit, match="--cases nope matches none of: train/small"):
        main(["--quick", "--cases", "nope"])
