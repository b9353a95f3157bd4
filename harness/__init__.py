"""The harness beside the method: what runs ttrv but is not the algorithm.

The method core (the loop ttrv.py, grpo.py, rewards.py, rollout.py, vlm.py, data.py, eval.py)
sits at the top of the repository, to read next to the paper. Here is the rest:
config (the settings and their checks), cli (the command line and its endings), distributed
(several GPUs under torchrun), presets and hub (benchmarks by name), rundir (the run
directory), report (tables and the plot), tiny (the offline models), bench.
"""
