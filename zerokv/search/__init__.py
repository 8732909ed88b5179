"""Batched MuZero Monte Carlo Tree Search (see `zerokv.search.mcts`)."""

from zerokv.search.config import UNVISITED_Q_MODES, SearchConfig
from zerokv.search.mcts import muzero_search
from zerokv.search.plan import model_recurrent_fn, plan, search_from_roots
from zerokv.search.reanalyze import ReanalysisOutput, Reanalyzer
from zerokv.search.records import (
    Expansion,
    RecurrentFn,
    RecurrentFnOutput,
    RootFnOutput,
    SearchOutput,
)
from zerokv.search.sampled import SampledSearchOutput, sample_actions, sampled_search
from zerokv.search.tree import NO_PARENT, ROOT_INDEX, UNVISITED

__all__ = [
    "NO_PARENT",
    "ROOT_INDEX",
    "UNVISITED",
    "UNVISITED_Q_MODES",
    "Expansion",
    "ReanalysisOutput",
    "Reanalyzer",
    "RecurrentFn",
    "RecurrentFnOutput",
    "RootFnOutput",
    "SampledSearchOutput",
    "SearchConfig",
    "SearchOutput",
    "model_recurrent_fn",
    "muzero_search",
    "plan",
    "sample_actions",
    "sampled_search",
    "search_from_roots",
]
