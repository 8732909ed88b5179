"""Collector: B gymnasium envs, one batched MCTS search per step with the world model's caches.

Episodes are reproducible by construction: episode k of env i starts from
``reset(seed=hash(seed, i, k))`` — gymnasium's auto-reset is overridden by a seeded reset — so a
checkpoint stores each env's episode index and the actions since its reset, and a resumed run
restores every env exactly by replaying them. The replay also gives back every observation of
the episode, so a checkpoint holds no frames: the open segment's and the history's observations
are the last ones of that replay.

Per env the collector keeps the open game segment, the recent real history (observations and
actions) for rebuilding root contexts after a weight update, and the action pending for the next
``initial_inference``. Observations stay in the env's dtype (uint8 frames) everywhere but at the
model's door (``observations_as_float``).

Training-only Atari semantics, as LightZero's UniZero collects (its evaluator uses neither):
``clip_rewards`` stores sign(reward) in replay (the logged returns stay raw), and
``terminal_on_life_loss`` ends the segment as terminal when a life is lost and restarts the
env's root context — the learner sees an episode end — while the game itself goes on.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from zerokv.model.world_model import NO_ACTION
from zerokv.rl.envs import (
    DEFAULT_ENV_OPTIONS,
    EnvOptions,
    VectorEnvMode,
    make_vector_env,
    replay_actions,
)
from zerokv.rl.observations import observations_as_float
from zerokv.rl.replay import GameSegment
from zerokv.search import SearchConfig, SearchOutput, plan


class SegmentSink(Protocol):
    """Where finished segments go: a `ReplayBuffer`, or a collector actor's outbox."""

    def add(self, segment: GameSegment) -> None: ...


NO_LIVES = -1
"""`EnvTrack.lives` of an env that reports no lives (non-Atari): life loss never fires."""


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    return int(np.random.SeedSequence([seed, env_index, episode]).generate_state(1)[0])


@dataclass(slots=True)
class EnvTrack:
    """One env's running state (everything a checkpoint needs to restore it)."""

    episode: int = 0
    """Episodes started so far (the current one's index)."""
    episode_actions: list = field(default_factory=list)
    """Actions since the current episode's reset (replayed on resume): ints, or float32 vectors [D]."""
    episode_return: float = 0.0
    """Raw (unclipped) return of the current episode so far."""
    history_obs: deque = field(default_factory=deque)
    """Recent root observations (for rebuilding the root context)."""
    history_actions: deque = field(default_factory=deque)
    """Actions between them."""
    pending_action: int | np.ndarray = NO_ACTION
    """Action taken since the last root: the next initial_inference extends with it (a vector [D]
    for continuous actions)."""
    segment: GameSegment | None = None
    cut_pending: bool = False
    """The open segment is full; close it with the next root value as its bootstrap."""
    lives: int = NO_LIVES
    """Lives left as the env last reported them."""


@dataclass(slots=True)
class StepResult:
    finished_returns: list[float]
    """Raw returns of the episodes that ended in this step."""
    search: SearchOutput
    search_seconds: float = 0.0
    """Wall time of the step's search (``plan``: initial inference and MCTS)."""
    env_seconds: float = 0.0
    """Wall time of the step's env stepping and resets."""


class Collector:
    def __init__(
        self, env_id: str, num_envs: int, world_model, replay: SegmentSink, *, search: SearchConfig,
        seed: int, segment_length: int, history_steps: int, keep_root_context: bool,
        env_options: EnvOptions = DEFAULT_ENV_OPTIONS, clip_rewards: bool = False, terminal_on_life_loss: bool = False,
        vector_env: VectorEnvMode = "sync",
    ) -> None:
        self.env_id, self.num_envs, self.seed = env_id, num_envs, seed
        self.world_model, self.replay, self.search = world_model, replay, search
        self.segment_length, self.history_steps = segment_length, history_steps
        self.keep_root_context = keep_root_context
        self.weights_version = 0
        """Version of the searching model's weights, stamped on each segment at its first step."""
        self.clip_rewards, self.terminal_on_life_loss = clip_rewards, terminal_on_life_loss
        self.envs = make_vector_env(env_id, num_envs, seed, options=env_options, mode=vector_env)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self.tracks = [EnvTrack() for _ in range(num_envs)]
        space = self.envs.single_observation_space
        self.obs = np.zeros((num_envs, *space.shape), space.dtype)  # current observations, env dtype
        self._reset(np.ones(num_envs, bool))

    # ------------------------------------------------------------------ episodes
    def _reset(self, mask: np.ndarray) -> None:
        seeds = [episode_seed(self.seed, i, t.episode) if m else None for i, (t, m) in enumerate(zip(self.tracks, mask, strict=True))]
        obs, info = self.envs.reset(seed=seeds, options={"reset_mask": mask})
        lives = _lives(info, self.num_envs)
        for i in np.flatnonzero(mask):
            t = self.tracks[i]
            t.episode_actions, t.episode_return = [], 0.0
            t.lives = int(lives[i])
            self._start_learning_episode(t)
            self.obs[i] = obs[i]

    def _start_learning_episode(self, t: EnvTrack) -> None:
        """A new episode for the learner (after a reset, or a lost life): fresh segment and
        root context, nothing pending."""
        t.pending_action = NO_ACTION
        t.history_obs = deque(maxlen=self.history_steps)
        # Same length: the newest action is the pending one, after the newest observation.
        t.history_actions = deque(maxlen=self.history_steps)
        t.segment, t.cut_pending = self._new_segment(), False

    def _new_segment(self) -> GameSegment:
        cfg = self.world_model.config
        return GameSegment(cfg.observation_shape, cfg.action_space_size, self.obs.dtype, action_dim=cfg.action_dim)

    # ---------------------------------------------------------------------- step
    def step(self, temperature: float) -> StepResult:
        """One search over all envs, one env step each; completed segments go to the replay buffer."""
        last = [t.pending_action for t in self.tracks]
        t_search = time.perf_counter()
        model_obs = observations_as_float(self.obs, self.world_model.config.device)
        out = plan(self.world_model, model_obs, config=self.search, rng=self.rng, last_actions=last,
                   add_noise=True, temperature=temperature)
        for i, t in enumerate(self.tracks):
            if t.cut_pending:  # the segment's bootstrap is this root's search value
                t.segment.close(terminated=False, bootstrap_value=float(out.root_value[i]))
                self.replay.add(t.segment)
                t.segment, t.cut_pending = self._new_segment(), False
            t.history_obs.append(self.obs[i].copy())
        actions = out.action
        t_env = time.perf_counter()
        next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
        env_seconds = time.perf_counter() - t_env
        stored = np.sign(rewards) if self.clip_rewards else rewards
        lives = _lives(info, self.num_envs)
        finished = []
        done = np.logical_or(terminated, truncated)
        sampled = getattr(out, "sampled_actions", None)  # [B, K, D] in a continuous search, else None
        for i, t in enumerate(self.tracks):
            a = int(actions[i]) if sampled is None else actions[i].copy()
            if not len(t.segment):
                t.segment.weights_version = self.weights_version
            t.segment.append(self.obs[i], a, float(stored[i]), float(out.root_value[i]), out.search_policy[i],
                             None if sampled is None else sampled[i])
            t.episode_actions.append(a)
            t.episode_return += float(rewards[i])
            t.history_actions.append(a)
            t.pending_action = a
            life_lost = self.terminal_on_life_loss and NO_LIVES < lives[i] < t.lives
            t.lives = int(lives[i])
            if done[i]:
                # Truncated: bootstrap from this step's root value (the final state is never searched).
                t.segment.close(terminated=bool(terminated[i]),
                                bootstrap_value=0.0 if terminated[i] else float(out.root_value[i]))
                self.replay.add(t.segment)
                finished.append(t.episode_return)
                t.episode += 1
            elif life_lost:
                t.segment.close(terminated=True)
                self.replay.add(t.segment)
                self._start_learning_episode(t)
            elif len(t.segment) >= self.segment_length:
                t.cut_pending = True
            self.obs[i] = next_obs[i]
        if done.any():
            t_reset = time.perf_counter()
            self._reset(done)
            env_seconds += time.perf_counter() - t_reset
        return StepResult(finished, out, search_seconds=t_env - t_search, env_seconds=env_seconds)

    def rebuild_contexts(self) -> None:
        """After a weight update (caches cleared): rebuild each env's root context, or not."""
        if not self.keep_root_context:
            return
        rows = [i for i, t in enumerate(self.tracks) if _has_action(t.pending_action) and t.history_obs]
        if rows:
            self.world_model.rebuild_root_contexts(
                rows, [observations_as_float(np.stack(self.tracks[i].history_obs)).numpy() for i in rows],
                [list(self.tracks[i].history_actions)[:-1] for i in rows],
            )

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly, without observations (rebuilt by replay)."""
        tracks = []
        for t in self.tracks:
            steps = t.segment.open_steps()
            tracks.append({
                "episode": t.episode, "episode_actions": [_plain(a) for a in t.episode_actions],
                "episode_return": t.episode_return, "pending_action": _plain(t.pending_action),
                "cut_pending": t.cut_pending, "lives": t.lives,
                "history_actions": [_plain(a) for a in t.history_actions], "history_length": len(t.history_obs),
                "segment_actions": [_plain(s.action) for s in steps],
                "segment_sampled_actions": torch.as_tensor(np.stack([s.sampled_actions for s in steps]))
                if steps and steps[0].sampled_actions is not None else None,
                "segment_rewards": torch.tensor([s.reward for s in steps], dtype=torch.float32),
                "segment_root_values": torch.tensor([s.root_value for s in steps], dtype=torch.float32),
                "segment_policies": torch.as_tensor(np.stack([s.policy for s in steps])) if steps else None,
            })
        return {"tracks": tracks, "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = _rng_load(state["rng"])
        for i, (t, s) in enumerate(zip(self.tracks, state["tracks"], strict=True)):
            t.episode = s["episode"]
            mask = np.zeros(self.num_envs, bool)
            mask[i] = True
            self._reset(mask)
            episode_actions = [_restore(a) for a in s["episode_actions"]]
            recent = self._replay_episode(i, episode_actions)
            t.episode_actions = episode_actions
            t.episode_return, t.pending_action = s["episode_return"], _restore(s["pending_action"])
            t.cut_pending, t.lives = s["cut_pending"], s["lives"]
            t.history_obs.extend(recent[len(recent) - s["history_length"]:])
            t.history_actions.extend(_restore(a) for a in s["history_actions"])
            seg_obs = recent[len(recent) - len(s["segment_actions"]):]
            sampled = s.get("segment_sampled_actions")
            for j, a in enumerate(s["segment_actions"]):
                t.segment.append(seg_obs[j], _restore(a), float(s["segment_rewards"][j]),
                                 float(s["segment_root_values"][j]), s["segment_policies"][j].numpy(),
                                 None if sampled is None else sampled[j].numpy())

    def _replay_episode(self, i: int, actions: list[int]) -> list[np.ndarray]:
        """Steps env `i` (just reset with its episode seed) through `actions` — gymnasium envs
        are deterministic given the seed — leaving `self.obs[i]` at the end; returns the last
        observations before each action (enough for the open segment and the history)."""
        keep = max(self.segment_length, self.history_steps)
        recent, self.obs[i] = replay_actions(self.envs, {i: actions}, keep)[i]
        return recent

    def close(self) -> None:
        self.envs.close()


def _has_action(action) -> bool:
    """True unless ``action`` is ``NO_ACTION`` (a continuous action is a vector, never NO_ACTION)."""
    return not isinstance(action, (int, np.integer)) or action != NO_ACTION


def _plain(action):
    """An action as a checkpoint stores it: an int, or a list of floats (continuous)."""
    return int(action) if isinstance(action, (int, np.integer)) else [float(x) for x in action]


def _restore(action):
    """The inverse of :func:`_plain`: an int, or a float32 vector."""
    return int(action) if isinstance(action, (int, np.integer)) else np.asarray(action, np.float32)


def _lives(info: dict, num_envs: int) -> np.ndarray:
    """`[num_envs]` lives from a vector env's info (ALE reports them), `NO_LIVES` where absent."""
    if "lives" not in info:
        return np.full(num_envs, NO_LIVES)
    present = info.get("_lives", np.ones(num_envs, bool))
    return np.where(present, info["lives"], NO_LIVES).astype(np.int64)


def _rng_state(rng: np.random.Generator) -> str:
    # JSON text: the 128-bit PCG64 state is no tensor, and weights_only loading takes strings.
    return json.dumps(rng.bit_generator.state)


def _rng_load(text: str) -> dict:
    return json.loads(text)
