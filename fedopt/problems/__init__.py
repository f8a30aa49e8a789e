"""Problems: node-batched oracles of ``F(x) = sum_i p_i f_i(x)`` over the data nodes.

Importing this package registers every built-in problem in :data:`PROBLEMS`:

========================  =====================================================
``quadratic``             diagonal quadratics, closed-form optimum
``least_squares``         linear least squares, closed-form optimum
``logistic``              binary logistic regression (the benchmark workload)
``digits_softmax``        scikit-learn digits, multinomial logistic regression
``digits_mlp``            scikit-learn digits, one-hidden-layer ReLU network
``digits_model``          scikit-learn digits, any model of ``fedopt.models`` (the CNN)
``fc10_regression``       DIFF2's ``fc_10`` MSE regression, synthetic California-Housing shape
``zo_quadratic``          FZooS's synthetic quadratic, black box (queries only), closed-form F*
``ackley``, ``levy``      client-shifted test functions, black box (queries only)
``digits_attack``         federated black-box adversarial attack on digits (queries only)
``digits_metric``         1 - macro F1 of a perturbed pre-trained MLP on digits (queries only)
``tiny_lm``               byte-level transformer LM, pre-trained, tuned on text topics
``canary``                any problem with per-sample gradients plus one gradient canary
                          (privacy audits, :mod:`fedopt.problems.canary`)
========================  =====================================================
"""

from fedopt.problems import (  # registers
    attack,
    blackbox,
    canary,
    digits,
    fc10,
    least_squares,
    lm,
    logistic,
    metric,
    quadratic,
)
from fedopt.problems.base import OptimumStats, Oracle, Problem, ProblemConfig
from fedopt.problems.partition import PartitionConfig
from fedopt.problems.registry import PROBLEMS, parse_problem_config

__all__ = [
    "PROBLEMS",
    "OptimumStats",
    "Oracle",
    "PartitionConfig",
    "Problem",
    "ProblemConfig",
    "attack",
    "blackbox",
    "canary",
    "digits",
    "fc10",
    "least_squares",
    "lm",
    "logistic",
    "metric",
    "parse_problem_config",
    "quadratic",
]
