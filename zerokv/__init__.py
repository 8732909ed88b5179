"""zerokv: an exact, fast KV cache for transformer world models inside MCTS."""

__all__: list[str] = []
