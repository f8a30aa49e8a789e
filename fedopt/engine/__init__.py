"""Engines: compile a plan, host nodes on workers, run the schedule.

Modules: ``compile`` (config -> plan), ``worker`` (a shard of nodes), ``comm`` (the
messaging seam), ``driver`` (round schedule), ``local`` (the embedded engine).
``import fedopt.engine`` never imports Ray.
"""
