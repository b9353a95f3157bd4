"""The harness beside the method: what runs ttrv but is not the algorithm.

The method (ttrv.py, grpo.py, rewards.py, rollout.py, answers.py, vlm.py, data.py, eval.py, ...)
sits at the top of the repository, to read next to the paper, and never imports this package.
Here is the rest: cli and eval_cli (the command lines and their endings), run (one run around
ttrv.adapt: data, models, evaluations, files), config (the settings and their checks), families
(each model family's protocol, the protocol tables), precision (bf16 autocast, the frozen
reference, LoRA), batches (prompt workers), processes
and distributed (several GPUs under torchrun), models (loading for a run, model-card names, the
hub), presets with hub, benchmarks, resisc45, shapes, local_data and math_data (datasets),
rundir and report (the run directory, tables, the plot), tiny, tiny_teach, tiny_build and
tiny_math (the offline models, built with pinned numerics), the GRPO-TTA command line and CLIP
loading, and the benchmarks (bench*.py).
"""
