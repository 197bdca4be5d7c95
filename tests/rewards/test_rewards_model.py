"""Model-based rewards (Saliency-R1 alignment, SAYO region attention) on a tiny random model."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from lookright.metrics.localisation import alignment_score
from lookright.models.base import VisualLayout
from lookright.rewards import (
    Policy,
    RegionAttentionReward,
    SaliencyAlignmentReward,
    focus_mask,
    region_attention_reward,
    region_rows,
)
from lookright.rewards import policy as policy_module
from lookright.saliency import explain_batch

QUESTION = "What color is the circle?"
GOOD = "<think>The circle is at the top left. It is red.</think>red"
BOX = [[0.0, 0.0, 0.5, 0.5]]


# --------------------------------------------------------------------------- SAYO formula


def test_region_attention_formula_on_hand_built_rows():
    focus = np.array([True, False, False, False])
    uniform = np.full((3, 4), 0.25)
    assert region_attention_reward(np.ones(3), uniform, focus) == pytest.approx(0.0, abs=1e-9)
    # every selected row puts 0.7 on the focus token: a_focus = 0.7, a_img = 0.25
    rows = np.array([[0.7, 0.1, 0.1, 0.1]] * 3)
    expected = math.tanh(math.log((0.7 + 1e-8) / (0.25 + 1e-8)))
    assert region_attention_reward(np.ones(3), rows, focus) == pytest.approx(expected)
    # attention avoiding the region is negative
    away = np.array([[0.0, 0.4, 0.3, 0.3]] * 3)
    assert region_attention_reward(np.ones(3), away, focus) < -0.99


def test_region_attention_selects_the_high_entropy_tokens():
    focus = np.array([True, False])
    entropies = np.array([0.1, 3.0, 0.2, 2.5, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    attention = np.tile([0.1, 0.9], (10, 1))  # low-entropy rows look away...
    attention[[1, 3]] = [0.9, 0.1]  # ...the two highest-entropy rows look at the region
    top = region_attention_reward(entropies, attention, focus, rho=0.2)  # ceil(0.2*10) = 2
    assert top == pytest.approx(math.tanh(math.log(0.9 / 0.5)), rel=1e-6)
    everything = region_attention_reward(entropies, attention, focus, rho=1.0)
    assert everything < 0 < top
    # rho * n < 1 still keeps one token: the highest-entropy one (row 1)
    assert region_attention_reward(entropies, attention, focus, rho=0.01) == pytest.approx(top)


def test_region_attention_formula_undefined_cases():
    focus = np.array([True, False])
    assert region_attention_reward(np.zeros(0), np.zeros((0, 2)), focus) is None  # no token
    assert region_attention_reward(np.ones(2), np.zeros((2, 0)), np.zeros(0, bool)) is None
    assert region_attention_reward(np.ones(2), np.full((2, 2), 0.5), np.zeros(2, bool)) is None
    with pytest.raises(ValueError, match="rho"):
        region_attention_reward(np.ones(2), np.full((2, 2), 0.5), focus, rho=0)


def test_focus_mask_is_the_cells_overlapping_the_box():
    mask = focus_mask((4, 4), [[0.3, 0.0, 0.55, 0.2]]).reshape(4, 4)
    expected = np.zeros((4, 4), bool)
    expected[0, 1:3] = True  # x 0.3..0.55 touches columns 1 and 2, y 0..0.2 row 0
    assert (mask == expected).all()


# --------------------------------------------------------------------------- row pass


@pytest.mark.parametrize("layers", [[-1], [0, 1]])
def test_region_rows_match_eager_attention_and_logits(tiny, images, layers):
    model, processor, adapter = tiny
    policy = Policy(model, processor)
    completions = [GOOD, "<think>no</think>yes blue"]
    batch = policy.prepare(images[:2], [QUESTION, "Is it red?"], completions=completions)
    rows = region_rows(model, adapter, batch, layers)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        out = eager(**batch.inputs, output_attentions=True)
    for b, sample in enumerate(batch.samples):
        predicting = [p - 1 for p in sample.targets]
        attention = torch.stack([out.attentions[layer][b].mean(0) for layer in layers]).mean(0)
        expected = attention[predicting][:, sample.visual].numpy()
        np.testing.assert_allclose(rows.attention[b], expected, atol=1e-6)
        logp = torch.log_softmax(out.logits[b, predicting].float(), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).numpy()
        np.testing.assert_allclose(rows.entropies[b], entropy, atol=1e-5)


def test_region_rows_reject_bad_layers(tiny, images):
    model, processor, adapter = tiny
    batch = Policy(model, processor).prepare(images[:1], [QUESTION], completions=[GOOD])
    with pytest.raises(ValueError, match="layer 5 out of range for 2 layers"):
        region_rows(model, adapter, batch, [5])


# --------------------------------------------------------------------------- rewards


def _kwargs(images, n, boxes=BOX, log=None):
    return {
        "images": [[images[k % len(images)]] for k in range(n)],
        "question": [QUESTION] * n,
        "boxes": [boxes] * n,
        "log_metric": log,
    }


def test_saliency_reward_is_the_alignment_of_the_cot_bottleneck_map(tiny, images):
    model, processor, _ = tiny
    policy = Policy(model, processor)
    completions = [GOOD, "<think>It is at the top left. Red.</think>red"]
    logged: dict[str, float] = {}
    reward = SaliencyAlignmentReward(policy, batch_size=1)
    values = reward(
        [None] * 2,
        completions,
        None,
        **_kwargs(images, 2, log=lambda k, v: logged.__setitem__(k, v)),
    )
    maps = explain_batch(
        model, processor, images[:2], [QUESTION] * 2, completions, ["cot_bottleneck"]
    )["cot_bottleneck"]
    expected = [alignment_score(m.response_map, BOX) for m in maps]
    assert all(m.has_map for m in maps)
    assert values == pytest.approx(expected)
    assert 0.0 <= min(values) and max(values) <= 1.0
    assert logged["alignment_score"] == pytest.approx(np.mean(expected))
    assert logged["saliency_no_map_fraction"] == 0.0
    assert logged["time_saliency_alignment_s"] > 0
    # the rollout's token ids (end-of-turn included, as TRL hands them) give the same rewards
    tokenizer = processor.tokenizer
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    ids = [i + [tokenizer.eos_token_id] for i in ids]
    assert reward([None] * 2, completions, ids, **_kwargs(images, 2)) == pytest.approx(values)


MALFORMED = {
    "truncated (no </think>)": "<think>The circle is at the top",
    "empty answer": "<think>The circle is red.</think>",
    "empty thought": "<think></think>red",
    "no tags": "red",
}


def test_model_rewards_on_malformed_completions_and_missing_inputs(tiny, images):
    model, processor, _ = tiny
    policy = Policy(model, processor)
    saliency = SaliencyAlignmentReward(policy)
    region = RegionAttentionReward(policy)
    completions = [GOOD, *MALFORMED.values()]
    n = len(completions)
    sal = saliency([None] * n, completions, None, **_kwargs(images, n))
    assert sal[0] is not None
    assert dict(zip(MALFORMED, sal[1:], strict=True)) == {k: None for k in MALFORMED}
    sayo = region([None] * n, completions, None, **_kwargs(images, n))
    # SAYO needs no thought/answer split: every non-empty completion with a box has a value
    assert all(v is not None and -1 < v < 1 for v in sayo)

    # no box, no image, an empty completion: None for both, and nothing is computed for them
    kwargs = _kwargs(images, 3)
    kwargs["boxes"] = [[], None, BOX]
    kwargs["images"] = [[images[0]], [images[0]], []]
    # a rollout that emitted the image placeholder token cannot be re-encoded: None, no crash
    tokenizer = processor.tokenizer
    good_ids = tokenizer(GOOD, add_special_tokens=False)["input_ids"]
    image_id = model.config.image_token_id
    with_placeholder = [good_ids[:3] + [image_id] + good_ids[3:], good_ids]
    for reward in (saliency, region):
        assert reward([None] * 3, [GOOD] * 3, None, **kwargs) == [None, None, None]
        assert reward([None], [""], [[]], **_kwargs(images, 1)) == [None]
        values = reward([None] * 2, [GOOD] * 2, with_placeholder, **_kwargs(images, 2))
        assert values[0] is None and values[1] is not None, reward.name


def test_model_rewards_for_an_image_without_visual_tokens(tiny, images, monkeypatch):
    model, processor, adapter = tiny
    policy = Policy(model, processor)
    original = type(adapter).visual_layouts

    def no_visual_tokens_for_yes_no(self, inputs, model):
        """Samples asking "Is it red?" get an image without visual tokens."""
        layouts = original(self, inputs, model)
        texts = processor.tokenizer.batch_decode(inputs["input_ids"])
        empty = VisualLayout(torch.zeros(0, dtype=torch.long), (0, 0))
        return [empty if "Is it red?" in t else lay for t, lay in zip(texts, layouts, strict=True)]

    monkeypatch.setattr(type(adapter), "visual_layouts", no_visual_tokens_for_yes_no)
    kwargs = _kwargs(images, 3)
    kwargs["question"] = ["Is it red?", QUESTION, "Is it red?"]
    for reward in (SaliencyAlignmentReward(policy), RegionAttentionReward(policy)):
        values = reward([None] * 3, [GOOD] * 3, None, **kwargs)
        assert values[0] is None and values[1] is not None and values[2] is None, reward.name
        assert reward([None], [GOOD], None, **{**kwargs, "question": ["Is it red?"]}) == [None]


def test_rewards_follow_lora_policy_including_o_proj(tiny, images, monkeypatch):
    """A PEFT policy gets the rewards of its merged weights (LoRA on q/k/v/o)."""
    from peft import LoraConfig, get_peft_model

    model, processor, _ = tiny
    base = copy.deepcopy(model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(base, config)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    peft_model.train()  # as inside the trainer: the rewards switch to eval and back
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    completions = [GOOD, "<think>It is at the top left. Red.</think>red"]
    kwargs = _kwargs(images, 2)
    for cls in (SaliencyAlignmentReward, RegionAttentionReward):
        from_peft = cls(Policy(peft_model, processor))([None] * 2, completions, None, **kwargs)
        from_merged = cls(Policy(merged, processor))([None] * 2, completions, None, **kwargs)
        from_base = cls(Policy(model, processor))([None] * 2, completions, None, **kwargs)
        assert from_peft == pytest.approx(from_merged, abs=1e-5), cls.name
        assert from_peft != pytest.approx(from_base, abs=1e-5), cls.name
    assert peft_model.training  # training mode restored
    o_proj = peft_model.get_base_model().model.language_model.layers[0].self_attn.o_proj
    assert "lora" in type(o_proj).__module__  # the LoRA layer is back in place
    # the decomposition reads o_proj.weight: without the merged view it would use W, not W+BA
    monkeypatch.setattr(policy_module, "lora_effective_o_proj", lambda m, a: nullcontext())
    stale = SaliencyAlignmentReward(Policy(peft_model, processor))(
        [None] * 2, completions, None, **kwargs
    )
    merged_sal = SaliencyAlignmentReward(Policy(merged, processor))(
        [None] * 2, completions, None, **kwargs
    )
    assert stale != pytest.approx(merged_sal, abs=1e-5)


def test_saliency_alignment_uses_only_o_proj_swap_when_lora_targets_it(tiny):
    """Without LoRA the forward context swaps nothing."""
    from lookright.rewards import lora_effective_o_proj

    model, _, adapter = tiny
    before = [layer.self_attn.o_proj for layer in adapter.decoder_layers(model)]
    with lora_effective_o_proj(model, adapter):
        during = [layer.self_attn.o_proj for layer in adapter.decoder_layers(model)]
    assert during == before


def test_prompts_match_trl_tokenisation(tiny, images):
    """The reward's teacher-forced prompt is token for token the prompt TRL generated from."""
    from trl.data_utils import prepare_multimodal_messages

    model, processor, adapter = tiny
    prompt = prepare_multimodal_messages([{"role": "user", "content": QUESTION}], [images[0]])
    trl_ids = processor.apply_chat_template(
        conversation=[prompt], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"][0]
    red = processor.tokenizer("red", add_special_tokens=False)["input_ids"]
    batch = Policy(model, processor).prepare(images[:1], [QUESTION], completion_ids=[red])
    start, _ = batch.encoded.completion_span(0)
    ours = batch.input_ids[0, batch.encoded.prompt_start[0] : start].tolist()
    assert ours == list(trl_ids)


def test_rollouts_of_one_prompt_share_one_vision_encoder_run(tiny, images, monkeypatch):
    """GRPO repeats each prompt's image object num_generations times: encoded once, same value."""
    model, processor, _ = tiny
    policy = Policy(model, processor)
    completions = [GOOD, "<think>It is at the top left. Red.</think>red"] * 2
    shared = _kwargs(images, 4)
    shared["images"] = [[images[0]], [images[0]], [images[1]], [images[1]]]
    distinct = dict(shared)
    distinct["images"] = [[images[0]], [images[0].copy()], [images[1]], [images[1].copy()]]
    encoded: list[int] = []
    original = type(model.model).get_image_features

    def spy(self, pixel_values, image_grid_thw=None, **kwargs):
        encoded.append(int(image_grid_thw.shape[0]))
        return original(self, pixel_values, image_grid_thw, **kwargs)

    monkeypatch.setattr(type(model.model), "get_image_features", spy)
    for cls in (SaliencyAlignmentReward, RegionAttentionReward):
        encoded.clear()
        with_sharing = cls(policy)([None] * 4, completions, None, **shared)
        assert encoded == [2], cls.name  # two distinct images, one encoder run
        encoded.clear()
        without = cls(policy)([None] * 4, completions, None, **distinct)
        assert encoded == [4], cls.name
        assert with_sharing == pytest.approx(without, abs=1e-6), cls.name
