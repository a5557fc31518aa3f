"""Rehearse a study on a simulated cluster before spending cluster time.

A calibrated trial model (:mod:`explorer.rehearsal.model`: compute from measured runs scaled by
FLOPs and host speed, a ring-allreduce cost on a fabric profile, epochs to target fitted to the
recorded table of real trials) drives the real study loop (:class:`explorer.driver.StudyDriver`)
through a simulated launcher and clock (:mod:`explorer.rehearsal.sim`): the same spaces,
samplers, pruners, feasibility rules and records as a real study, in simulated time.
"""
