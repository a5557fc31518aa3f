"""Development support, not installed with the package: tests and ``bench/`` import it.

* :mod:`devsupport.netns` — network-namespace "hosts" on one machine, for real multi-host
  ``mpirun`` (root, iproute2);
* :mod:`devsupport.fake_launcher` — a launcher that replays scripted job events on a simulated
  clock, so the study loop is tested in milliseconds without TensorFlow or MPI.
"""
