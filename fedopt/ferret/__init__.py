"""Ferret's building blocks: shared random bases (:mod:`~fedopt.ferret.bases`), parameter
blocks and the allocation of bases (:mod:`~fedopt.ferret.blocks`), and the clients'
first-order local training (:mod:`~fedopt.ferret.local`). The algorithm is
:mod:`fedopt.algorithms.ferret`."""
