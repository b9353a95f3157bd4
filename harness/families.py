"""Each model family's protocol and the run protocols' settings: the tables the model seam (vlm.py)
leaves to the harness.

A family is keyed by config.model_type (FAMILIES) or by a fragment of the checkpoint's name
(NAMED_FAMILIES): which parameters train, where LoRA adapters go, how images are cut, and the
sampling temperature of the official runs and of TTRL. The protocols (--protocol official / ttrl)
are the settings those runs used (docs/protocols.md). No torch here: harness/config.py reads the
protocol tables before anything heavy loads.

    families.official_temperature(model)   # 1.5 for Qwen2.5-VL (--protocol official)
    families.freeze_vision(model)          # the family's default: InternVL frozen, Qwen-VL trained
    families.set_tiling(processor)         # InternVL: 1-12 tiles and a thumbnail per image
"""

# The language model's attention and MLP projections (Qwen2 / Llama blocks): where --lora-rank
# puts its adapters (harness/lora.py) unless a family lists its own `lora_modules`. A family whose
# vision tower trains also gets adapters on every linear layer of the tower.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Each family's protocol, as the official runs set it; keyed by config.model_type. Families
# not listed get the defaults (vision trains, the template's own system prompt, the
# processor's own image settings, LORA_MODULES).
FAMILIES = {
    # Every Qwen2.5-VL log of the official runs samples at 1.5 (run.sh and the paper say 1.0).
    "qwen2_5_vl": dict(official_temperature=1.5),
    "internvl": dict(
        official_temperature=1.0,          # the InternVL logs sample at 1.0
        # The official code freezes InternVL's vision tower (the projector trains).
        freeze_vision=True,
        # LoRA: the Qwen2 text model's projections and the projector's two layers, which the
        # official protocol trains (our choice: adapters there rather than full weights).
        lora_modules=LORA_MODULES + ("linear_1", "linear_2"),
        # Up to 12 tiles plus a thumbnail, as InternVL3 was trained and evaluated (the
        # checkpoint's preprocessor_config says crop_to_patches false; InternVLProcessor turns
        # it on itself, and we pass all three explicitly so neither default decides).
        image_kwargs=dict(crop_to_patches=True, min_patches=1, max_patches=12),
        processor="InternVLProcessor",
    ),
}
# No system prompt for InternVL: the official runs use none, and the -hf chat template adds
# none (Qwen's template adds "You are a helpful assistant." itself, as in its official runs).
# vlm.prompt_inputs never writes a system turn, so each family gets its own template's behaviour.

TEXT_DEFAULTS = dict(ttrl_temperature=0.6)    # TTRL samples other text models at 0.6
# Text families by a fragment of the checkpoint's name, matched case-insensitively in its
# name_or_path (Qwen2.5, Qwen2.5-Math and tiny-math all have model_type "qwen2").
NAMED_FAMILIES = {"qwen2.5-math": dict(ttrl_temperature=1.0),   # TTRL's Qwen2.5-Math scripts
                  "tiny-math": dict(ttrl_temperature=1.0)}      # its template (tiny_math.py)


# --protocol official: the official runs' settings (docs/protocols.md). Family-dependent values
# (temperature) are None here and filled by official_temperature once the model is loaded.
OFFICIAL = dict(rollouts=32, train_rollouts=16, entropy="normalized", no_answer="text",
                answer_reader="official", adv_ddof=1, fixed_adaptation_set=True, prompts_per_step=4,
                temperature=None)

# --protocol ttrl: TTRL's Qwen2.5-Math-1.5B scripts (docs/protocols.md, methods-notes section 1).
# The whole benchmark is the adaptation set (num_samples None: all of it, labels stripped);
# temperature None: per family, ttrl_temperature (1.0 Qwen2.5-Math, 0.6 other text models).
TTRL = dict(rollouts=64, train_rollouts=32, lr=5e-7, warmup_ratio=0.03, beta=0.001,
            clip_eps=0.2, loss_agg="token_mean", temperature=None, max_new_tokens=3072,
            num_samples=None, no_answer="own", eval_samples=16, reward="majority",
            majority_match="grade", base_majority=True)
# Per benchmark (TTRL's scripts): episodes and prompts per step. Other datasets keep the defaults.
TTRL_BENCHMARKS = {"aime24": dict(epochs=80, prompts_per_step=8),
                   "amc23": dict(epochs=30, prompts_per_step=8),
                   "math500": dict(epochs=10, prompts_per_step=32)}


def family(model) -> dict:
    """This model's protocol entries: NAMED_FAMILIES by its name, else FAMILIES by model_type;
    a text-only model's over TEXT_DEFAULTS ({} for a VLM without an entry)."""
    config = model.config
    name = str(getattr(config, "name_or_path", "") or getattr(config, "_name_or_path", "")).lower()
    text = not any(hasattr(config, k) for k in ("vision_config", "image_token_id"))
    named = next((f for key, f in NAMED_FAMILIES.items() if key in name), None)
    own = named or FAMILIES.get(getattr(config, "model_type", None), {})
    return {**TEXT_DEFAULTS, **own} if text else own


def official_temperature(model) -> float:
    """The sampling temperature of the official runs for this model's family (--protocol
    official): 1.5 for Qwen2.5-VL, 1.0 for InternVL and, as run.sh says, for any other."""
    return family(model).get("official_temperature", 1.0)


def ttrl_temperature(model) -> float:
    """TTRL's rollout temperature (--protocol ttrl): 1.0 for Qwen2.5-Math, 0.6 for other text
    models (TTRL's scripts); a VLM without an entry: 1.0, the paper's."""
    return family(model).get("ttrl_temperature", 1.0)


def protocol_temperature(model, protocol: str) -> float:
    """--protocol official / ttrl leave the temperature to the family, known once loaded."""
    return (ttrl_temperature if protocol == "ttrl" else official_temperature)(model)


def is_vision(name: str) -> bool:
    """Whether a parameter or module name lies in the vision tower (InternVL's `vision_tower`,
    Qwen-VL's `visual` with its merger; InternVL's `multi_modal_projector` is not)."""
    return "visual" in name or "vision" in name


def freeze_vision(model, freeze=None) -> bool:
    """Freeze the vision tower's parameters (`freeze` None: the family's default); returns
    whether it froze them. The rule is by parameter name: InternVL's `vision_tower` freezes and
    its `multi_modal_projector` trains; Qwen-VL's `visual` holds its merger, which freezes too.
    """
    if freeze is None:
        freeze = family(model).get("freeze_vision", False)
    if freeze:
        for name, p in model.named_parameters():
            if is_vision(name):
                p.requires_grad_(False)
    return freeze


def set_tiling(processor):
    """Give `processor` its family's image settings (InternVL: up to 12 tiles plus a thumbnail),
    which vlm.prompt_inputs passes with every image; other families keep the processor's own.
    Returns the processor."""
    processor.image_kwargs = next((f["image_kwargs"] for f in FAMILIES.values()
                                   if f.get("processor") == type(processor).__name__), {})
    return processor
