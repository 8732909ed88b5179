"""Batched MuZero Monte Carlo Tree Search (see `zerokv.search.mcts`)."""

from zerokv.search.mcts import (
    NO_PARENT,
    ROOT_INDEX,
    UNVISITED,
    RecurrentFn,
    RecurrentFnOutput,
    RootFnOutput,
    SearchOutput,
    muzero_search,
)
from zerokv.search.plan import SearchConfig, plan, search_from_roots
from zerokv.search.reanalyze import ReanalysisOutput, Reanalyzer

__all__ = [
    "NO_PARENT",
    "ROOT_INDEX",
    "UNVISITED",
    "RecurrentFn",
    "ReanalysisOutput",
    "Reanalyzer",
    "RecurrentFnOutput",
    "RootFnOutput",
    "SearchConfig",
    "SearchOutput",
    "muzero_search",
    "plan",
    "search_from_roots",
]
