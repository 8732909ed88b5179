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
from zerokv.search.plan import SearchConfig, plan

__all__ = [
    "NO_PARENT",
    "ROOT_INDEX",
    "UNVISITED",
    "RecurrentFn",
    "RecurrentFnOutput",
    "RootFnOutput",
    "SearchConfig",
    "SearchOutput",
    "muzero_search",
    "plan",
]
