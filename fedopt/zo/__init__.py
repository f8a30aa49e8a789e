"""Surrogate mathematics of trajectory-informed zeroth-order optimisation (FZooS).

Shu, Lin, Dai & Low, "Federated Zeroth-Order Optimization using Trajectory-Informed
Surrogate Gradients" (FZooS): each client fits a Gaussian process to its own query
history and uses the posterior mean of the *derived* (gradient) GP as its gradient
estimate; a random-Fourier-feature surrogate, whose weights can be averaged, corrects
client drift.

* :mod:`fedopt.zo.kernels`: squared-exponential and Matern-5/2 kernels with their first
  derivative and the gradient prior covariance;
* :mod:`fedopt.zo.gp`: min-max scaling, nearest-neighbour neighbourhoods, the batched
  GP fit, the closed-form posterior mean gradient and the gradient posterior
  covariance scores that pick active queries;
* :mod:`fedopt.zo.rff`: random Fourier features drawn from the keyed counter RNG, the
  dual ridge fit of their weights and the surrogate's gradient.

Everything works on client batches (a leading dimension ``c``) with padded, masked
histories, so one Cholesky factorisation call serves every client.
"""

from fedopt.zo import gp, kernels, rff

__all__ = ["gp", "kernels", "rff"]
