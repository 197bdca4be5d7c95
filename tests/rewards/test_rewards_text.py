"""Accuracy and format rewards on hand-built completions, the LLM judge, reward sets."""

from __future__ import annotations

import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lookright.rewards import (
    AccuracyReward,
    FormatReward,
    JudgeUnavailableError,
    LlmJudge,
    NonFiniteRewardError,
    RewardFunction,
    check_rewards,
    completion_text,
    parse_reward_set,
)
from lookright.rewards.base import prompt_question

WELL_FORMED = "<think>The circle is at the top left. It is red.</think>red"
MALFORMED = {
    "no tags": "red",
    "no close tag (truncated)": "<think>The circle is at the top",
    "no open tag": "The circle is red.</think>red",
    "empty answer": "<think>The circle is red.</think>",
    "whitespace answer": "<think>The circle is red.</think>  \n",
    "empty thought": "<think> </think>red",
    "two thoughts": "<think>a</think><think>b</think>red",
    "text before think": "Sure. <think>The circle is red.</think>red",
    "tags swapped": "</think>red<think>",
    "empty": "",
}


def _conversational(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------- format


def test_format_reward_well_formed_and_malformed():
    reward = FormatReward()
    completions = [WELL_FORMED, " <think>x</think> y ", *MALFORMED.values()]
    values = reward([None] * len(completions), completions)
    assert values[:2] == [1.0, 1.0]
    assert dict(zip(MALFORMED, values[2:], strict=True)) == {k: 0.0 for k in MALFORMED}
    assert reward.__name__ == "format"


def test_format_reward_reads_conversational_completions():
    completions = [_conversational(WELL_FORMED), _conversational(MALFORMED["empty answer"])]
    completions.append([{"role": "assistant", "content": [{"type": "text", "text": WELL_FORMED}]}])
    assert FormatReward()([None] * 3, completions) == [1.0, 0.0, 1.0]


def test_sft_grpo_and_the_reward_use_one_format_rule():
    from lookright import completion
    from lookright.rewards import format as format_reward
    from lookright.stages import grpo, sft

    assert sft.is_well_formed is grpo.is_well_formed is completion.is_well_formed
    assert format_reward.is_well_formed is completion.is_well_formed


# --------------------------------------------------------------------------- accuracy


def test_accuracy_reward_exact_match_after_think():
    cases = [
        (WELL_FORMED, "red", 1.0),
        ("<think>It is red.</think> The Red.", "red", 1.0),  # articles, case, punctuation
        ("<think>It is red.</think>blue", "red", 0.0),
        ("<think>It is red", "red", 0.0),  # truncated: no answer at all
        ("<think>It is red.</think>", "red", 0.0),  # empty answer
        ("red", "red", 1.0),  # no reasoning: the whole text is the answer
        ("", "red", 0.0),
    ]
    reward = AccuracyReward()
    completions = [_conversational(c) for c, _, _ in cases]
    values = reward([None] * len(cases), completions, answer=[a for _, a, _ in cases])
    assert values == [v for _, _, v in cases]


def test_accuracy_reward_needs_the_answer_column():
    with pytest.raises(KeyError, match="answer"):
        AccuracyReward()([None], [WELL_FORMED])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_judge_enabled_without_reachable_endpoint_fails_clearly():
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    judge = LlmJudge(url, api_key_env=None, timeout_s=2, max_retries=0)
    with pytest.raises(JudgeUnavailableError) as caught:
        judge.check()
    message = str(caught.value)
    assert "not reachable" in message and url in message
    assert "grpo.reward_options.accuracy.judge.enabled" in message


def test_judge_needs_url_and_key(monkeypatch):
    with pytest.raises(JudgeUnavailableError, match="judge.url is not set"):
        LlmJudge(None)
    monkeypatch.delenv("LOOKRIGHT_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(JudgeUnavailableError, match="LOOKRIGHT_TEST_JUDGE_KEY"):
        LlmJudge("http://127.0.0.1:1/v1", api_key_env="LOOKRIGHT_TEST_JUDGE_KEY")


class _FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that answers '4', or 'maybe' for 'blue'."""

    requests: list = []

    def do_GET(self):  # noqa: N802
        self._send({"data": [{"id": "judge"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeJudge.requests.append((self.headers.get("Authorization"), body))
        text = body["messages"][0]["content"]
        reply = "maybe" if "Candidate answer: blue" in text else "Score: 4"
        self._send({"choices": [{"message": {"content": reply}}]})

    def _send(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_judge_scores_map_one_to_five_onto_unit_interval(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("LOOKRIGHT_TEST_JUDGE_KEY", "secret")
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = LlmJudge(url, "judge-model", "LOOKRIGHT_TEST_JUDGE_KEY", timeout_s=5)
        judge.check()
        reward = AccuracyReward(judge)
        completions = ["<think>x</think>red", "<think>x</think>blue", "<think>truncated"]
        values = reward([None] * 3, completions, answer=["red"] * 3, question=["What color?"] * 3)
    finally:
        server.shutdown()
        thread.join()
    assert values == [0.75, None, 0.0]  # (4-1)/4; no score in the reply; no answer to judge
    assert len(_FakeJudge.requests) == 2  # the truncated completion was not sent
    auth, body = _FakeJudge.requests[0]
    assert auth == "Bearer secret" and body["model"] == "judge-model"
    assert "Reference answer: red" in body["messages"][0]["content"]


# --------------------------------------------------------------------------- shared


def test_non_finite_rewards_stop_with_a_clear_message():
    with pytest.raises(NonFiniteRewardError, match=r"reward 'x' is nan for completion 1"):
        check_rewards("x", [1.0, math.nan], 2)
    with pytest.raises(NonFiniteRewardError, match="inf"):
        check_rewards("x", [math.inf], 1)
    assert check_rewards("x", [None, 1], 2) == [None, 1.0]
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        check_rewards("x", [1.0], 2)

    class Broken(RewardFunction):
        name = "broken"

        def score(self, prompts, completions, completion_ids=None, **kwargs):
            return [float("nan")] * len(completions)

    with pytest.raises(NonFiniteRewardError, match="broken"):
        Broken()([None], ["x"])


def test_text_helpers():
    assert completion_text("a") == "a"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    assert prompt_question(prompt) == "Q?"
    assert prompt_question([{"role": "user", "content": "Q2?"}]) == "Q2?"


def test_reward_sets_by_name():
    assert parse_reward_set("acc") == {"accuracy": 1.0}
    assert parse_reward_set("acc+fmt+sal") == {
        "accuracy": 1.0,
        "format": 1.0,
        "saliency_alignment": 1.0,
    }
    assert parse_reward_set("sayo") == {"region_attention": 1.0}
    assert parse_reward_set("accuracy+region_attention") == {
        "accuracy": 1.0,
        "region_attention": 1.0,
    }
    with pytest.raises(ValueError, match="unknown reward 'nope'.*valid rewards"):
        parse_reward_set("acc+nope")
