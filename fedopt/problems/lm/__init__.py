"""Language-model problems: a small byte transformer tuned on offline text (``tiny_lm``).

:mod:`~fedopt.problems.lm.corpus` (topics of offline corpora),
:mod:`~fedopt.problems.lm.clients` (per-client topic distributions, keyed windows),
:mod:`~fedopt.problems.lm.pretrain` (centralised pre-training, cached) and
:mod:`~fedopt.problems.lm.tiny_lm` (the problem and its oracle).
"""

from fedopt.problems.lm.tiny_lm import TinyLM, TinyLMConfig, TinyLMOracle

__all__ = ["TinyLM", "TinyLMConfig", "TinyLMOracle"]
