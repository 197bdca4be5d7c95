"""Accuracy reward (Saliency-R1, arXiv 2604.04500; docs/methods.md#accuracy_reward).

Default: normalised exact match of the completion's answer (text after ``</think>``) with the
sample's reference ``answer`` (:mod:`lookright.metrics.accuracy`), 1.0 or 0.0.

Optional (off by default): an LLM judge behind an OpenAI-compatible HTTP endpoint
(``POST {url}/chat/completions``), as in the paper (GPT-4o-mini). The judge grades the answer
1..5 against the reference; the reward is ``(s - 1) / 4``. The endpoint is checked
(``GET {url}/models``) when the reward is built, so a wrong URL fails before training starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

from lookright.completion import final_answer
from lookright.config import StageFailure
from lookright.metrics.accuracy import exact_match
from lookright.rewards.base import RewardFunction, completion_text, prompt_question

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You grade answers to visual questions. Question: {question}\n"
    "Reference answer: {reference}\nCandidate answer: {prediction}\n"
    "How correct is the candidate compared with the reference? Reply with one integer from "
    "1 (wrong) to 5 (fully correct) and nothing else."
)
_SCORE = re.compile(r"[1-5]")


class JudgeUnavailableError(StageFailure):
    """The LLM judge is enabled but its endpoint cannot be used."""


class LlmJudge:
    """Scores answers 1..5 through an OpenAI-compatible chat-completions endpoint.

    Args:
        url: base URL of the API, e.g. ``https://api.openai.com/v1`` or a local vLLM server's
            ``http://host:8000/v1``.
        model: model name sent in the request.
        api_key_env: environment variable holding the API key (``None``: no key, for local
            servers). The key itself never appears in the config.
        timeout_s, max_retries: per-request timeout and retries before the run stops.
    """

    def __init__(
        self,
        url: str | None,
        model: str = "gpt-4o-mini",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        if not url:
            raise JudgeUnavailableError(
                "accuracy judge is enabled but grpo.reward_options.accuracy.judge.url is not set "
                "(an OpenAI-compatible base URL such as http://host:8000/v1)"
            )
        self.url = url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise JudgeUnavailableError(
                    f"accuracy judge is enabled but the environment variable {api_key_env} (its "
                    "API key) is not set; set it, or api_key_env: null for a server without key"
                )

    def _request(self, path: str, payload: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read().decode())

    def check(self) -> None:
        """Fail clearly unless ``GET {url}/models`` answers."""
        try:
            self._request("/models")
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise JudgeUnavailableError(
                f"accuracy judge is enabled but its endpoint {self.url} is not reachable "
                f"(GET {self.url}/models failed: {error}); start the server or disable "
                "grpo.reward_options.accuracy.judge.enabled"
            ) from None

    def grade(self, question: str, reference: str, prediction: str) -> float | None:
        """``(s - 1) / 4`` for the judge's score s in 1..5; None when the reply has no score."""
        payload = {
            "model": self.model,
            "temperature": 0.0,
            "max_tokens": 4,
            "messages": [
                {
                    "role": "user",
                    "content": JUDGE_PROMPT.format(
                        question=question, reference=reference, prediction=prediction
                    ),
                }
            ],
        }
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._request("/chat/completions", payload)
                break
            except (urllib.error.URLError, OSError, ValueError) as error:
                if attempt == self.max_retries:
                    raise JudgeUnavailableError(
                        f"accuracy judge {self.url}: request failed after "
                        f"{self.max_retries + 1} attempts: {error}"
                    ) from None
                time.sleep(2**attempt)
        text = reply["choices"][0]["message"]["content"] or ""
        match = _SCORE.search(text)
        if match is None:
            log.warning("accuracy judge reply without a 1..5 score: %r", text)
            return None
        return (int(match.group()) - 1) / 4


class AccuracyReward(RewardFunction):
    """Normalised exact match with the ``answer`` column (or the LLM judge when given).

    A completion without an answer (no text after ``</think>``, truncated reasoning) scores 0.
    """

    name: ClassVar[str] = "accuracy"

    def __init__(self, judge: LlmJudge | None = None) -> None:
        super().__init__()
        self.judge = judge

    def score(self, prompts, completions, completion_ids=None, **kwargs: Any):
        n = len(completions)
        answers = self.column(kwargs, "answer", n)
        if any(a is None for a in answers):
            raise KeyError("accuracy reward needs the dataset column 'answer'")
        texts = [completion_text(c) for c in completions]
        if self.judge is None:
            return [1.0 if exact_match(t, a) else 0.0 for t, a in zip(texts, answers, strict=True)]
        questions = self.column(kwargs, "question", n)
        scores: list[float | None] = []
        for prompt, question, text, answer in zip(prompts, questions, texts, answers, strict=True):
            prediction = final_answer(text)
            if not prediction:
                scores.append(0.0)
                continue
            scores.append(self.judge.grade(question or prompt_question(prompt), answer, prediction))
        return scores
