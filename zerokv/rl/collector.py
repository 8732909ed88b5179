"""Collector: B gymnasium envs, one batched MCTS search per step with the world model's caches.

Episodes are reproducible by construction: episode k of env i starts from
``reset(seed=hash(seed, i, k))`` — gymnasium's auto-reset is overridden by a seeded reset — so a
checkpoint only stores each env's episode index and the actions since its reset, and a resumed run
restores every env exactly by replaying them.

Per env the collector keeps the open game segment, the recent real history (observations and
actions) for rebuilding root contexts after a weight update, and the action pending for the next
``initial_inference``.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from zerokv.model.world_model import NO_ACTION
from zerokv.rl.envs import make_vector_env
from zerokv.rl.replay import GameSegment, ReplayBuffer
from zerokv.search import SearchConfig, SearchOutput, plan


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, env_index, episode]).generate_state(1)[0])


@dataclass(slots=True)
class EnvTrack:
    """One env's running state (everything a checkpoint needs to restore it)."""

    episode: int = 0
    """Episodes started so far (the current one's index)."""
    episode_actions: list[int] = field(default_factory=list)
    """Actions since the current episode's reset (replayed on resume)."""
    episode_return: float = 0.0
    history_obs: deque = field(default_factory=deque)
    """Recent root observations (for rebuilding the root context)."""
    history_actions: deque = field(default_factory=deque)
    """Actions between them."""
    pending_action: int = NO_ACTION
    """Action taken since the last root: the next initial_inference extends with it."""
    segment: GameSegment | None = None
    cut_pending: bool = False
    """The open segment is full; close it with the next root value as its bootstrap."""


@dataclass(slots=True)
class StepResult:
    finished_returns: list[float]
    search: SearchOutput


class Collector:
    def __init__(
        self, env_id: str, num_envs: int, world_model, replay: ReplayBuffer, *, search: SearchConfig,
        seed: int, segment_length: int, history_steps: int, keep_root_context: bool,
    ) -> None:
        self.env_id, self.num_envs, self.seed = env_id, num_envs, seed
        self.world_model, self.replay, self.search = world_model, replay, search
        self.segment_length, self.history_steps = segment_length, history_steps
        self.keep_root_context = keep_root_context
        self.envs = make_vector_env(env_id, num_envs, seed)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self.tracks = [EnvTrack() for _ in range(num_envs)]
        self.obs = np.zeros((num_envs, *world_model.config.observation_shape), np.float32)
        self._reset(np.ones(num_envs, bool))

    # ------------------------------------------------------------------ episodes
    def _reset(self, mask: np.ndarray) -> None:
        seeds = [episode_seed(self.seed, i, t.episode) if m else None for i, (t, m) in enumerate(zip(self.tracks, mask, strict=True))]
        obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": mask})
        for i in np.flatnonzero(mask):
            t = self.tracks[i]
            t.episode_actions, t.episode_return, t.pending_action = [], 0.0, NO_ACTION
            t.history_obs = deque(maxlen=self.history_steps)
            # Same length: the newest action is the pending one, after the newest observation.
            t.history_actions = deque(maxlen=self.history_steps)
            t.segment, t.cut_pending = self._new_segment(), False
            self.obs[i] = obs[i]

    def _new_segment(self) -> GameSegment:
        cfg = self.world_model.config
        return GameSegment(cfg.observation_shape, cfg.action_space_size)

    # ---------------------------------------------------------------------- step
    def step(self, temperature: float) -> StepResult:
        """One search over all envs, one env step each; completed segments go to the replay buffer."""
        last = [t.pending_action for t in self.tracks]
        out = plan(self.world_model, self.obs, config=self.search, rng=self.rng, last_actions=last,
                   add_noise=True, temperature=temperature)
        for i, t in enumerate(self.tracks):
            if t.cut_pending:  # the segment's bootstrap is this root's search value
                t.segment.close(terminated=False, bootstrap_value=float(out.root_value[i]))
                self.replay.add(t.segment)
                t.segment, t.cut_pending = self._new_segment(), False
            t.history_obs.append(self.obs[i].copy())
        actions = out.action
        next_obs, rewards, terminated, truncated, _ = self.envs.step(actions)
        finished = []
        done = np.logical_or(terminated, truncated)
        for i, t in enumerate(self.tracks):
            a = int(actions[i])
            t.segment.append(self.obs[i], a, float(rewards[i]), float(out.root_value[i]), out.search_policy[i])
            t.episode_actions.append(a)
            t.episode_return += float(rewards[i])
            t.history_actions.append(a)
            t.pending_action = a
            if done[i]:
                # Truncated: bootstrap from this step's root value (the final state is never searched).
                t.segment.close(terminated=bool(terminated[i]),
                                bootstrap_value=0.0 if terminated[i] else float(out.root_value[i]))
                self.replay.add(t.segment)
                finished.append(t.episode_return)
                t.episode += 1
            elif len(t.segment) >= self.segment_length:
                t.cut_pending = True
            self.obs[i] = next_obs[i]
        if done.any():
            self._reset(done)
        return StepResult(finished, out)

    def rebuild_contexts(self) -> None:
        """After a weight update (caches cleared): rebuild each env's root context, or not."""
        if not self.keep_root_context:
            return
        rows = [i for i, t in enumerate(self.tracks) if t.pending_action != NO_ACTION and t.history_obs]
        if rows:
            self.world_model.rebuild_root_contexts(
                rows, [np.stack(self.tracks[i].history_obs) for i in rows],
                [list(self.tracks[i].history_actions)[:-1] for i in rows],
            )

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        tracks = []
        for t in self.tracks:
            rows = t.segment.open_steps()
            tracks.append({
                "episode": t.episode, "episode_actions": list(t.episode_actions),
                "episode_return": t.episode_return, "pending_action": t.pending_action,
                "cut_pending": t.cut_pending,
                "history_obs": torch.as_tensor(np.stack(t.history_obs)) if t.history_obs else None,
                "history_actions": list(t.history_actions),
                "segment_obs": torch.as_tensor(np.stack([r[0] for r in rows])) if rows else None,
                "segment_steps": [[r[1], r[2], r[3]] for r in rows],
                "segment_policies": torch.as_tensor(np.stack([r[4] for r in rows])) if rows else None,
            })
        return {"tracks": tracks, "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = _rng_load(state["rng"])
        for i, (t, s) in enumerate(zip(self.tracks, state["tracks"], strict=True)):
            t.episode = s["episode"]
            mask = np.zeros(self.num_envs, bool)
            mask[i] = True
            self._reset(mask)
            env = self.envs.envs[i]
            obs = self.obs[i]
            for a in s["episode_actions"]:  # replay the episode so far: gymnasium envs are deterministic
                obs, *_ = env.step(a)
            self.obs[i] = obs
            t.episode_actions = list(s["episode_actions"])
            t.episode_return, t.pending_action = s["episode_return"], s["pending_action"]
            t.cut_pending = s["cut_pending"]
            if s["history_obs"] is not None:
                t.history_obs.extend(s["history_obs"].numpy())
            t.history_actions.extend(s["history_actions"])
            for j, (a, r, v) in enumerate(s["segment_steps"]):
                t.segment.append(s["segment_obs"][j].numpy(), int(a), float(r), float(v), s["segment_policies"][j].numpy())

    def close(self) -> None:
        self.envs.close()


def _rng_state(rng: np.random.Generator) -> str:
    # JSON text: the 128-bit PCG64 state is no tensor, and weights_only loading takes strings.
    return json.dumps(rng.bit_generator.state)


def _rng_load(text: str) -> dict:
    return json.loads(text)
