"""Every bad input of the data path gives one line naming the file, no traceback, and its exit code.

Usage errors (a flag or value the user typed) exit 2, data errors (a file whose content is bad) exit 1
(``common/errors.py``). The CLIs run in-process through the same ``run_cli`` wrapper their ``__main__``
uses (fast); a few run as subprocesses to prove the real exit code and the absence of a traceback, and that
``MGLM_DEBUG=1`` shows it.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_CORPUS, SAMPLE_TOKENIZER

from common.errors import EXIT_DATA, EXIT_USAGE, DataError, UsageError, exit_code, run_cli

PY = sys.executable
TINY = str(REPO / "config" / "model" / "glm-tiny.json")  # 256 positions


def cli(main, prog: str, argv: list[str], capsys) -> tuple[int, str]:
    """Run ``main(argv)`` under ``run_cli``; -> (exit code, the one error line). Asserts there is exactly one
    non-empty stderr line, that it is ``<prog>: error: ...`` and that no traceback was printed."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: main(argv), prog)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return e.value.code, lines[0]


def preprocess_cli(argv, capsys) -> tuple[int, str]:
    from tools import preprocess_data

    return cli(preprocess_data.main, "preprocess_data.py", [*map(str, argv), "--no-progress"], capsys)


def pretrain_cli(argv, capsys) -> tuple[int, str]:
    import pretrain_glm

    return cli(pretrain_glm.main, "pretrain_glm.py", [*map(str, argv), "--device", "cpu"], capsys)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A small two-language store of the sample corpus."""
    from data_utils.corpus import preprocess

    out = tmp_path_factory.mktemp("bad") / "store"
    preprocess([SAMPLE_CORPUS / "en.jsonl", SAMPLE_CORPUS / "de.jsonl"], out, SAMPLE_TOKENIZER, progress=False)
    return out


@pytest.fixture
def copy(store, tmp_path) -> Path:
    """A copy of ``store`` a test may damage."""
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    return dst


def pretrain_args(store: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--model-config", TINY, "--train-data", str(store), "--seq-length", "64",
            "--batch-size", "2", "--train-iters", "1", "--log-interval", "1", "--no-tensorboard",
            "--log-dir", str(tmp_path / "logs"), *extra]


# ---------------------------------------------------------------------------------------- the wrapper
@pytest.mark.parametrize("exc, code", [
    (UsageError("x"), EXIT_USAGE), (ValueError("x"), EXIT_USAGE), (FileNotFoundError("x"), EXIT_USAGE),
    (DataError("x"), EXIT_DATA), (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), EXIT_DATA),
    (OSError(errno.ENOSPC, "No space left on device", "f.bin"), EXIT_DATA), (PermissionError("x"), EXIT_DATA),
    (KeyError("x"), None), (TypeError("x"), None), (IndexError("x"), None),
])
def test_exit_code_of_each_kind(exc, code):
    assert exit_code(exc) == code


def test_a_bug_keeps_its_traceback(capsys):
    def main():
        raise KeyError("not a user error")

    with pytest.raises(KeyError):
        run_cli(main, "x.py")


def test_a_multi_line_message_becomes_one_line(capsys):
    def main():
        raise DataError("first\n  second\n")

    with pytest.raises(SystemExit) as e:
        run_cli(main, "x.py")
    assert e.value.code == 1 and capsys.readouterr().err == "x.py: error: first; second\n"


def test_debug_env_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("MGLM_DEBUG", "1")

    def main():
        raise DataError("bad file f")

    with pytest.raises(SystemExit) as e:
        run_cli(main, "x.py")
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" in err and err.rstrip().endswith("x.py: error: bad file f")


# -------------------------------------------------------------------------------- preprocess_data.py
def test_preprocess_empty_folder(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    code, line = preprocess_cli([tmp_path / "in", "-o", tmp_path / "o", "--tokenizer-model", SAMPLE_TOKENIZER], capsys)
    assert code == EXIT_DATA and f"{tmp_path / 'in'}: folder holds no input files" in line


def test_preprocess_unknown_input_type(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("x\n")
    code, line = preprocess_cli([tmp_path / "a.csv", "-o", tmp_path / "o", "--tokenizer-model", SAMPLE_TOKENIZER], capsys)
    assert code == EXIT_USAGE and f"{tmp_path / 'a.csv'}: unknown input type" in line and ".jsonl" in line


def test_preprocess_missing_input(tmp_path, capsys):
    code, line = preprocess_cli([tmp_path / "nope", "-o", tmp_path / "o", "--tokenizer-model", SAMPLE_TOKENIZER], capsys)
    assert code == EXIT_USAGE and line.endswith(f"input not found: {tmp_path / 'nope'}")


def test_preprocess_existing_store_and_output_that_is_a_file(store, tmp_path, capsys):
    src = SAMPLE_CORPUS / "en.jsonl"
    code, line = preprocess_cli([src, "-o", store, "--tokenizer-model", SAMPLE_TOKENIZER], capsys)
    assert code == EXIT_USAGE and f"output {store} exists" in line and "--overwrite" in line
    (tmp_path / "f").write_text("x")
    for extra in ([], ["--overwrite"]):
        code, line = preprocess_cli([src, "-o", tmp_path / "f", "--tokenizer-model", SAMPLE_TOKENIZER, *extra], capsys)
        assert code == EXIT_USAGE and f"output {tmp_path / 'f'} is a file" in line
    assert (tmp_path / "f").read_text() == "x"


def test_preprocess_missing_or_garbage_tokenizer(tmp_path, capsys):
    src = SAMPLE_CORPUS / "en.jsonl"
    code, line = preprocess_cli([src, "-o", tmp_path / "o", "--tokenizer-model", tmp_path / "no.model"], capsys)
    assert code == EXIT_USAGE and str(tmp_path / "no.model") in line
    (tmp_path / "bad.model").write_bytes(os.urandom(300))
    code, line = preprocess_cli([src, "-o", tmp_path / "o", "--tokenizer-model", tmp_path / "bad.model"], capsys)
    assert code == EXIT_DATA and f"{tmp_path / 'bad.model'} is not a valid sentencepiece model" in line
    assert not (tmp_path / "o").exists()


def test_preprocess_damaged_gzip_names_the_file(tmp_path, capsys):
    data = gzip.compress(b'{"text": "hello world"}\n' * 200)
    (tmp_path / "en.jsonl.gz").write_bytes(data[: len(data) // 2])  # truncated stream
    (tmp_path / "de.jsonl.gz").write_bytes(b"not gzip at all")
    for name in ("en.jsonl.gz", "de.jsonl.gz"):
        code, line = preprocess_cli([tmp_path / name, "-o", tmp_path / "o", "--tokenizer-model", SAMPLE_TOKENIZER], capsys)
        assert code == EXIT_DATA and f"{tmp_path / name}: cannot read it" in line
        assert not (tmp_path / "o").exists()


def test_preprocess_non_utf8_line_is_named_and_counted(tmp_path, caplog):
    """A non-UTF-8 document is skipped with a warning naming file and line (the other documents are kept) and
    counted in the summary and index.json: never silently."""
    from data_utils.corpus import preprocess

    (tmp_path / "en.txt").write_bytes(b"good one\n\nbad \xff byte\nmore\n\nlast good\n")
    with caplog.at_level("WARNING"):
        summary = preprocess([tmp_path / "en.txt"], tmp_path / "o", SAMPLE_TOKENIZER, progress=False)
    assert summary.skipped == {"invalid_utf8": 1} and summary.languages["en"]["docs"] == 2
    assert [r.getMessage() for r in caplog.records if "invalid_utf8" in r.getMessage()] == [
        f"skipped {tmp_path / 'en.txt'}:3 (invalid_utf8): byte 0xff at column 5 is not UTF-8"]
    assert json.loads((tmp_path / "o" / "index.json").read_text())["skipped"] == {"invalid_utf8": 1}


def test_preprocess_subprocess_exit_code_and_no_traceback(tmp_path):
    """The real script: exit 1 and one line for a data error; MGLM_DEBUG=1 adds the traceback."""
    (tmp_path / "in").mkdir()
    cmd = [PY, "tools/preprocess_data.py", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--tokenizer-model",
           str(SAMPLE_TOKENIZER)]
    env = {k: v for k, v in os.environ.items() if k != "MGLM_DEBUG"}
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.splitlines() == [
        f"preprocess_data.py: error: {tmp_path / 'in'}: folder holds no input files (.jsonl, .jsonl.gz, .txt, "
        ".txt.gz, .json.gz)"], p.stderr
    p = subprocess.run(cmd, cwd=REPO, env={**env, "MGLM_DEBUG": "1"}, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Traceback" in p.stderr and "folder holds no input files" in p.stderr
    p = subprocess.run(cmd[:2] + [str(tmp_path / "in"), "--tokenizer-model", str(SAMPLE_TOKENIZER)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)  # argparse: -o missing
    assert p.returncode == 2 and "Traceback" not in p.stderr


# ----------------------------------------------------------------------------------------- the store
def test_max_token_id_is_recorded(store):
    from data_utils.corpus import TokenStore

    for lang in ("en", "de"):
        s = TokenStore(store / lang)
        assert s.meta["max_token_id"] == int(np.asarray(s.tokens).max())


def _write_token_ids(folder: Path, ids: list[int]) -> None:
    """Overwrite a language store with one document of ``ids`` (meta.json kept consistent)."""
    np.asarray(ids, dtype="<i4").tofile(folder / "tokens.bin")
    np.save(folder / "offsets.npy", np.asarray([0, len(ids)], dtype="<i8"), allow_pickle=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(num_docs=1, num_tokens=len(ids), max_token_id=max(ids))
    (folder / "meta.json").write_text(json.dumps(meta))


def test_token_ids_outside_the_vocabulary(copy, tmp_path, capsys):
    """Recorded max_token_id above the tokenizer's 8000 pieces: refused when the store is opened, before any
    batch (it was an IndexError deep in the data loader)."""
    _write_token_ids(copy / "de", [5, 9000, 7] * 40)
    code, line = pretrain_cli(pretrain_args(copy, tmp_path), capsys)
    assert code == EXIT_DATA and f"{copy / 'de' / 'tokens.bin'} holds token id 9000" in line and "8000" in line


def test_store_without_max_token_id_is_scanned_once(copy):
    """A store written before max_token_id existed still opens (one numpy pass checks its ids)."""
    from data_utils.corpus import TokenStore, open_stores

    for lang in ("en", "de"):
        meta = json.loads((copy / lang / "meta.json").read_text())
        del meta["max_token_id"]
        (copy / lang / "meta.json").write_text(json.dumps(meta))
    stores = open_stores(copy, vocab_size=8000)
    assert sorted(stores) == ["de", "en"] and stores["en"].num_tokens > 0
    _write_token_ids(copy / "de", [1, 2, 3])
    meta = json.loads((copy / "de" / "meta.json").read_text())
    del meta["max_token_id"]
    (copy / "de" / "meta.json").write_text(json.dumps(meta))
    np.asarray([1, -4, 3], dtype="<i4").tofile(copy / "de" / "tokens.bin")
    with pytest.raises(DataError, match=r"de/tokens.bin holds token id -4, outside the tokenizer's 8000 pieces"):
        TokenStore(copy / "de", vocab_size=8000)
    np.asarray([1, 8000, 3], dtype="<i4").tofile(copy / "de" / "tokens.bin")
    with pytest.raises(DataError, match="holds token id 8000"):
        TokenStore(copy / "de", vocab_size=8000)
    assert TokenStore(copy / "de").num_tokens == 3  # without a vocabulary: no check, as before


def test_truncated_offsets(copy, tmp_path, capsys):
    path = copy / "en" / "offsets.npy"
    path.write_bytes(path.read_bytes()[:-12])
    code, line = pretrain_cli(pretrain_args(copy, tmp_path), capsys)
    assert code == EXIT_DATA and f"{path}: not a readable offsets array" in line
    path.write_bytes(b"")
    code, line = pretrain_cli(pretrain_args(copy, tmp_path), capsys)
    assert code == EXIT_DATA and f"{path}: not a readable offsets array" in line


def test_missing_store_files(copy):
    from data_utils.corpus import TokenStore

    (copy / "en" / "tokens.bin").unlink()
    with pytest.raises(DataError, match=r"en/tokens.bin is missing"):
        TokenStore(copy / "en")
    (copy / "de" / "offsets.npy").unlink()
    with pytest.raises(DataError, match=r"de/offsets.npy: not a readable offsets array \(FileNotFoundError"):
        TokenStore(copy / "de")


def test_offsets_that_disagree_with_meta(copy):
    from data_utils.corpus import TokenStore

    path = copy / "en" / "offsets.npy"
    off = np.load(path)
    np.save(path, off[:-1], allow_pickle=False)  # one document fewer: still a valid array
    with pytest.raises(DataError, match=r"offsets.npy \(\d+ documents, \d+ tokens\) disagrees with .*meta.json"):
        TokenStore(copy / "en")
    off[2] = off[1] - 1
    np.save(path, off, allow_pickle=False)
    with pytest.raises(DataError, match="expected non-decreasing int64 document offsets"):
        TokenStore(copy / "en")


@pytest.mark.parametrize("text, fragment", [
    ('{"languages": ["en", "de"],\n  "tokenizer": {', "index.json:2: broken store index (invalid JSON"),
    ("[1, 2]", "index.json: broken store index: expected a JSON object, got list"),
    ('{"languages": "en"}', "index.json: field 'languages': expected list, got 'en'"),
    ('{"languages": ["../x"]}', "index.json: field 'languages': expected a list of language codes"),
])
def test_broken_index_json(copy, tmp_path, capsys, text, fragment):
    (copy / "index.json").write_text(text)
    code, line = pretrain_cli(pretrain_args(copy, tmp_path, "--tokenizer-model", str(SAMPLE_TOKENIZER)), capsys)
    assert code == EXIT_DATA and f"{copy}/{fragment}" in line


def test_broken_store_meta_json(copy):
    from data_utils.corpus import TokenStore

    (copy / "en" / "meta.json").write_text('{"format": "mglm-token-store", "version": 1,\n"language": en}')
    with pytest.raises(DataError, match=r"en/meta.json:2: broken store meta.json \(invalid JSON"):
        TokenStore(copy / "en")
    (copy / "en" / "meta.json").write_text('{"format": "mglm-token-store", "version": 1, "language": "en", '
                                           '"num_docs": "3", "num_tokens": 4}')
    with pytest.raises(DataError, match=r"en/meta.json: field 'num_docs': expected int, got '3'"):
        TokenStore(copy / "en")


# ------------------------------------------------------------------------------------- model config
def test_model_config_field_of_the_wrong_type(store, tmp_path, capsys):
    cfg = json.loads(Path(TINY).read_text())
    cfg["num_layers"] = "two"
    path = tmp_path / "m.json"
    path.write_text(json.dumps(cfg))
    args = pretrain_args(store, tmp_path)
    args[1] = str(path)
    code, line = pretrain_cli(args, capsys)
    assert code == EXIT_DATA and line.endswith(f"{path}: field 'num_layers': expected int, got 'two' (str)")


@pytest.mark.parametrize("field, value, expected", [
    ("hidden_dropout", "0.1", "expected float"), ("checkpoint_activations", 1, "expected bool"),
    ("hidden_size", 64.0, "expected int"), ("num_layers", True, "expected int"),
    ("intermediate_size", "big", "expected int or null"),
])
def test_model_config_types_follow_the_dataclass(tmp_path, field, value, expected):
    from model import GLMConfig

    path = tmp_path / "m.json"
    path.write_text(json.dumps({field: value}))
    with pytest.raises(DataError, match=f"{path}: field '{field}': {expected}, got "):
        GLMConfig.from_json_file(path)
    ok = GLMConfig.from_dict({"hidden_dropout": 0, "intermediate_size": None, "checkpoint_activations": True})
    assert ok.hidden_dropout == 0 and ok.intermediate_size is None


def test_deepspeed_json_broken(store, tmp_path, capsys):
    path = tmp_path / "ds.json"
    path.write_text('{"train_micro_batch_size_per_gpu": 2,\n "zero_optimization": {stage: 1}}')
    code, line = pretrain_cli(pretrain_args(store, tmp_path, "--deepspeed", "--deepspeed_config", str(path)), capsys)
    assert code == EXIT_DATA and f"{path}:2: broken DeepSpeed config (invalid JSON" in line


def test_model_config_broken_json(tmp_path):
    from model import GLMConfig

    path = tmp_path / "m.json"
    path.write_text('{\n"num_layers": 2,\n}')
    with pytest.raises(DataError, match=f"{path}:3: broken model config \\(invalid JSON"):
        GLMConfig.from_json_file(path)


def test_model_config_subprocess(store, tmp_path):
    """The real pretrain_glm.py: a data error exits 1 with one stderr line and no traceback."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"num_layers": "two"}))
    args = pretrain_args(store, tmp_path)
    args[1] = str(path)
    env = {k: v for k, v in os.environ.items() if k != "MGLM_DEBUG"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    p = subprocess.run([PY, "pretrain_glm.py", *args, "--device", "cpu"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and [ln for ln in p.stderr.splitlines() if ln.strip()] == [
        f"pretrain_glm.py: error: {path}: field 'num_layers': expected int, got 'two' (str)"], p.stderr


# ----------------------------------------------------------------------------------------- positions
def _model_config(argv: list[str], base_config: dict | None = None):
    from model.config import build_model_config
    from training.arguments import DataArgs, ModelArgs, TrainArgs, _take, build_parser

    ns = build_parser().parse_args(argv)
    return build_model_config(_take(ModelArgs, ns), 8064, seq_length=_take(DataArgs, ns).seq_length,
                              tensor_parallel_size=_take(TrainArgs, ns).model_parallel_size, base_config=base_config)


def test_seq_length_above_the_positions_is_an_error():
    """glm-tiny has 256 positions: --seq-length 512 was silently grown to 512; now an error naming both and
    the flag that raises them."""
    with pytest.raises(UsageError) as e:
        _model_config(["--model-config", TINY, "--seq-length", "512"])
    msg = str(e.value)
    assert f"--seq-length 512 exceeds the model's 256 positions ({TINY})" in msg
    assert "--max-position-embeddings 512" in msg
    with pytest.raises(UsageError, match="exceeds the model's 512 positions .GLMConfig's default"):
        _model_config(["--seq-length", "1024"])
    assert _model_config(["--model-config", TINY, "--seq-length", "256"]
                         ).max_sequence_length == 256


def test_explicit_max_position_embeddings_is_honoured():
    c = _model_config(["--model-config", TINY, "--seq-length", "64",
                       "--max-position-embeddings", "1024"])
    assert c.max_sequence_length == 1024
    c = _model_config(["--model-config", TINY, "--seq-length", "64",
                       "--max-position-embeddings", "128"])
    assert c.max_sequence_length == 128  # below the config's 256: honoured too
    with pytest.raises(UsageError, match=r"--seq-length 512 exceeds --max-position-embeddings 128; raise"):
        _model_config(["--seq-length", "512", "--max-position-embeddings", "128"])


def test_positions_of_a_pretrained_checkpoint():
    """Finetuning / --load-pretrained: the positions come from the checkpoint's recorded config; a longer
    --seq-length is refused unless --max-position-embeddings asks for a larger table."""
    base = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "max_sequence_length": 128}
    assert _model_config(["--seq-length", "96"], base).max_sequence_length == 128
    with pytest.raises(UsageError) as e:
        _model_config(["--seq-length", "256"], base)
    assert "--seq-length 256 exceeds the 128 positions of the pretrained model" in str(e.value)
    assert "--max-position-embeddings 256" in str(e.value)
    assert _model_config(["--seq-length", "256", "--max-position-embeddings", "256"], base).max_sequence_length == 256


def test_seq_length_error_from_the_cli(store, tmp_path, capsys):
    code, line = pretrain_cli(pretrain_args(store, tmp_path, "--seq-length", "512"), capsys)
    assert code == EXIT_USAGE and "--seq-length 512 exceeds the model's 256 positions" in line


_RAISE = ("import sys; from common.errors import DataError, UsageError, run_cli\n"
          "def main():\n    raise {cls}('{msg}')\n"
          "run_cli(main, 'x.py')\n")


@pytest.mark.parametrize("env, cls, code, expected", [
    ({}, "UsageError", 2, ["x.py: error: bad flag"]),  # one process: unchanged
    ({"RANK": "0", "WORLD_SIZE": "8"}, "UsageError", 2, ["x.py: error: bad flag"]),
    ({"RANK": "3", "WORLD_SIZE": "8"}, "UsageError", 2, []),  # every rank sees it: rank 0 says it once
    ({"RANK": "3", "WORLD_SIZE": "8"}, "DataError", 1, ["[rank 3] x.py: error: bad flag"]),  # maybe its own
    ({"RANK": "3", "WORLD_SIZE": "8"}, "FileNotFoundError", 2, ["[rank 3] x.py: error: bad flag"]),  # one node's
])
def test_errors_of_a_multi_process_run(env, cls, code, expected):
    """Under torchrun / the deepspeed launcher (RANK, WORLD_SIZE in the env) a UsageError prints on global
    rank 0 only; any other handled error prints on the rank that hit it, with [rank N]."""
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MGLM_DEBUG")}
    p = subprocess.run([PY, "-c", _RAISE.format(cls=cls, msg="bad flag")], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env={**clean, "PYTHONPATH": str(REPO), **env})
    assert p.returncode == code and p.stderr.splitlines() == expected, p.stderr


def _parsers():
    import generate_samples
    from tasks.cli import build_parser as finetune_parser
    from training.arguments import build_parser as pretrain_parser

    return {"pretrain_glm": pretrain_parser(), "finetune_glm": finetune_parser("xnli"),
            "generate_samples": generate_samples.build_parser()}


@pytest.mark.parametrize("name", ["pretrain_glm", "finetune_glm", "generate_samples"])
@pytest.mark.parametrize("env, usage_printed", [({}, True), ({"RANK": "0", "WORLD_SIZE": "4"}, True),
                                                ({"RANK": "2", "WORLD_SIZE": "4"}, False)])
def test_command_line_errors_print_once_per_run(monkeypatch, capsys, name, env, usage_printed):
    """argparse's own errors (an unknown flag) follow the UsageError rule: under a launcher only global
    rank 0 prints the usage message; every rank exits 2."""
    for k in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    parser = _parsers()[name]
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--no-such-flag"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert ("unrecognized arguments: --no-such-flag" in err) is usage_printed, err
    assert (err == "") is not usage_printed


def test_errors_of_a_real_two_process_gloo_run(tmp_path):
    """Two gloo processes (torch.distributed initialised, no launcher env): the shared UsageError is one
    line from rank 0; a DataError of rank 1 alone is its line with [rank 1]."""
    import torch.multiprocessing as mp

    mp.start_processes(_two_rank_worker, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    usage = [(tmp_path / f"usage{r}.txt").read_text() for r in range(2)]
    data = [(tmp_path / f"data{r}.txt").read_text() for r in range(2)]
    assert usage == ["2|x.py: error: bad flag\n", "2|"]
    assert data == ["0|", "1|[rank 1] x.py: error: only mine\n"]


def _two_rank_worker(rank: int, world: int, out: str) -> None:
    import contextlib
    import io

    import torch.distributed as dist

    os.environ.pop("RANK", None), os.environ.pop("WORLD_SIZE", None)
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)

    def attempt(name: str, main) -> None:
        err, code = io.StringIO(), 0
        with contextlib.redirect_stderr(err):
            try:
                run_cli(main, "x.py")
            except SystemExit as e:
                code = e.code
        Path(out, f"{name}{rank}.txt").write_text(f"{code}|{err.getvalue()}")

    def usage():
        raise UsageError("bad flag")

    def data():
        if rank == 1:
            raise DataError("only mine")

    attempt("usage", usage)
    attempt("data", data)
    dist.destroy_process_group()


def test_every_command_line_goes_through_run_cli():
    """Each script a user runs (entry scripts, tools/, the mT5 baseline) hands its main to
    common.errors.run_cli in its ``__main__`` block, so bad input gets the same line and exit codes."""
    scripts = [*REPO.glob("*.py"), *(REPO / "tools").glob("*.py"), REPO / "mt5" / "finetune_mt5.py"]
    mains = [p for p in scripts if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")]
    assert len(mains) >= 11
    bad = [p.name for p in mains
           if "run_cli(" not in p.read_text(encoding="utf-8").split('if __name__ == "__main__":', 1)[1]]
    assert not bad, bad


def test_plot_and_export_speak_run_cli(tmp_path, capsys):
    """tools/plot.py and tools/export_hf.py: a broken metrics.jsonl is a data error (1), an output folder
    that is not empty a usage error (2); each one line naming the file (they printed "error: ..." and exit 2
    for both)."""
    from tools import export_hf, plot

    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.jsonl").write_text('{"group": "train", "step": 1, "loss": 2.0}\n{"group": \n')
    code, line = cli(plot.main, "plot.py", [str(run)], capsys)
    assert code == EXIT_DATA and f"{run / 'logs' / 'metrics.jsonl'}:2: not a JSON line" in line
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text("{}")
    code, line = cli(export_hf.main, "export_hf.py", [str(run), str(out)], capsys)
    assert code == EXIT_USAGE and f"{out} exists and is not empty; pass --overwrite" in line


def test_generation_input_file_that_is_not_utf8(tmp_path):
    from generate_samples import read_prompts

    (tmp_path / "p.txt").write_bytes(b"first [MASK]\nsecond\nthird \xe9 [MASK]\n")
    with pytest.raises(DataError, match=f"--input-file {tmp_path / 'p.txt'}:3: byte 0xe9 is not UTF-8"):
        read_prompts(str(tmp_path / "p.txt"))
    (tmp_path / "p.txt").write_bytes(b"first [MASK]\n\nthird [MASK]\n")
    assert read_prompts(str(tmp_path / "p.txt")) == [(1, "first [MASK]"), (3, "third [MASK]")]


@pytest.mark.slow
def test_positions_of_a_real_pretrained_checkpoint(store, tmp_path, capsys):
    """finetune_glm / pretrain_glm --load-pretrained of a glm-tiny checkpoint (256 positions): --seq-length 512
    is refused before any tensor is read (it used to grow the table silently); the checkpoint's own config
    supplies the positions, so pretraining from it needs no --model-config."""
    from task_fixtures import TASK_DATA, pretrain_tiny

    import finetune_glm

    ckpt = pretrain_tiny(SAMPLE_TOKENIZER, tmp_path / "pre", steps=1)
    common = ["--load-pretrained", str(ckpt), "--seq-length", "512", "--device", "cpu", "--no-tensorboard"]
    code, line = cli(finetune_glm.main, "finetune_glm.py", [
        "--task", "xnli", "--data-dir", str(TASK_DATA / "xnli" / "xtreme"), "--epochs", "0", *common], capsys)
    assert code == EXIT_USAGE and "--seq-length 512 exceeds the 256 positions of the pretrained model" in line
    assert "--max-position-embeddings 512" in line
    args = ["--train-data", str(store), "--train-iters", "1", "--log-dir", str(tmp_path / "logs")]
    code, line = pretrain_cli([*args, *common], capsys)
    assert code == EXIT_USAGE and "--seq-length 512 exceeds the 256 positions of the pretrained model" in line
    import pretrain_glm

    r = pretrain_glm.main([*args, "--load-pretrained", str(ckpt), "--seq-length", "64", "--batch-size", "2",
                           "--device", "cpu", "--no-tensorboard", "--save", str(tmp_path / "ck")])
    # glm-tiny's 256 positions from the checkpoint's meta.json (GLMConfig's default 512 grew its table before)
    meta = json.loads((tmp_path / "ck" / "global_step1" / "meta.json").read_text())
    assert r["step"] == 1 and meta["model_config"]["max_sequence_length"] == 256
