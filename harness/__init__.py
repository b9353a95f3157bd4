"""The harness beside the method: what runs ttrv but is not the algorithm.

The method core (the loop ttrv.py, grpo.py, rewards.py, answers.py, rollout.py, vlm.py, data.py,
eval.py)
sits at the top of the repository, to read next to the paper. Here is the rest:
config (the settings and their checks), cli (the command line and its endings), plain (the
N-copies reference sampler and log-probs), distributed
(several GPUs under torchrun), models (model-card names, the hub's reachability), presets
(`load_dataset`, benchmarks by name) with hub, benchmarks and resisc45 beneath it, shapes and
local_data (datasets that need no hub), rundir (the run directory), report (tables and the
plot), tiny, tiny_teach and tiny_math (the offline models; tiny_math also its dataset),
bench_models and bench_logprob (what bench.py builds and measures).
"""
