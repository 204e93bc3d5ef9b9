"""Sampler: one logits row (n_vocab,) -> the next token id, for one request.

Owns: the request's sampling pipeline - logit_bias, repeat penalty (llama.cpp semantics),
presence/frequency penalties (OpenAI semantics), then greedy argmax at temperature 0, else
top_k -> top_p -> min_p -> temperature -> a draw from the Sampler's own seeded numpy Generator
(same seed + same logits = same tokens) - and logprobs of the raw logits. A grammar's mask
(`allowed` ids) is applied first: every other token is -inf before bias, penalties and filters. Must not: sort or
exponentiate the whole vocabulary when a filter bounds the candidates (262k rows, every token).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..types import SamplingParams, ValidationError

_WINDOWS = (8.0, 16.0, 32.0)  # nats below the max logit tried before a full partition
_BLOCK = 4096                 # tokens per block when drawing over the whole vocabulary


class Sampler:
    """Turns logits into token ids for one request. Not thread-safe (one request, one thread).

    sample() may modify `logits` while it runs and restores the entries it touched before it
    returns; pass a read-only or non-float32 array to have it work on a copy instead.
    """

    def __init__(self, params: SamplingParams):
        if not isinstance(params, SamplingParams):
            raise TypeError(f"Sampler needs SamplingParams, got {type(params).__name__}")
        self.params = params  # validated when built (SamplingParams.__post_init__)
        self.rng = np.random.default_rng(params.seed)  # seed None: fresh OS entropy
        bias = params.logit_bias
        self._bias_ids = np.fromiter(bias.keys(), dtype=np.int64, count=len(bias))       # (n_bias,)
        self._bias_vals = np.fromiter(bias.values(), dtype=np.float64, count=len(bias))  # (n_bias,)
        self._penalize = params.repeat_last_n != 0 and (
            params.repeat_penalty != 1.0 or params.presence_penalty != 0.0 or params.frequency_penalty != 0.0)

    # ---- logit adjustments (touch a few entries only) ------------------------------------------

    def _adjusted(self, logits: np.ndarray, prev_tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, new logits) for the entries bias and penalties change; ids unique."""
        p, n_vocab = self.params, logits.shape[0]
        ids, vals = self._bias_ids, None
        if ids.size:
            if ids.max() >= n_vocab:
                raise ValidationError("logit_bias", f"token id {int(ids.max())} is outside the vocabulary ({n_vocab})")
            vals = logits[ids].astype(np.float64) + self._bias_vals
        if not self._penalize or len(prev_tokens) == 0:
            return ids, (vals if vals is not None else np.zeros(0))
        window = prev_tokens if p.repeat_last_n < 0 else prev_tokens[-p.repeat_last_n:]
        pen_ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)  # (n_pen,)
        if ids.size:  # merge: penalties apply on top of the biased value
            all_ids = np.union1d(ids, pen_ids)
            cur = logits[all_ids].astype(np.float64)
            cur[np.searchsorted(all_ids, ids)] = vals
            ids = all_ids
            sel = np.searchsorted(all_ids, pen_ids)
        else:
            cur = logits[pen_ids].astype(np.float64)
            ids, sel = pen_ids, slice(None)
        x = cur[sel]
        if p.repeat_penalty != 1.0:  # llama.cpp: shrink toward 0 - positive divided, negative multiplied
            x = np.where(x <= 0, x * p.repeat_penalty, x / p.repeat_penalty)
        x = x - counts * p.frequency_penalty - p.presence_penalty  # OpenAI: count-scaled + once
        cur[sel] = x
        return ids, cur

    def adjusted_logits(self, logits: np.ndarray, prev_tokens: Sequence[int] = ()) -> np.ndarray:
        """A float32 copy of `logits` with logit_bias and the penalties applied (for inspection)."""
        out = np.array(logits, dtype=np.float32)
        ids, vals = self._adjusted(out, prev_tokens)
        if ids.size:
            out[ids] = vals
        return out

    def candidates(self, logits: np.ndarray, prev_tokens: Sequence[int] = ()) -> np.ndarray:
        """Ids a draw can return (after bias, penalties, top_k, top_p, min_p), most likely first."""
        l = self.adjusted_logits(logits, prev_tokens)
        if self.params.temperature == 0.0:
            return np.array([int(np.argmax(l))])
        cand, _ = self._candidates(l)
        return np.arange(l.shape[0]) if cand is None else cand

    # ---- sampling -------------------------------------------------------------------------------

    def sample(self, logits: np.ndarray, prev_tokens: Sequence[int] = (),
               allowed: Optional[np.ndarray] = None) -> int:
        """Next token id from `logits` (n_vocab,); prev_tokens: the sequence so far (prompt +
        generated), of which the last repeat_last_n feed the penalties (-1: all, 0: none).
        allowed: the only token ids that may be drawn (a grammar's mask), or None for all."""
        logits = np.asarray(logits)
        if logits.ndim != 1:
            raise ValueError(f"logits must be one row (n_vocab,), got shape {logits.shape}")
        if allowed is not None:
            logits = _masked(logits, allowed)  # a private copy
        elif logits.dtype != np.float32 or not logits.flags.writeable:
            logits = logits.astype(np.float32)  # a private copy: no restore needed
        ids, vals = self._adjusted(logits, prev_tokens)
        saved = logits[ids] if ids.size else None
        if saved is not None:
            logits[ids] = vals
        try:
            if self.params.temperature == 0.0:
                return int(np.argmax(logits))
            cand, cl = self._candidates(logits)
            i = self._draw(cl)
            return i if cand is None else int(cand[i])
        finally:
            if saved is not None:
                logits[ids] = saved

    def _candidates(self, l: np.ndarray) -> tuple[Optional[np.ndarray], np.ndarray]:
        """Ids and float64 logits kept by top_k, top_p, min_p; sorted by (-logit, id).
        No filter on: (None, l) - the whole vocabulary in id order, float32."""
        p, n = self.params, l.shape[0]
        m = float(l.max())
        if not math.isfinite(m):
            return np.array([int(np.argmax(l))]), np.zeros(1)
        k = p.top_k if 0 < p.top_k < n else n
        # min_p keeps p_i >= min_p * p_max, i.e. l_i >= max + ln(min_p): a logit floor that does
        # not depend on which other tokens are kept (normalization cancels in the ratio).
        floor = m + math.log(p.min_p) if p.min_p > 0.0 else -math.inf
        if k < n:
            cand, cl = _top_k(l, k, m)
            if p.top_p < 1.0:
                cand, cl = _top_p(cand, cl, p.top_p, float(np.exp(cl - m).sum()))
        elif p.top_p < 1.0:
            z = float(np.exp(l - m, dtype=np.float32).sum(dtype=np.float64))  # whole-vocab mass
            if floor > -math.inf:  # final set is within the floor: sort only that
                cand = np.flatnonzero(l >= floor)
                cand, cl = _sorted(cand, l[cand].astype(np.float64))
            else:
                cand, cl = _mass_prefix(l, m, p.top_p * z)
            cand, cl = _top_p(cand, cl, p.top_p, z)
        elif floor > -math.inf:
            cand = np.flatnonzero(l >= floor)
            cand, cl = _sorted(cand, l[cand].astype(np.float64))
        else:
            return None, l
        if floor > -math.inf:
            keep = int(np.searchsorted(-cl, -floor, side="right"))  # cl descending: count >= floor
            cand, cl = cand[:max(keep, 1)], cl[:max(keep, 1)]
        return cand, cl

    def _draw(self, cl: np.ndarray) -> int:
        """Index into `cl` (logits, float64 or the whole float32 row) drawn from softmax(cl / T)."""
        if cl.shape[0] == 1:
            return 0
        w = cl - cl.max()  # a new array: the caller's logits stay untouched
        w *= w.dtype.type(1.0 / self.params.temperature)
        np.exp(w, out=w)
        if w.shape[0] <= _BLOCK:
            cdf = np.cumsum(w, dtype=np.float64)
            total = float(cdf[-1])
            if not math.isfinite(total) or total <= 0.0:
                return int(np.argmax(cl))
            return min(int(np.searchsorted(cdf, self.rng.random() * total, side="right")), w.shape[0] - 1)
        # whole vocabulary: find the block by block sums, then the token inside that block only
        starts = np.arange(0, w.shape[0], _BLOCK)
        bcdf = np.cumsum(np.add.reduceat(w, starts, dtype=np.float64))  # (n_blocks,)
        total = float(bcdf[-1])
        if not math.isfinite(total) or total <= 0.0:
            return int(np.argmax(cl))
        u = self.rng.random() * total
        b = min(int(np.searchsorted(bcdf, u, side="right")), starts.shape[0] - 1)
        inner = np.cumsum(w[starts[b]:starts[b] + _BLOCK], dtype=np.float64)
        u -= float(bcdf[b - 1]) if b > 0 else 0.0
        return starts[b] + min(int(np.searchsorted(inner, u, side="right")), inner.shape[0] - 1)

    # ---- logprobs -------------------------------------------------------------------------------

    def logprobs(self, logits: np.ndarray, token_id: int, n: Optional[int]) -> tuple[float, list[tuple[int, float]]]:
        """(log-softmax of the raw logits at token_id, the n most likely [(id, logprob)], best first)."""
        l = np.asarray(logits, dtype=np.float32)
        m = float(l.max())
        lse = m + math.log(float(np.exp(l - m).sum(dtype=np.float64)))
        lp = float(l[token_id]) - lse
        n = min(int(n or 0), l.shape[0])
        if n <= 0:
            return lp, []
        top, vals = _top_k(l, n, m)
        return lp, [(int(t), float(v) - lse) for t, v in zip(top, vals)]


def _masked(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """A float32 copy of `logits` (n_vocab,) that is -inf outside `allowed` (token ids)."""
    allowed = np.asarray(allowed, dtype=np.int64)
    if allowed.size == 0:
        raise ValueError("the grammar allows no token here")
    if int(allowed.max()) >= logits.shape[0] or int(allowed.min()) < 0:
        raise ValueError(f"allowed token ids must be in [0, {logits.shape[0]})")
    out = np.full(logits.shape[0], -np.inf, dtype=np.float32)
    out[allowed] = logits[allowed]
    return out


# ---- selection helpers (candidates always sorted by descending logit, then ascending id) --------

def _sorted(ids: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((ids, -vals))
    return ids[order], vals[order]


def _top_k(l: np.ndarray, k: int, m: float) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits (ties: lower id first), sorted; scans only tokens near the max."""
    pool = None
    for w in _WINDOWS:  # usually a few hundred tokens lie within 8 nats of the max
        cand = np.flatnonzero(l >= m - w)
        if cand.shape[0] >= k:
            pool = cand
            break
    if pool is None:
        pool = np.arange(l.shape[0])
    vals = l[pool]
    if pool.shape[0] > k:
        kth = np.partition(vals, pool.shape[0] - k)[pool.shape[0] - k]  # k-th largest value
        above = vals > kth
        ties = np.flatnonzero(vals == kth)[: k - int(above.sum())]  # lowest ids among ties
        pick = np.concatenate([np.flatnonzero(above), ties])
        pool, vals = pool[pick], vals[pick]
    return _sorted(pool, vals.astype(np.float64))


def _mass_prefix(l: np.ndarray, m: float, mass: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted tokens near the max holding at least `mass` of exp(l - m) (the top_p region)."""
    for w in _WINDOWS:
        cand = np.flatnonzero(l >= m - w)
        cl = l[cand].astype(np.float64)
        if float(np.exp(cl - m).sum()) >= mass:
            return _sorted(cand, cl)
    return _sorted(np.arange(l.shape[0]), l.astype(np.float64))


def _top_p(cand: np.ndarray, cl: np.ndarray, top_p: float, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Smallest sorted prefix whose probability (normalized by z) reaches top_p; at least one."""
    # cl[0] is the global max logit (the best token is always a candidate), the one z was
    # measured against. A 1e-12 relative slack keeps exact sums (0.5 + 0.3 >= 0.8) exact.
    cum = np.cumsum(np.exp(cl - cl[0]))
    keep = int(np.searchsorted(cum, top_p * z * (1 - 1e-12), side="left")) + 1
    return cand[:min(keep, cand.shape[0])], cl[:min(keep, cand.shape[0])]
