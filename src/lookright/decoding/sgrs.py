"""SGRS as a transformers LogitsProcessor (LVLMs-Saliency, arXiv 2601.20279; docs/methods.md#sgrs).

At each step, for every sequence of the batch (each keeps its own history):

1. candidates: the top-K tokens of the step's scores; their saliency ``S(c)`` from ONE batched
   backward (:class:`lookright.decoding.saliency.StepScorer`);
2. threshold ``tau = alpha * mean S of the last W accepted tokens`` (0 without history; a
   token taken by the fallback counts as accepted: it is the sequence's token);
3. up to R draws from the renormalised top-K distribution: accept the drawn ``c`` if
   ``S(c) >= tau``, else remove it and draw again;
4. all R draws rejected (or no candidate left): the candidate of highest saliency.

The chosen token is returned as the only finite score, so ``generate`` runs greedily
(``do_sample=False``) and picks it. The first draw is exactly transformers' top-K sampling
(``TopKLogitsWarper`` + ``softmax`` + ``torch.multinomial`` on the full vocabulary, same random
stream), so with alpha = 0 (always accepted) SGRS reproduces ``generate(do_sample=True,
top_k=K)`` token for token under the same seed. With per-sequence ``generators`` every
sequence draws from its own random stream instead, which makes results independent of how
samples are batched.

Modes: ``"sgrs"`` (the method), ``"topk"`` (plain top-K sampling: the first draw, always
accepted) and ``"argmax"`` (greedy); the last two score the chosen token only when asked
(``score=True``), to report per-token saliency of the baselines.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

from lookright.decoding.params import SgrsParams
from lookright.decoding.saliency import StepScorer

MODES = ("sgrs", "topk", "argmax")


@dataclass
class StepRecord:
    """What SGRS did at one step, per sequence of the batch."""

    candidates: torch.Tensor  # (B, K) token ids (top-K order)
    saliency: torch.Tensor | None  # (B, K) S of each candidate (NaN where not scored)
    tau: torch.Tensor  # (B,) threshold
    chosen: torch.Tensor  # (B,) token ids
    chosen_saliency: torch.Tensor  # (B,) S of the chosen token (NaN if not scored)
    draws: torch.Tensor  # (B,) number of draws made (0 for argmax)
    fallback: torch.Tensor  # (B,) bool: all draws rejected, argmax S taken


@dataclass
class SgrsState:
    records: list[StepRecord] = field(default_factory=list)
    saliency_time_s: float = 0.0


class SaliencyGuidedSampler(LogitsProcessor):
    """Choose each step's token by SGRS (or top-K / argmax) and force ``generate`` to take it.

    ``question_keys (B, W0)``: 1 on each prompt's question tokens (the prompt part of J);
    generated tokens are added to J as they appear. ``generators``: None (the global RNG,
    as transformers' sampling) or one ``torch.Generator`` per sequence.
    """

    def __init__(
        self,
        scorer: StepScorer | None,
        params: SgrsParams,
        question_keys: torch.Tensor,
        *,
        mode: str = "sgrs",
        score: bool = True,
        generators: list[torch.Generator] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if (mode == "sgrs" or score) and scorer is None:
            raise ValueError("a StepScorer is needed to compute saliency")
        self.scorer, self.params, self.mode = scorer, params, mode
        self.score = score or mode == "sgrs"
        self.question_keys = question_keys
        self.generators = generators
        self.history: list[list[float]] = [[] for _ in range(question_keys.shape[0])]
        self.state = SgrsState()

    # -- helpers --------------------------------------------------------------------------
    def _key_mask(self, width: int) -> torch.Tensor:
        batch, prompt = self.question_keys.shape
        mask = torch.ones(batch, width, dtype=torch.float32, device=self.question_keys.device)
        mask[:, :prompt] = self.question_keys.to(torch.float32)
        return mask

    def _saliency(self, candidates: torch.Tensor, width: int) -> torch.Tensor:
        assert self.scorer is not None  # checked in __init__ for every scoring mode
        start = time.perf_counter()
        scores = self.scorer.scores(candidates, self._key_mask(width).to(candidates.device))
        if candidates.is_cuda:
            torch.cuda.synchronize(candidates.device)
        self.state.saliency_time_s += time.perf_counter() - start
        return scores.to(torch.float32)

    def _thresholds(self, device) -> torch.Tensor:
        if self.mode != "sgrs":
            return torch.zeros(len(self.history), device=device)
        window = self.params.history
        values = [
            self.params.alpha * (sum(h[-window:]) / len(h[-window:])) if h else 0.0
            for h in self.history
        ]
        return torch.tensor(values, dtype=torch.float32, device=device)

    def _draw(self, probs: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """One token per row in ``rows`` from ``probs`` (full vocabulary, unnormalised ok)."""
        if self.generators is None:
            if len(rows) == probs.shape[0]:
                return torch.multinomial(probs, num_samples=1).squeeze(1)
            return torch.multinomial(probs[rows], num_samples=1).squeeze(1)
        return torch.cat(
            [
                torch.multinomial(probs[b : b + 1], num_samples=1, generator=self.generators[b])[0]
                for b in rows
            ]
        )

    # -- the step -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, width = input_ids.shape
        device = scores.device
        nan = torch.full((batch,), math.nan, device=device)
        tau = self._thresholds(device)
        draws = torch.zeros(batch, dtype=torch.long, device=device)
        fallback = torch.zeros(batch, dtype=torch.bool, device=device)
        saliency = None
        if self.mode == "argmax":
            candidates = scores.argmax(dim=-1, keepdim=True)
            chosen = candidates[:, 0]
            chosen_saliency = self._saliency(candidates, width)[:, 0] if self.score else nan
        else:
            count = min(self.params.top_k, scores.shape[-1])
            _, candidates = torch.topk(scores, count, dim=-1)
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, candidates, True)
            probs = torch.softmax(scores.masked_fill(~keep, -math.inf), dim=-1)
            if self.mode == "sgrs":
                saliency = self._saliency(candidates, width)
                chosen, chosen_saliency, draws, fallback = self._reject(
                    probs, candidates, saliency, tau
                )
            else:  # topk: the first draw, always accepted
                chosen = self._draw(probs, list(range(batch)))
                draws += 1
                chosen_saliency = (
                    self._saliency(chosen[:, None], width)[:, 0] if self.score else nan
                )
        if self.mode == "sgrs":
            for b in range(batch):
                self.history[b].append(float(chosen_saliency[b]))
        self.state.records.append(
            StepRecord(
                candidates=candidates.cpu(),
                saliency=None if saliency is None else saliency.cpu(),
                tau=tau.cpu(),
                chosen=chosen.cpu(),
                chosen_saliency=chosen_saliency.cpu(),
                draws=draws.cpu(),
                fallback=fallback.cpu(),
            )
        )
        forced = torch.full_like(scores, -math.inf)
        forced.scatter_(1, chosen[:, None], 0.0)
        return forced  # type: ignore[return-value]

    def _reject(
        self,
        probs: torch.Tensor,
        candidates: torch.Tensor,
        saliency: torch.Tensor,
        tau: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rejection sampling of step 3-4 for every row; returns chosen, S, draws, fallback."""
        batch = probs.shape[0]
        device = probs.device
        chosen = torch.full((batch,), -1, dtype=torch.long, device=device)
        chosen_saliency = torch.full((batch,), math.nan, device=device)
        draws = torch.zeros(batch, dtype=torch.long, device=device)
        remaining = probs.clone()
        left = torch.full((batch,), candidates.shape[1], dtype=torch.long, device=device)
        for _ in range(self.params.max_draws):
            rows = [b for b in range(batch) if chosen[b] < 0 and left[b] > 0]
            if not rows:
                break
            tokens = self._draw(remaining, rows)
            for b, token in zip(rows, tokens.tolist(), strict=True):
                draws[b] += 1
                k = int((candidates[b] == token).nonzero()[0, 0])
                if saliency[b, k] >= tau[b]:
                    chosen[b], chosen_saliency[b] = token, saliency[b, k]
                else:
                    remaining[b, token] = 0.0
                    left[b] -= 1
        fallback = chosen < 0
        if bool(fallback.any()):
            best = saliency.argmax(dim=-1)
            for b in fallback.nonzero().flatten().tolist():
                chosen[b] = candidates[b, best[b]]
                chosen_saliency[b] = saliency[b, best[b]]
        return chosen, chosen_saliency, draws, fallback
