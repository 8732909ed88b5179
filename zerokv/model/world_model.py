"""``WorldModel``: a UniZero-style transformer world model with the KV cache built in.

Tokens: every environment step contributes an observation token (the latent state) and an action
token. Heads read the token that carries what they predict — only that token computes them:

    observation token o_t → value_t, policy_t
    action token a_t      → reward_t, next latent ô_{t+1}

Search uses two entry points. ``initial_inference`` encodes each env's observation, extends that
env's real-history context (the previous root, found in the env's init pool) with
``[last action, observation]`` and stores the root. ``recurrent_inference`` expands one leaf per
env: it finds each parent's past (init pool, then recurrent pool), assembles the batch, runs the
action token then the predicted-latent token, and stores each child.

The context backend (``config.cache_backend``) is chosen once, here; no method branches on it.

``config.dtype`` is the dtype of the weights, activations and caches: "float32" (the exact
reference) or "bfloat16" (a search-only mode). The entry points take float32 inputs and return
float32 outputs either way; a bfloat16 search copy of a float32 training model is kept current
with :meth:`WorldModel.load_weights_from`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from zerokv.model import inputs
from zerokv.model.backends import make_backend
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import CacheWork, KeyHash, NodeKey, default_key_hash
from zerokv.model.encoders import SimNorm, make_encoder, mlp_head
from zerokv.model.session import SearchNodes, ThreadOwner
from zerokv.model.support import support_to_scalar
from zerokv.model.transformer import Transformer

logger = logging.getLogger(__name__)
NO_ACTION = inputs.NO_ACTION  # last_actions entry of an env whose episode just started


@dataclass(frozen=True, slots=True)
class InferenceOutput:
    """One batched inference (B rows).

    value:         [B] float32, expected value (categorical support → scalar)
    reward:        [B] float32, predicted reward of the transition into this node (0 at roots)
    policy_logits: [B, A] float32
    latent_state:  [B, E] float32, the node's latent (root: encoded observation; else ô)
    value_logits:  [B, 2S+1] float32, the categorical value the scalar is read from
    reward_logits: [B, 2S+1] float32 (None at roots: no transition)

    The scalars are the expectation over the support mapped through h⁻¹, which magnifies tiny
    logit differences (≈ 300 × h⁻¹' at support 601); exactness is checked on the logits and latent.
    Every field is float32 whatever the model's dtype (a bfloat16 model's outputs are cast once,
    at the end of each entry point; its scalars are read from the logits in float64).
    """

    value: torch.Tensor
    reward: torch.Tensor
    policy_logits: torch.Tensor
    latent_state: torch.Tensor
    value_logits: torch.Tensor | None = None
    reward_logits: torch.Tensor | None = None


@dataclass(frozen=True, slots=True)
class SequenceOutput:
    """Training forward over ``[o_0, a_0, …, o_K, a_K]`` (B rows, K+1 steps).

    value_logits [B, K+1, 2S+1] and policy_logits [B, K+1, A] read at observation tokens;
    reward_logits [B, K+1, 2S+1] and next_latent [B, K+1, E] at action tokens;
    latents [B, K+1, E] the encoded observations.
    """

    value_logits: torch.Tensor
    policy_logits: torch.Tensor
    reward_logits: torch.Tensor
    next_latent: torch.Tensor
    latents: torch.Tensor


class WorldModel(nn.Module):
    """The network, its three inference entry points and ``forward_sequence`` for training.

    Inputs are checked once at each entry point (:mod:`zerokv.model.inputs`): a refused call
    raises ``ValueError``/``TypeError`` and stores nothing.

    Threads: a model belongs to one thread at a time. Its search state (the rooted envs, the
    search's node ids, the cache epoch, the batch in flight) is one per model, so two threads'
    interleaved searches would mix even under a lock. The first call of ``initial_inference``,
    ``initial_inference_from_history`` or ``recurrent_inference`` binds the model to the calling
    thread; any entry point (or ``clear_caches``) called from another thread raises a
    ``RuntimeError`` naming both threads. For one search per thread give each thread its own
    model: ``model.arena(n)`` shares the weights with caches of its own (train through the
    original), ``model.copy_with()`` copies them. To hand a model over, call
    ``model.release_thread()`` in its thread; the next call from any thread binds it again (a
    finished thread releases it too). Building, copying and ``forward_sequence`` bind nothing.
    """

    def __init__(self, config: WorldModelConfig, *, key_hash: KeyHash = default_key_hash) -> None:
        super().__init__()
        cfg = self.config = config
        e = cfg.embed_dim
        self.encoder = make_encoder(cfg)
        self.action_embedding = nn.Embedding(cfg.action_space_size, e)
        self.transformer = Transformer(cfg)
        self.head_value = mlp_head(e, cfg.support_bins)
        self.head_policy = mlp_head(e, cfg.action_space_size)
        self.head_reward = mlp_head(e, cfg.support_bins)
        self.head_latent = nn.Sequential(mlp_head(e, e), SimNorm(cfg.latent_group_size))
        self.to(cfg.device, cfg.torch_dtype)
        self._init_caches(key_hash)

    def _init_caches(self, key_hash: KeyHash) -> None:
        """Fresh caches for ``self.config.env_num`` envs, and their counters."""
        cfg = self.config
        self._key_hash = key_hash
        self.work = CacheWork()
        self._backend = make_backend(cfg, self.transformer, self.work, key_hash)
        self._epoch = 0  # one per initial_inference: keys of different searches never meet
        self._root_keys: list[NodeKey | None] = [None] * cfg.env_num
        self._nodes = SearchNodes(cfg.env_num, cfg.num_simulations)
        self._owner = ThreadOwner()
        self._fallbacks = 0
        self._node_hits = self._node_misses = 0  # per node lookup (a pool-level hierarchical miss is not one)
        self._last_log = time.monotonic()

    def arena(self, env_num: int) -> WorldModel:
        """A world model sharing these weights (the same modules) with caches of its own for ``env_num`` envs.

        For searches beside the collector's, e.g. reanalysis of hundreds of replayed positions at
        once: they get pools (or a paged arena) sized for their own batch and can neither evict
        nor overwrite the collecting envs' root contexts. A weight update is seen by both; train
        through the original, not the view.
        """
        view = WorldModel.__new__(WorldModel)
        nn.Module.__init__(view)
        for name, module in self.named_children():
            view.add_module(name, module)
        view.config = dataclasses.replace(self.config, env_num=env_num)  # validates env_num
        view.train(self.training)
        view._init_caches(self._key_hash)
        return view

    # ----------------------------------------------------------------- the seeds' names
    @property
    def kv_cache_manager(self):
        """The backend's store (a KVCacheManager, a LegacyKVStore, or the reference's TokenStore)."""
        return self._backend.store

    @property
    def keys_values_wm_list(self) -> list:
        return self._backend.store.keys_values_wm_list

    @property
    def keys_values_wm_size_list(self) -> list[int]:
        return self._backend.store.keys_values_wm_size_list

    def retrieve_or_generate_kvcache(
        self, latent_state: torch.Tensor, env_ids: Sequence[int], keys: Sequence
    ) -> list[int]:
        """Find each row's past (init pool, then recurrent pool) into ``keys_values_wm_list``.

        A miss rebuilds the node's past from its latent alone — a context-free guess the
        reference made silently; here it is counted in ``cache_stats()["fallbacks"]``.
        Returns the sizes (tokens) of the pasts.
        """
        pasts = self._backend.lookup(env_ids, keys)
        missing = [i for i, p in enumerate(pasts) if p is None]
        self._node_hits += len(pasts) - len(missing)
        self._node_misses += len(missing)
        if missing:
            self._fallbacks += len(missing)
            generated = self._backend.generate(
                latent_state[missing].to(self.config.torch_dtype), [env_ids[i] for i in missing],
                [keys[i] for i in missing],
            )
            for i, past in zip(missing, generated, strict=True):
                pasts[i] = past
        self.keys_values_wm_list[:] = pasts
        self.keys_values_wm_size_list[:] = self._backend.sizes(pasts)
        return list(self.keys_values_wm_size_list)

    def trim_and_pad_kv_cache(self, new_tokens: int = 2):
        """Assemble ``keys_values_wm_list`` into one batch context with room for ``new_tokens``."""
        return self._backend.assemble(list(self.keys_values_wm_list), new_tokens)

    def update_cache_context(self, batch, env_ids: Sequence[int], keys: Sequence, *, is_init_infer: bool) -> None:
        """Store each row's new past (roots in the env's init pool, other nodes in the recurrent pool)."""
        self._backend.store_batch(batch, env_ids, keys, is_init_infer)

    def clear_caches(self) -> None:
        """Empty every pool (e.g. after a weight update: stale caches would mix old and new weights)."""
        self._owner.check("clear_caches")
        if self.config.enable_cache_logging:
            logger.info("cache stats before clear: %s", self.cache_stats())
        self._backend.clear()

    def release_thread(self) -> None:
        """Hand the model over: unbind it from its thread (call it there); the next entry-point
        call from any thread binds it to that thread. See the class docstring's thread rule."""
        self._owner.release()

    def copy_with(self, **changes) -> WorldModel:
        """A new model with this one's weights (cast) under ``dataclasses.replace(config, **changes)``,
        e.g. ``dtype="bfloat16"`` for a search copy or ``cache_backend="none"`` for a reference.

        It has its own weights and caches (unlike :meth:`arena`, which shares the modules) and is in
        this model's train/eval mode; building it leaves the caller's torch RNG untouched (its own
        init draws are overwritten anyway).
        """
        with torch.random.fork_rng(devices=[]):
            copy = WorldModel(dataclasses.replace(self.config, **changes), key_hash=self._key_hash)
        copy.train(self.training)
        copy.load_weights_from(self)
        return copy

    @torch.no_grad()
    def load_weights_from(self, other: WorldModel) -> None:
        """Copy ``other``'s weights into this model, cast to this model's dtype; clears the caches.

        How a bfloat16 search copy follows its float32 training model after each weight update.
        The caches are cleared as after any weight update (every stored key/value was computed with
        the old weights); a caller that keeps root contexts rebuilds them next
        (``rebuild_root_contexts``), as the trainer does. The two models must have the same
        architecture (a ValueError names the first parameter that differs); env_num, the backend
        and the dtype may differ.
        """
        mine, theirs = self.state_dict(), other.state_dict()
        for name in [*mine, *(k for k in theirs if k not in mine)]:
            a, b = mine.get(name), theirs.get(name)
            if a is None or b is None or a.shape != b.shape:
                shapes = [None if t is None else tuple(t.shape) for t in (b, a)]
                raise ValueError(f"load_weights_from: parameter {name!r} of shape {shapes[0]} cannot be "
                                 f"copied into {shapes[1]}: the architectures differ")
        for name, tensor in mine.items():
            tensor.copy_(theirs[name])  # casts (e.g. float32 → bfloat16)
        self.clear_caches()

    def cache_stats(self) -> dict:
        """Node lookups (hits, misses, hit_rate), evictions, fallbacks, live entries, bytes, summary.

        A hit or miss here is one node's lookup (a root's previous context, or a parent inside a
        search); the per-pool counters in ``summary`` count each pool probed.
        """
        store = self._backend.store
        totals = store.totals()
        queries = self._node_hits + self._node_misses
        return {
            "backend": self._backend.name,
            "hits": self._node_hits, "misses": self._node_misses, "evictions": totals.evictions,
            "fallbacks": self._fallbacks, "size": totals.size,
            "hit_rate": self._node_hits / queries if queries else 0.0,
            "nbytes": store.nbytes, "summary": store.get_stats_summary(),
        }

    def reset_cache_stats(self) -> None:
        self._backend.store.reset_stats()
        self._fallbacks = self._node_hits = self._node_misses = 0

    # ----------------------------------------------------------------------- inference
    @torch.no_grad()
    def initial_inference(
        self, obs, env_ids: Sequence[int] | None = None, last_actions: Sequence[int] | None = None
    ) -> InferenceOutput:
        """Roots for a batch of envs: ``obs [B, *observation_shape]``.

        ``last_actions[i]`` is the action taken in env ``env_ids[i]`` since its previous root
        (``NO_ACTION`` or ``None`` for all: the episode starts). An env whose previous root is in
        its init pool extends that context with ``[last action, observation]``; otherwise it
        starts from the observation alone — the only place a context-free start is allowed, and
        a counted fallback when the env had a history.
        """
        self._owner.claim("initial_inference")
        cfg = self.config
        obs = inputs.observations(obs, cfg.observation_shape, steps=False, name="obs")
        env_ids = inputs.env_ids(env_ids, obs.shape[0], cfg.env_num, unique=True)
        actions = inputs.actions(last_actions, obs.shape[0], cfg.action_space_size, name="last_actions",
                                 allow_no_action=True)
        inputs.finite(obs, env_ids, "obs")
        obs = obs.to(cfg.device, cfg.torch_dtype)
        latents = self.encoder(obs)  # (B, E)
        self._epoch += 1
        prev = [self._root_keys[e] if a != NO_ACTION else None for e, a in zip(env_ids, actions, strict=True)]
        pasts = self._backend.lookup(env_ids, prev)
        lost = sum(k is not None and p is None for k, p in zip(prev, pasts, strict=True))
        self._fallbacks += lost
        self._node_misses += lost
        self._node_hits += sum(p is not None for p in pasts)
        keys = self._backend.root_keys(env_ids, latents, self._epoch)
        b = obs.shape[0]
        value_logits = latents.new_zeros(b, self.config.support_bins)
        policy_logits = latents.new_zeros(b, self.config.action_space_size)
        extend = [i for i in range(b) if pasts[i] is not None]
        fresh = [i for i in range(b) if pasts[i] is None]
        for rows, with_action in ((extend, True), (fresh, False)):
            if not rows:
                continue
            tokens = latents[rows].unsqueeze(1)  # (n, 1, E)
            if with_action:
                act = self.action_embedding(torch.as_tensor([actions[i] for i in rows], device=latents.device))
                tokens = torch.cat([act.unsqueeze(1), tokens], dim=1)  # (n, 2, E): [a_{t-1}, o_t]
            batch = self._backend.assemble(
                [pasts[i] if with_action else self._backend.empty() for i in rows], tokens.shape[1]
            )
            h = batch.forward(tokens)[:, -1]
            value_logits[rows], policy_logits[rows] = self.head_value(h), self.head_policy(h)
            row_envs, row_keys = [env_ids[i] for i in rows], [keys[i] for i in rows]
            self.update_cache_context(batch, row_envs, row_keys, is_init_infer=True)
        for e, k in zip(env_ids, keys, strict=True):
            self._root_keys[e] = k
        self._nodes.start(env_ids)
        self._maybe_log()
        return _float32(InferenceOutput(
            value=support_to_scalar(value_logits, self.config.support_size),
            reward=latents.new_zeros(b), policy_logits=policy_logits, latent_state=latents,
            value_logits=value_logits,
        ))

    @torch.no_grad()
    def initial_inference_from_history(
        self, observations, actions, env_ids: Sequence[int] | None = None, lengths: Sequence[int] | None = None,
    ) -> InferenceOutput:
        """Roots whose contexts are rebuilt from their real histories with the current weights.

        ``observations [B, T, *observation_shape]``: each env's last T observations, the root's
        last; ``actions [B, T-1]``: the actions taken between them. ``lengths [B]`` (default all
        T): row i's history is its last ``lengths[i]`` observations, earlier entries are ignored
        (rows are grouped by length: one batched forward per distinct length). Each root's past is
        the teacher-forced pass over ``[o, a, …, o]``: the same as the collector's root context
        when the history covers :attr:`WorldModelConfig.root_history_steps`. Stores the roots in
        their envs' init pools, like ``initial_inference``; used to rebuild contexts after a
        weight update and for reanalysis.
        """
        self._owner.claim("initial_inference_from_history")
        cfg = self.config
        obs = inputs.observations(observations, cfg.observation_shape, steps=True, name="observations")
        b, t = obs.shape[:2]  # (B, T, *obs_shape)
        env_ids = inputs.env_ids(env_ids, b, cfg.env_num, unique=True)
        acts = inputs.integers(actions, "actions")
        if acts.size != b * (t - 1):
            raise ValueError(f"{acts.size} actions for {b} histories of {t} observations (need [B, T-1])")
        acts = acts.reshape(b, t - 1)
        inputs.actions(acts.reshape(-1), acts.size, cfg.action_space_size, name="actions", allow_no_action=False)
        lengths = inputs.history_lengths(lengths, b, t)
        inputs.finite(obs, env_ids, "observations", used=torch.from_numpy(np.arange(t) >= t - lengths[:, None]))
        obs = obs.to(cfg.device, cfg.torch_dtype)
        self._epoch += 1
        value_logits = obs.new_zeros(b, cfg.support_bins)
        policy_logits = obs.new_zeros(b, cfg.action_space_size)
        root_latents = obs.new_zeros(b, cfg.embed_dim)
        for n in np.unique(lengths).tolist():
            rows = np.flatnonzero(lengths == n)
            latents = self.encoder(obs[rows, t - n:].flatten(0, 1)).view(len(rows), n, -1)  # (r, n, E)
            tokens = latents.new_zeros(len(rows), 2 * n - 1, cfg.embed_dim)  # [o, a, o, …, o]
            tokens[:, 0::2] = latents
            if n > 1:
                tokens[:, 1::2] = self.action_embedding(torch.as_tensor(acts[rows, t - n:], device=obs.device))
            batch = self._backend.assemble([self._backend.empty()] * len(rows), tokens.shape[1])
            h = batch.forward(tokens)[:, -1]
            value_logits[rows], policy_logits[rows] = self.head_value(h), self.head_policy(h)
            root_latents[rows] = latents[:, -1]
            row_envs = [env_ids[i] for i in rows.tolist()]
            keys = self._backend.root_keys(row_envs, latents[:, -1], self._epoch)
            self.update_cache_context(batch, row_envs, keys, is_init_infer=True)
            for e, k in zip(row_envs, keys, strict=True):
                self._root_keys[e] = k
        self._nodes.start(env_ids)
        return _float32(InferenceOutput(
            value=support_to_scalar(value_logits, cfg.support_size), reward=obs.new_zeros(b),
            policy_logits=policy_logits, latent_state=root_latents, value_logits=value_logits,
        ))

    def rebuild_root_contexts(self, env_ids: Sequence[int], observations: Sequence, actions: Sequence) -> None:
        """Recompute each env's root context from its recent real history with the current weights.

        ``observations[i]`` is ``[T_i, *obs_shape]`` ending with the env's latest root
        observation, ``actions[i]`` the ``T_i - 1`` actions between them. Used after
        ``clear_caches()`` following a weight update, so the next ``initial_inference`` extends a
        real context instead of restarting from the observation alone (the reference's loss).
        """
        if len(observations) != len(env_ids) or len(actions) != len(env_ids):
            raise ValueError(f"{len(env_ids)} env_ids, {len(observations)} histories, {len(actions)} action lists")
        lengths = [len(o) for o in observations]
        t = max(lengths, default=0)
        if not t:
            return
        obs = np.zeros((len(env_ids), t, *self.config.observation_shape), np.float32)  # right-aligned
        acts = np.zeros((len(env_ids), t - 1), np.int64)
        for i, (o, a) in enumerate(zip(observations, actions, strict=True)):
            if len(a) != len(o) - 1:
                raise ValueError(f"history {i}: {len(o)} observations need {len(o) - 1} actions, got {len(a)}")
            name = f"observations[{i}]"
            obs[i, t - len(o):] = inputs.observations(o, self.config.observation_shape, steps=False, name=name)
            acts[i, t - len(o):] = inputs.integers(a, f"actions[{i}]")
        self.initial_inference_from_history(obs, acts, env_ids=env_ids, lengths=lengths)

    @torch.no_grad()
    def recurrent_inference(
        self, latent_state: torch.Tensor, action, env_ids: Sequence[int] | None = None, *,
        parent_ids=None, child_ids=None,
    ) -> InferenceOutput:
        """Expand one node per row: ``latent_state [B, E]`` of the parents, ``action [B]``.

        Rows belong to the envs of the last ``initial_inference`` unless ``env_ids`` says
        otherwise; several rows may share an env (a multi-leaf search), each expanding its own
        node. ``parent_ids``/``child_ids [B]`` are the search's node ids (root = 0); the paged
        backend addresses nodes by them, the content-keyed backends ignore them. Runs the action
        token (→ reward, next latent), then the predicted latent's token (→ value, policy), and
        stores each child's past.
        """
        self._owner.claim("recurrent_inference")
        cfg = self.config
        if env_ids is None:
            env_ids = self._nodes.root_envs
        else:  # several rows may share an env (multi-leaf search), each a distinct node
            env_ids = inputs.env_ids(env_ids, len(env_ids), cfg.env_num, unique=False)
        latent_state = inputs.latent(latent_state, env_ids, cfg.embed_dim)
        actions = inputs.actions(action, len(env_ids), cfg.action_space_size, name="action", allow_no_action=False)
        ids = self._nodes.check(parent_ids, child_ids, env_ids)
        parent_ids, child_ids = (None, None) if ids is None else ids
        latent_state = latent_state.to(cfg.device, cfg.torch_dtype)
        work, t0 = self.work, time.perf_counter()
        parent_keys = self._backend.node_keys(env_ids, latent_state, parent_ids, self._epoch)
        self.retrieve_or_generate_kvcache(latent_state, env_ids, parent_keys)
        batch = self.trim_and_pad_kv_cache(new_tokens=2)
        t1 = time.perf_counter()
        act = self.action_embedding(torch.as_tensor(actions, device=latent_state.device))
        h_act = batch.forward(act.unsqueeze(1))[:, 0]  # (B, E)
        next_latent = self.head_latent(h_act)
        h_obs = batch.forward(next_latent.unsqueeze(1))[:, 0]
        value_logits, policy_logits = self.head_value(h_obs), self.head_policy(h_obs)
        reward_logits = self.head_reward(h_act)
        t2 = time.perf_counter()
        child_keys = self._backend.node_keys(env_ids, next_latent, child_ids, self._epoch)
        self.update_cache_context(batch, env_ids, child_keys, is_init_infer=False)
        if ids is not None:
            self._nodes.add(env_ids, child_ids)
        t3 = time.perf_counter()
        work.cache_seconds += (t1 - t0) + (t3 - t2)
        work.forward_seconds += t2 - t1
        value, reward = support_to_scalar(torch.stack([value_logits, reward_logits]), self.config.support_size)
        return _float32(InferenceOutput(
            value=value, reward=reward,
            policy_logits=policy_logits, latent_state=next_latent, value_logits=value_logits,
            reward_logits=reward_logits,
        ))

    # ------------------------------------------------------------------------ training
    def forward_sequence(self, obs: torch.Tensor, actions: torch.Tensor) -> SequenceOutput:
        """Teacher-forced pass over ``obs [B, K+1, *obs_shape]`` and ``actions [B, K+1]``.

        The training pass: float32 models only (bfloat16 is a search-only mode; AdamW steps on
        bfloat16 weights would round most updates away).
        """
        if self.config.dtype != "float32":
            raise ValueError(
                f"forward_sequence on a model of dtype={self.config.dtype!r}; training needs dtype='float32' "
                "(bfloat16 is search-only: train a float32 model and copy it with load_weights_from)"
            )
        b, steps = actions.shape
        if 2 * steps > self.config.max_tokens:
            raise ValueError(f"{steps} steps need {2 * steps} tokens > max_tokens={self.config.max_tokens}")
        latents = self.encoder(obs.flatten(0, 1)).view(b, steps, -1)
        tokens = torch.stack([latents, self.action_embedding(actions)], dim=2).flatten(1, 2)  # (B, 2(K+1), E)
        pos = torch.arange(2 * steps, device=obs.device).expand(b, -1)
        h = self.transformer(tokens, pos)
        h_obs, h_act = h[:, 0::2], h[:, 1::2]
        return SequenceOutput(
            value_logits=self.head_value(h_obs), policy_logits=self.head_policy(h_obs),
            reward_logits=self.head_reward(h_act), next_latent=self.head_latent(h_act), latents=latents,
        )

    # ------------------------------------------------------------------------- helpers
    def _maybe_log(self) -> None:
        # Throttled: at most one line every 30 s, and only when asked for.
        if self.config.enable_cache_logging and time.monotonic() - self._last_log > 30:
            self._last_log = time.monotonic()
            logger.info("cache stats: %s", self.cache_stats())


def _float32(out: InferenceOutput) -> InferenceOutput:
    """``out`` with every tensor in float32: a bfloat16 model's outputs (float32 ones pass as they are)."""
    if out.latent_state.dtype == torch.float32:
        return out
    return InferenceOutput(**{
        f.name: None if (t := getattr(out, f.name)) is None else t.float() for f in fields(out)
    })
