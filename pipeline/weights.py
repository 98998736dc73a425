"""Weight files and checkpoints read without running code.

``torch.load`` unpickles by default, and a pickle can call any function: a checkpoint or weight file passed
on by someone else could run a payload on load. Everything this project loads goes through
:func:`load_weights`, which uses PyTorch's restricted unpickler (``weights_only``: tensors, numbers, strings
and containers; NumPy scalars too, which checkpoints of earlier versions hold) and refuses anything else,
naming the file.
"""
from __future__ import annotations

import pickle
from pathlib import Path


def load_weights(path: str | Path, map_location="cpu", content: bytes | None = None):
    """The tensors and plain values in ``path`` (or in ``content``, its bytes already read); a file that asks to
    run code when loaded is refused."""
    import io

    import numpy as np
    import torch
    scalars = [np._core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in "?bBhHiIlLqQefdg"}]
    try:
        with torch.serialization.safe_globals(scalars):
            return torch.load(path if content is None else io.BytesIO(content), map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: refused: not a plain weights file; loading it would run code it names "
                         f"({reason})") from None
    except (RuntimeError, EOFError, OSError) as err:  # a cut or damaged file: torch names no file
        if isinstance(err, FileNotFoundError):
            raise
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a complete weights file, truncated or damaged ({reason})") from None
