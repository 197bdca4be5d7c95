"""The completion contract (``<think>thought</think>answer``), read the same way everywhere."""

from __future__ import annotations

from lookright.completion import character_spans, final_answer, is_well_formed


def test_final_answer_is_the_text_after_the_last_closing_tag():
    assert final_answer("<think>a star? no</think> Yes.") == "Yes."
    assert final_answer("<think>a</think>b</think> c ") == "c"
    assert final_answer("No, there is not.") == "No, there is not."
    assert final_answer("<think>truncated thought") == ""  # no answer yet


def test_well_formed_means_one_thought_then_an_answer():
    assert is_well_formed("<think>It is red.</think>red")
    assert is_well_formed("  <think>x</think> y ")
    assert not is_well_formed("so <think>x</think>y")  # text before the thought
    assert not is_well_formed("<think>x</think>")  # empty answer
    assert not is_well_formed("<think> </think>y")  # empty thought
    assert not is_well_formed("<think>x</think>y</think>")  # two closing tags
    assert not is_well_formed("</think>x<think>y")  # wrong order


def test_character_spans_of_thought_and_answer():
    text = "<think>It is red.</think>red"
    spans = character_spans(text)
    assert text[slice(*spans.thought)] == "It is red."
    assert text[slice(*spans.answer)] == "red"
    opened_by_the_prompt = character_spans("It is red.</think>red")
    assert opened_by_the_prompt.thought == (0, 10)
    missing = character_spans("<think>It is")
    assert missing.thought is None and "no </think>" in missing.reason


def test_every_reader_of_completions_uses_this_module():
    """The decode stage, accuracy, the format reward, the readers and the saliency spans."""
    import lookright.metrics.accuracy as accuracy
    from lookright.data.readers import common as readers
    from lookright.rewards import format as format_reward
    from lookright.saliency import batch
    from lookright.stages import decode

    assert decode.final_answer is final_answer is accuracy.final_answer is readers.final_answer
    assert format_reward.is_well_formed is is_well_formed
    assert batch.character_spans is character_spans
