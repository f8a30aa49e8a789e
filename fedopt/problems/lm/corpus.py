"""Text corpora that need no download, split into topics (= client tasks).

``pydoc``
    CPython's ``pydoc_data.topics.topics``: the 79 help topics of the language reference
    (``help("assert")``...), 466,117 UTF-8 bytes in all, the shortest 202 bytes. Ships
    with every Python.
``fortunes``
    Debian's ``fortunes`` package: one topic per category file of
    ``/usr/share/games/fortunes`` (40 with ``fortunes`` and ``fortunes-min``), entries
    separated by ``%`` lines. Optional: a :class:`~fedopt.errors.ConfigError` names the
    package when the folder is absent.

A corpus is a tuple of topics sorted by name, each a ``uint8`` array of its bytes.
:func:`split_topics` picks the held-out topics (evaluation) and leaves the others for
training; topics shorter than one training window are set aside (``too_short``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedopt import rng
from fedopt.errors import ConfigError

CORPORA = ("pydoc", "fortunes")
FORTUNES_DIR = Path("/usr/share/games/fortunes")


@dataclass(frozen=True)
class Corpus:
    """Named topics and their bytes (``texts[j]``: ``uint8 [len_j]``)."""

    name: str
    topics: tuple[str, ...]
    texts: tuple[np.ndarray, ...]

    @property
    def sizes(self) -> np.ndarray:
        """Bytes per topic, ``int64 [n_topics]``."""
        return np.array([len(t) for t in self.texts], dtype=np.int64)


def _frozen(data: bytes) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    arr.flags.writeable = False
    return arr


def fortunes_available(folder: Path = FORTUNES_DIR) -> bool:
    """Whether Debian's fortune category files are installed in ``folder``."""
    return folder.is_dir() and any(_fortune_files(folder))


def _fortune_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and "." not in p.name)


@lru_cache(maxsize=4)
def load_corpus(name: str, folder: str = str(FORTUNES_DIR)) -> Corpus:
    """The topics of corpus ``name`` (``pydoc`` or ``fortunes``), sorted by topic name.

    Raises
    ------
    ConfigError
        An unknown corpus, or ``fortunes`` without its files.
    """
    if name == "pydoc":
        from pydoc_data.topics import topics

        keys = sorted(topics)
        return Corpus(name, tuple(keys), tuple(_frozen(topics[k].encode()) for k in keys))
    if name == "fortunes":
        path = Path(folder)
        if not fortunes_available(path):
            raise ConfigError(
                f"problem.corpus: 'fortunes' reads Debian's fortune files from {folder}, "
                "which is absent here; install the packages 'fortunes' and 'fortunes-min' "
                "(apt-get install fortunes fortunes-min) or use corpus: pydoc."
            )
        files = _fortune_files(path)
        return Corpus(
            name, tuple(p.name for p in files), tuple(_frozen(p.read_bytes()) for p in files)
        )
    raise ConfigError(f"problem.corpus: unknown corpus {name!r}; use one of {', '.join(CORPORA)}.")


@dataclass(frozen=True)
class TopicSplit:
    """Which topics train and which are held out (indices into the corpus's topics).

    Attributes
    ----------
    train, heldout
        Sorted topic indices; together with ``too_short`` they cover every topic once.
    too_short
        Training topics with fewer than ``window`` bytes (never sampled).
    """

    train: np.ndarray
    heldout: np.ndarray
    too_short: np.ndarray


def split_topics(corpus: Corpus, heldout: int, window: int, split_seed: int) -> TopicSplit:
    """Hold out ``heldout`` topics drawn by ``numpy_seed(split_seed, "lm/heldout")``.

    The held-out topics are the first ``heldout`` of a keyed permutation of all topics;
    of the others, those with at least ``window`` bytes train.

    Raises
    ------
    ConfigError
        ``heldout`` leaves no training topic long enough for one window, or the held-out
        topics hold no full window.
    """
    n = len(corpus.topics)
    if not 1 <= heldout < n:
        raise ConfigError(
            f"problem.heldout_topics: {heldout} of the {n} topics of corpus {corpus.name!r}; "
            f"hold out between 1 and {n - 1} so that some topics train."
        )
    perm = np.random.default_rng(rng.numpy_seed(split_seed, "lm/heldout")).permutation(n)
    held = np.sort(perm[:heldout])
    rest = np.sort(perm[heldout:])
    sizes = corpus.sizes
    long_enough = sizes[rest] >= window
    split = TopicSplit(rest[long_enough], held, rest[~long_enough])
    if len(split.train) == 0:
        raise ConfigError(
            f"problem.seq_len: no training topic of corpus {corpus.name!r} has {window} bytes "
            f"(seq_len + 1); the longest has {int(sizes[rest].max())}. Use a shorter seq_len."
        )
    if int(sizes[held].max()) < window:
        raise ConfigError(
            f"problem.seq_len: the held-out topics hold no window of {window} bytes; use a "
            "shorter seq_len or other held-out topics (split_seed)."
        )
    return split


def heldout_windows(corpus: Corpus, topics: np.ndarray, window: int, count: int) -> np.ndarray:
    """Evaluation windows ``uint8 [m, window]`` of the held-out ``topics``.

    Every non-overlapping window (stride ``window``, from byte 0) of every topic, in topic
    order; when there are more than ``count``, ``count`` of them evenly spaced
    (``numpy.linspace`` over their indices), so the set is fixed by the split alone.
    """
    rows = [
        corpus.texts[j][s : s + window]
        for j in topics.tolist()
        for s in range(0, len(corpus.texts[j]) - window + 1, window)
    ]
    if len(rows) > count:
        pick = np.linspace(0, len(rows) - 1, count).round().astype(np.int64)
        rows = [rows[i] for i in pick.tolist()]
    return np.stack(rows)
