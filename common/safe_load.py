"""The one way checkpoints and released weight files are read: a weights-only unpickler.

A ``.pt`` file is a pickle, and an ordinary unpickler runs whatever a ``__reduce__`` in it names (a released
``pretrained.pt`` from the web could run any command). ``load`` uses ``torch.load(weights_only=True)``,
whose unpickler builds only tensors, containers and numbers, plus the globals named in ``ALLOWED_GLOBALS``:
exactly the harmless types files of this framework, DeepSpeed 0.19 (ZeRO 0-3, fp32/bf16/fp16) and GLM/mGLM
releases hold. A file that needs anything else is refused with one line naming it and ``--trust-checkpoint``,
the flag with which a user vouches for the files of one run (then, and only then, the full unpickler runs).

DeepSpeed reads its own files (``engine.load_checkpoint``, ``zero_to_fp32``) with ``weights_only=False``;
``deepspeed_engine_loads`` and ``torch_loads`` route those reads through ``load`` for the duration of our
call.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sys
from collections.abc import Iterator
from typing import Any

import torch

from common.errors import DataError

TRUST_FLAG = "--trust-checkpoint"
_torch_load = torch.load  # the real one, also while ``torch_loads`` routes torch.load through ``load``


class UnsafeCheckpointError(DataError):
    """The file needs globals outside the allowlist (code could run while loading it)."""


class UnreadableCheckpointError(DataError):
    """The file is not a torch checkpoint (truncated, random bytes, text)."""


def _numpy_globals() -> list:
    """numpy's RNG state (``np.random.get_state()``: a uint32 array) in RNG files of the previous main and of
    GLM's checkpoints (``np_rng_state``). ``_reconstruct`` only allocates an array; the array's contents go
    through the same restricted unpickler. Pickles from numpy < 2 name the module ``numpy.core``."""
    import numpy as np

    reconstruct = np._core.multiarray._reconstruct
    out: list = [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype]
    for name in ("UInt32DType", "Float64DType", "Int64DType"):  # numpy >= 1.25 pickles dtypes by class
        cls = getattr(np.dtypes, name, None)
        if cls is not None:
            out.append(cls)
    return out


# DeepSpeed 0.19's optimizer files (ZeRO 1-3): the loss scaler object, the ZeRO stage enum and the
# fragment addresses of bf16/ZeRO partitions. Data holders only (no custom __setstate__ / __reduce__).
_DEEPSPEED_GLOBALS = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)


def _deepspeed_globals() -> list:
    """The DeepSpeed classes, when DeepSpeed is loaded (importing it only to read a plain file costs seconds)."""
    if "deepspeed" not in sys.modules:
        return []
    import importlib

    out = []
    for module, name in _DEEPSPEED_GLOBALS:
        try:
            out.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # another DeepSpeed version: its files name what they need
            pass
    return out


def allowed_globals() -> list:
    """Everything a weights-only load may build beyond torch's defaults (tensors, dicts, lists, numbers...)."""
    return [*_numpy_globals(), *_deepspeed_globals()]


_GLOBAL = re.compile(r"GLOBAL (\S+?)(?: |$)")
_CODE_MARKERS = ("GLOBAL", "unrecognized function", "Can only create new object")


def _first_line(e: BaseException) -> str:
    """The reason in one short line (torch wraps unpickler errors in paragraphs of advice: keep the reason)."""
    message = str(e)
    if "WeightsUnpickler error:" in message:
        message = message.split("WeightsUnpickler error:", 1)[1]
    text = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def load(path: str | os.PathLike, *, trust: bool = False, map_location: Any = "cpu", mmap: bool | None = None,
         what: str = "") -> Any:
    """``torch.load`` with the weights-only unpickler and ``allowed_globals()``; with ``trust`` a file that
    needs more is read with the full unpickler. Every failure is one line naming ``path``:
    ``UnsafeCheckpointError`` (needs code, names the global and the flag), ``UnreadableCheckpointError``
    (damaged or not a checkpoint). ``what`` prefixes the message (e.g. ``--load-pretrained``)."""
    where = f"{what} {path}" if what else str(path)
    for attempt in range(2):
        try:
            with torch.serialization.safe_globals(allowed_globals()):
                return _torch_load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            message = str(e)
            names = _GLOBAL.findall(message)
            if attempt == 0 and any(n.startswith("deepspeed.") for n in names) and "deepspeed" not in sys.modules:
                try:
                    import deepspeed  # noqa: F401  (its classes join the allowlist on the retry)
                except ImportError:
                    pass
                else:
                    continue
            if not any(m in message for m in _CODE_MARKERS):
                raise UnreadableCheckpointError(f"{where}: not a readable torch checkpoint ({_first_line(e)})") from None
            if trust:
                return _load_trusted(path, map_location, where)
            needs = ", ".join(dict.fromkeys(names)) or _first_line(e)
            raise UnsafeCheckpointError(
                f"{where}: refused: loading it would run code or build objects a weights-only load does not "
                f"allow ({needs}); if you trust this file, pass {TRUST_FLAG}") from None
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise UnreadableCheckpointError(f"{where}: is a directory, expected a .pt file") from None
        except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, UnicodeDecodeError,
                AttributeError, TypeError) as e:
            if "TorchScript" in str(e):  # a TorchScript archive holds code by design
                if trust:
                    return _load_trusted(path, map_location, where)
                raise UnsafeCheckpointError(f"{where}: refused: a TorchScript archive (holds code); if you trust "
                                            f"this file, pass {TRUST_FLAG}") from None
            raise UnreadableCheckpointError(
                f"{where}: not a readable torch checkpoint, truncated or damaged ({_first_line(e)})") from None
    raise AssertionError("unreachable")


def _load_trusted(path, map_location, where: str) -> Any:
    try:
        return _torch_load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # the file's own code may fail in any way: name the file, one line
        raise UnreadableCheckpointError(f"{where}: loading with {TRUST_FLAG} failed ({_first_line(e)})") from None


@contextlib.contextmanager
def torch_loads(trust: bool) -> Iterator[None]:
    """Route every ``torch.load`` made inside the block (DeepSpeed's ``zero_to_fp32`` reads its partitions
    with ``weights_only=False``) through ``load``. Only for the duration of one of our load calls."""
    real = torch.load

    def guarded(f, map_location=None, *args, **kwargs):
        if not isinstance(f, str | os.PathLike):  # in-memory buffers are not files someone handed us
            return _torch_load(f, map_location, *args, **{**kwargs, "weights_only": True})
        return load(f, trust=trust, map_location=map_location, mmap=kwargs.get("mmap"))

    torch.load = guarded
    try:
        yield
    finally:
        torch.load = real


@contextlib.contextmanager
def deepspeed_engine_loads(ds_engine, trust: bool) -> Iterator[None]:
    """DeepSpeed's hook for checkpoint reads: ``engine.checkpoint_engine.load(path, map_location)`` serves
    the model states, ZeRO optimizer partitions and the state-dict loader of ``load_checkpoint``. Replace it
    by ``load`` for the block, and route stray direct ``torch.load`` calls the same way."""
    ce = ds_engine.checkpoint_engine
    had = "load" in vars(ce)
    real = ce.load

    def guarded(path, map_location=None):
        return load(path, trust=trust, map_location=map_location)

    ce.load = guarded
    try:
        with torch_loads(trust):
            yield
    finally:
        if had:
            ce.load = real
        else:
            del ce.load
