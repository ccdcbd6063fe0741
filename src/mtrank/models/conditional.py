"""Conditional heads for implied engagement types (ESMM, Ma et al. SIGIR 2018, and its mirror image).

``model.net.implied: {child: parent}`` states that one engagement implies another: every long click is a click
(``{long_click: click}``; on KuaiRand 99.6% of long views are clicked). The two heads' probabilities are then
tied by construction, in one of two forms (``model.net.implied_form``):

* ``conditional`` (ESMM): the child's tower predicts ``p(child | parent)`` and the child's output is
  ``p(child) = p(parent) · p(child | parent)``;
* ``union``: the parent's tower predicts ``p(parent | not child)`` and the parent's output is
  ``p(parent) = p(child) + (1 - p(child)) · p(parent | not child)``, i.e. ``1 - p(parent) = (1 - p(child)) (1 - ·)``.

Either way every head is still trained on its own label over *every* impression (no selection bias from
training a conditional on clicked rows only), and the composite head's loss also trains the tower it is composed
with: the click head learns from the long-click labels (conditional) or the long-click head from the click labels
(union). Everything downstream of the logits (Eq. 3, calibration, metrics, per-head selection, export, serving)
is unchanged: each column *is* the logit of that head's probability. Chains are allowed
(``{long_click: click, save: long_click}``), cycles are not. Probabilities are combined in log space, so the
logits stay finite for any finite input.

A map entry whose child or parent is not a head of the model (a preset's map in a ``tasks.names=[t]`` run) is
skipped with a warning, as ``wide_weight_decay``'s entries are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["FORMS", "implied_links", "tie_logits", "own_prior_logits"]

log = logging.getLogger(__name__)

FORMS = ("conditional", "union")


def implied_links(
    heads: Sequence[str], implied: Mapping[str, str] | None, key: str = "model.net.implied", warn: bool = True
) -> list[tuple[int, int]]:
    """``(child index, parent index)`` pairs of ``implied`` (``{child: parent}``), parents before their children.

    Raises ``ValueError`` naming ``key`` for a map that is not ``{head: head}``, a head implying itself, or a cycle.
    ``warn``: log the entries that are skipped (the net does; the config check, which runs first, does not).
    """
    if implied is None:
        return []
    if not isinstance(implied, Mapping):
        raise ValueError(
            f"{key} = {implied!r}: expected a map {{child head: the head it implies}}, e.g. {{long_click: click}}"
        )
    heads = [str(h) for h in heads]
    links: dict[str, str] = {}
    skipped = []
    for child, parent in implied.items():
        if not isinstance(child, str) or not isinstance(parent, str):
            raise ValueError(f"{key} = {dict(implied)!r}: expected head names, {{child: parent}}")
        if child == parent:
            raise ValueError(f"{key}.{child} = {parent!r}: a head cannot imply itself")
        if child not in heads or parent not in heads:
            skipped.append(f"{child}: {parent}")
            continue
        links[child] = parent
    if skipped and warn:
        log.warning("%s: %s name(s) heads this model does not have %s: skipped", key, skipped, heads)
    order: list[tuple[int, int]] = []
    done: set[str] = set()
    for child in links:
        path: list[str] = []
        node = child
        while node in links and node not in done:  # up to a head with no pending parent
            if node in path:
                cycle = " -> ".join([*path[path.index(node) :], node])
                raise ValueError(f"{key}: the implied heads form a cycle ({cycle})")
            path.append(node)
            node = links[node]
        for node in reversed(path):  # the topmost pending parent first
            order.append((heads.index(node), heads.index(links[node])))
            done.add(node)
    return order


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 - exp(a))`` for ``a < 0``, accurate on both sides of ``-log 2`` (Mächler 2012). Each branch gets
    only its own side's values, so the branch not taken has a finite gradient (``torch.where`` multiplies it by 0,
    and 0 · inf would be NaN)."""
    near = a > -math.log(2.0)
    mid = torch.full_like(a, -math.log(2.0))
    return torch.where(
        near, torch.log(-torch.expm1(torch.where(near, a, mid))), torch.log1p(-torch.exp(torch.where(near, mid, a)))
    )


def product_logit(a: Tensor, b: Tensor) -> Tensor:
    """``logit(σ(a) · σ(b))``, in log space (finite for finite inputs)."""
    log_p = (F.logsigmoid(a) + F.logsigmoid(b)).clamp(max=-torch.finfo(a.dtype).tiny)
    return log_p - _log1mexp(log_p)


def tie_logits(logits: Tensor, links: Sequence[tuple[int, int]], form: str = "conditional") -> Tensor:
    """The towers' logits ``[..., H]`` with the implied heads tied (see the module docstring).

    ``conditional``: each linked child's column becomes ``logit(σ(parent) · σ(child))``, parents first, so a parent
    is final when its children read it. ``union``: each linked parent's column becomes
    ``-logit(σ(-parent) · σ(-child))`` (the probability of the union), children first.
    """
    if form not in FORMS:
        raise ValueError(f"model.net.implied_form = {form!r}: expected one of {list(FORMS)}")
    if not links:
        return logits
    cols = list(logits.unbind(dim=-1))
    if form == "conditional":
        for child, parent in links:
            cols[child] = product_logit(cols[child], cols[parent])
    else:
        for child, parent in reversed(links):
            cols[parent] = -product_logit(-cols[parent], -cols[child])
    return torch.stack(cols, dim=-1)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def own_prior_logits(
    prior: Mapping[str, float], heads: Sequence[str], links: Sequence[tuple[int, int]], form: str
) -> dict[str, float]:
    """The towers' initial biases for the heads' prior logits ``prior`` (``head_bias_init``), so that each tied
    head's *output* starts at its prior: ``logit(p_child / p_parent)`` for a conditional child, ``logit((p_parent -
    p_child) / (1 - p_child))`` for a union parent (ratios capped to (1e-6, 1 - 1e-6)). Heads without a prior are
    left out."""
    out = dict(prior)
    sig = {h: 1.0 / (1.0 + math.exp(-float(v))) for h, v in prior.items()}
    none_of_children: dict[str, float] = {}  # union: Π (1 - p_child) over a parent's direct children
    for child, parent in links:
        c, p = heads[child], heads[parent]
        if c not in sig or p not in sig:
            continue
        if form == "conditional":
            out[c] = _logit(sig[c] / sig[p])
        else:
            none_of_children[p] = none_of_children.get(p, 1.0) * (1.0 - sig[c])
    for p, q in none_of_children.items():  # 1 - p_parent = (1 - own) Π (1 - p_child)
        out[p] = _logit(1.0 - (1.0 - sig[p]) / q)
    return out
