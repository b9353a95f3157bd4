"""tiny.py and tiny_teach.py: the same weights whatever the thread count, two recipes."""

import torch

from harness import config
from harness import tiny, tiny_teach
import vlm


def test_teaching_gives_the_same_weights_whatever_the_thread_count(tmp_path):
    weights = []
    threads = torch.get_num_threads()
    for n in (1, 2):
        torch.set_num_threads(n)
        try:
            out = tiny.build_tiny_model(tmp_path / f"threads-{n}")
            tiny_teach.teach_shapes(out, steps=3, non_answer_share=0.5, log=lambda *a: None)
            assert torch.get_num_threads() == n                    # restored afterwards
        finally:
            torch.set_num_threads(threads)
        weights.append(vlm.load_model(str(out), "cpu", torch.float32).state_dict())
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_both_tiny_models_get_the_tiny_presets_and_their_own_recipe():
    assert set(tiny_teach.RECIPES) == set(config.TINY_MODELS) - {"tiny-math"}   # the VLMs
    assert tiny_teach.RECIPES["tiny-letters"] == tiny_teach.TEACH               # the letters-only recipe
    assert tiny_teach.RECIPES["tiny"]["non_answer_share"] > tiny_teach.TEACH["non_answer_share"] == 0
    for name in tiny_teach.RECIPES:
        cfg = config.parse_args(["--model", name])
        assert (cfg.lr, cfg.max_new_tokens) == (config.TINY_PRESETS["lr"],
                                                config.TINY_PRESETS["max_new_tokens"])
    assert config.parse_args(["--model", "tiny-letters", "--lr", "3e-4"]).lr == 3e-4
