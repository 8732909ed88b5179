"""``SearchConfig``: the knobs of one MCTS search, validated once when the config is built."""

from __future__ import annotations

from dataclasses import dataclass

from zerokv.checks import check_choice, check_float, check_positive_int

__all__ = ["UNVISITED_Q_MODES", "SearchConfig"]

UNVISITED_Q_MODES = ("parent", "zero")
"""Allowed values of ``SearchConfig.unvisited_q`` (see ``zerokv.search.mcts``)."""


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Knobs of one MCTS search (MuZero's defaults). Frozen: a config that passed its checks
    stays valid; derive a variant with ``dataclasses.replace``, which checks it again.

    What changes from call to call (the rng, root noise on or off, the temperature, the legal
    actions) is an argument of ``muzero_search`` / ``plan``, not a field here.
    """

    num_simulations: int = 50
    """Simulations per search: every tree makes exactly this many expansions."""
    discount: float = 0.997
    """Per-step discount of backed-up returns, in [0, 1]."""
    pb_c_base: float = 19652.0
    """pUCT base (> 0)."""
    pb_c_init: float = 1.25
    """pUCT initial exploration weight (> 0)."""
    dirichlet_alpha: float = 0.3
    """Root Dirichlet noise concentration (> 0)."""
    exploration_fraction: float = 0.25
    """Share of the root prior replaced by noise when noise is added, in [0, 1]."""
    unvisited_q: str = "parent"
    """Q an unexpanded child scores in pUCT: "parent" (the parent's mean Q over its visited
    children, LightZero) or "zero" (MuZero pseudocode); see ``zerokv.search.mcts``."""
    leaves_per_call: int = 1
    """Leaves expanded per tree in each batched model call (> 1: multi-leaf mode with virtual
    visits, which changes the search policy; 1 is the standard search)."""
    num_sampled_actions: int = 20
    """K, the actions sampled at each node of a continuous-action search (Sampled MuZero);
    unused by discrete searches."""
    sample_temperature: float = 1.0
    """tau > 0 of a continuous search's sampling distribution beta: the policy's Gaussian with its
    standard deviation times tau (1: beta is the policy itself, and the corrected prior
    beta-hat/beta * pi is uniform over the K samples); see ``zerokv.search.sampled``."""

    def __post_init__(self) -> None:
        owner, put = "SearchConfig", object.__setattr__  # frozen: store the normalised values
        for name in ("num_simulations", "leaves_per_call", "num_sampled_actions"):
            put(self, name, check_positive_int(name, getattr(self, name), owner=owner))
        for name in ("pb_c_base", "pb_c_init", "dirichlet_alpha", "sample_temperature"):
            put(self, name, check_float(name, getattr(self, name), low=0.0, low_open=True, owner=owner))
        for name in ("discount", "exploration_fraction"):
            put(self, name, check_float(name, getattr(self, name), low=0.0, high=1.0, owner=owner))
        check_choice("unvisited_q", self.unvisited_q, UNVISITED_Q_MODES, owner=owner)
