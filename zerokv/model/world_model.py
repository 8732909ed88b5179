"""``WorldModel``: a UniZero-style transformer world model with the KV cache built in.

Every environment step contributes an observation token (the latent) and an action token; a head
reads only the token that carries what it predicts: value and policy at observation tokens,
reward and the next latent ô at action tokens. ``initial_inference`` extends each env's real
history (its previous root) with ``[last action, observation]`` and stores the root;
``recurrent_inference`` runs ``[action, ô]`` on each parent's past and stores each child.

Around the network: the cache layer (:mod:`zerokv.model.context_cache`, the backend chosen once
by ``config.cache_backend``), the seeds' names (:mod:`zerokv.model.seeds`), cache snapshots
(:mod:`zerokv.model.snapshot`), weight loading (:mod:`zerokv.model.weights`), the input checks
(:mod:`zerokv.model.inputs`) and the search state and thread rule (:mod:`zerokv.model.session`).
``config.dtype`` "bfloat16" is a search-only mode; inputs and outputs are float32 either way.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from zerokv.model import action_inputs, inputs
from zerokv.model.compiled import RecurrentStep
from zerokv.model.config import WorldModelConfig
from zerokv.model.context import KeyHash, default_key_hash
from zerokv.model.context_cache import CacheReport, ContextCache
from zerokv.model.encoders import SimNorm, make_encoder, mlp_head
from zerokv.model.outputs import InferenceOutput, SequenceOutput
from zerokv.model.pretrained import PretrainedMixin
from zerokv.model.seeds import SeedsNames
from zerokv.model.session import SearchNodes, ThreadOwner
from zerokv.model.snapshot import CacheSnapshots
from zerokv.model.support import support_to_scalar
from zerokv.model.transformer import Transformer
from zerokv.model.weights import WeightsMixin

__all__ = ["NO_ACTION", "InferenceOutput", "SequenceOutput", "WorldModel"]

logger = logging.getLogger(__name__)
NO_ACTION = inputs.NO_ACTION  # last_actions entry of an env whose episode just started
LATENT_OF_OBS = "the encoder's latent of the observation (values too large for float32 arithmetic?)"


class _RootGroup(NamedTuple):
    """Roots run in one forward: ``rows`` of the batch, their new ``tokens (n, t, E)``, their pasts (None: none)."""

    rows: list[int]
    tokens: torch.Tensor
    pasts: list | None = None


class WorldModel(SeedsNames, CacheSnapshots, PretrainedMixin, WeightsMixin, nn.Module):
    """The network, its three inference entry points and ``forward_sequence`` for training.

    Inputs are checked once at each entry point (:mod:`zerokv.model.inputs`): a refused call
    raises ``ValueError``/``TypeError`` and stores nothing.

    Threads: a model belongs to one thread at a time. Its search state (the rooted envs, the
    search's node ids, the cache epoch, the batch in flight) is one per model, so two threads'
    interleaved searches would mix even under a lock. The first call of an entry point binds the
    model to the calling thread; an entry point (or ``clear_caches``) called from another thread
    raises a ``RuntimeError`` naming both threads. For one search per thread give each thread
    its own model: ``model.arena(n)`` shares the weights with caches of its own (train through
    the original), ``model.copy_with()`` copies them. To hand a model over, call
    ``model.release_thread()`` in its thread; the next call from any thread binds it again (a
    finished thread releases it too). Building, copying and ``forward_sequence`` bind nothing.
    """

    def __init__(self, config: WorldModelConfig, *, key_hash: KeyHash = default_key_hash,
                 share_weights_with: WorldModel | None = None) -> None:
        """``share_weights_with``: use that model's modules (the same weights) instead of new ones;
        its architecture must be ``config``'s (env_num and the cache's fields may differ)."""
        super().__init__()
        self.config, self.key_hash = config, key_hash
        if share_weights_with is None:
            e = config.embed_dim
            self.encoder = make_encoder(config)
            self.action_embedding = action_inputs.embedding(config)  # a table, or a projection of vectors
            self.transformer = Transformer(config)
            self.head_value = mlp_head(e, config.support_bins)
            self.head_policy = mlp_head(e, config.policy_size)
            self.head_reward = mlp_head(e, config.support_bins)
            self.head_latent = nn.Sequential(mlp_head(e, e), SimNorm(config.latent_group_size))
            self.to(config.device, config.torch_dtype)
        else:
            config.check_same_architecture(share_weights_with.config)
            for name, module in share_weights_with.named_children():
                self.add_module(name, module)
            self.train(share_weights_with.training)
        self.context_cache = ContextCache(config, self.transformer, key_hash)  # the one door to the backend
        self._step = RecurrentStep(self, compile=config.compile)  # eager or torch.compile'd
        self._nodes = SearchNodes(config.env_num, config.num_simulations)
        self._owner = ThreadOwner()
        self._last_log = time.monotonic()

    def arena(self, env_num: int) -> WorldModel:
        """A world model sharing these weights (the same modules) with caches of its own for ``env_num`` envs.

        For searches beside the collector's, e.g. reanalysis of hundreds of replayed positions at
        once, or one search per thread: they get pools (or a paged arena) sized for their own
        batch and can neither evict nor overwrite this model's root contexts. A weight update is
        seen by both; train through the original, not the view.
        """
        config = dataclasses.replace(self.config, env_num=env_num)  # validates env_num
        return WorldModel(config, key_hash=self.key_hash, share_weights_with=self)

    @property
    def work(self):
        """What the cache costs (:class:`~zerokv.model.context.CacheWork`; the benchmark reads it)."""
        return self.context_cache.work

    def cache_stats(self) -> CacheReport:
        """Lookups (hits, misses, hit_rate), evictions, fallbacks, rebuilds, size, bytes, store summary since :meth:`reset_cache_stats`."""
        return self.context_cache.report()

    @property
    def compile_report(self):
        """What compiling the recurrent step cost (:class:`~zerokv.model.compiled.CompileReport`)."""
        return self._step.report

    def reset_cache_stats(self) -> None:
        self.context_cache.reset_stats()

    def release_thread(self) -> None:
        """Unbind the model from its thread (call it there): the next entry-point call binds it
        to the calling thread. See the class docstring."""
        self._owner.release()

    # ----------------------------------------------------------------------- inference
    @torch.no_grad()
    def initial_inference(self, obs, env_ids: Sequence[int] | None = None,
                          last_actions: Sequence[int] | None = None) -> InferenceOutput:
        """Roots for a batch of envs: ``obs [B, *observation_shape]`` (see :mod:`zerokv.model.inputs`
        for the dtypes accepted), ``env_ids [B]`` (default ``0 … B-1``).

        ``last_actions[i]`` is the action taken in env ``env_ids[i]`` since its previous root
        (``NO_ACTION`` or ``None`` for all: the episode starts). An env whose previous root is
        stored extends that context with ``[last action, observation]``; otherwise it starts from
        the observation alone — the only place a context-free start is allowed, and a counted
        fallback when the env had a history. Starts a new search over these envs.
        """
        self._owner.claim("initial_inference")
        cfg = self.config
        obs = inputs.observations(obs, cfg.observation_shape, steps=False, name="obs")
        b = obs.shape[0]
        env_ids = inputs.env_ids(env_ids, b, cfg.env_num, unique=True)
        actions, marks = action_inputs.checked(cfg, last_actions, b, name="last_actions", allow_no_action=True)
        inputs.finite(obs, env_ids, "obs")
        latents = self.encoder(obs.to(cfg.device, cfg.torch_dtype))  # (B, E)
        inputs.finite(latents, env_ids, LATENT_OF_OBS)  # before the search starts: a refusal leaves no trace
        pasts = self.context_cache.previous_roots(env_ids, marks)
        extend = [i for i in range(b) if pasts[i] is not None]
        fresh = [i for i in range(b) if pasts[i] is None]
        groups = []
        if extend:
            act = self.action_embedding(action_inputs.as_tensor(cfg, [actions[i] for i in extend], latents.device))
            tokens = torch.stack([act, latents[extend]], dim=1)  # (n, 2, E): [a_{t-1}, o_t]
            groups.append(_RootGroup(extend, tokens, [pasts[i] for i in extend]))
        if fresh:
            groups.append(_RootGroup(fresh, latents[fresh].unsqueeze(1)))  # (n, 1, E): [o_t]
        out = self._store_roots(env_ids, latents, groups, rebuilt=False)
        self._maybe_log()
        return out

    @torch.no_grad()
    def initial_inference_from_history(self, observations, actions, env_ids: Sequence[int] | None = None,
                                       lengths: Sequence[int] | None = None) -> InferenceOutput:
        """Roots whose contexts are rebuilt from their real histories with the current weights.

        ``observations [B, T, *observation_shape]``: each env's last T observations, the root's
        last; ``actions [B, T-1]``: the actions taken between them. ``lengths [B]`` (default all
        T): row i's history is its last ``lengths[i]`` observations, earlier entries are ignored
        (rows are grouped by length: one batched forward per distinct length). Each root's past is
        the teacher-forced pass over ``[o, a, …, o]``: the same as the collector's root context
        when the history covers :attr:`WorldModelConfig.root_history_steps`. Stores the roots like
        ``initial_inference`` (counted as ``rebuilds``); used to rebuild contexts after a weight
        update and for reanalysis.
        """
        self._owner.claim("initial_inference_from_history")
        cfg = self.config
        obs = inputs.observations(observations, cfg.observation_shape, steps=True, name="observations")
        b, t = obs.shape[:2]  # (B, T, *obs_shape)
        env_ids = inputs.env_ids(env_ids, b, cfg.env_num, unique=True)
        acts = action_inputs.history(cfg, actions, b, t)
        lengths = inputs.history_lengths(lengths, b, t)
        inputs.finite(obs, env_ids, "observations", used=torch.from_numpy(np.arange(t) >= t - lengths[:, None]))
        obs = obs.to(cfg.device, cfg.torch_dtype)
        self.context_cache.start_search()
        groups, root_latents = [], obs.new_zeros(b, cfg.embed_dim)
        for n in np.unique(lengths).tolist():
            rows = np.flatnonzero(lengths == n).tolist()
            latents = self.encoder(obs[rows, t - n:].flatten(0, 1)).view(len(rows), n, -1)  # (r, n, E)
            tokens = latents.new_zeros(len(rows), 2 * n - 1, cfg.embed_dim)  # [o, a, o, …, o]
            tokens[:, 0::2] = latents
            if n > 1:
                tokens[:, 1::2] = self.action_embedding(action_inputs.as_tensor(cfg, acts[rows, t - n:], obs.device))
            root_latents[rows] = latents[:, -1]
            groups.append(_RootGroup(rows, tokens))
        return self._store_roots(env_ids, root_latents, groups, rebuilt=True)

    def _store_roots(self, env_ids: list[int], latents: torch.Tensor, groups: list[_RootGroup], *,
                     rebuilt: bool) -> InferenceOutput:
        """Both root entry points' one path: run each group's tokens on its pasts, read value and
        policy at the last (observation) token, store every row as its env's root, start the search."""
        cfg, b = self.config, len(env_ids)
        inputs.finite(latents, env_ids, LATENT_OF_OBS)
        value_logits = latents.new_zeros(b, cfg.support_bins)
        policy_logits = latents.new_zeros(b, cfg.policy_size)
        # Check, then change: every group runs (groups have distinct token counts, so their
        # batches never share a gather buffer) and is checked finite before any root is stored.
        batches = []
        for group in groups:
            batch = self.context_cache.assemble(group.pasts or [None] * len(group.rows), group.tokens.shape[1])
            h = batch.forward(group.tokens)[:, -1]  # (n, E)
            rows = [env_ids[i] for i in group.rows]
            inputs.finite(h, rows, "the transformer's output")
            value_logits[group.rows], policy_logits[group.rows] = self.head_value(h), self.head_policy(h)
            batches.append((batch, group.rows, rows))
        inputs.finite(torch.cat([value_logits, policy_logits], 1), env_ids, "value/policy logits")
        keys = self.context_cache.root_keys_of(env_ids, latents)  # once for the whole batch
        for batch, positions, rows in batches:
            self.context_cache.store_roots(batch, rows, [keys[i] for i in positions], rebuilt=rebuilt)
        self._nodes.start(env_ids)
        return InferenceOutput(
            value=support_to_scalar(value_logits, cfg.support_size), reward=latents.new_zeros(b),
            policy_logits=policy_logits, latent_state=latents, value_logits=value_logits,
        ).float32()

    def rebuild_root_contexts(self, env_ids: Sequence[int], observations: Sequence, actions: Sequence) -> None:
        """Recompute each env's root context from its recent real history with the current weights.

        ``observations[i]`` is ``[T_i, *obs_shape]`` ending with the env's latest root
        observation, ``actions[i]`` the ``T_i - 1`` actions between them. Used after
        ``clear_caches()`` following a weight update, so the next ``initial_inference`` extends a
        real context instead of restarting from the observation alone (the reference's loss).
        """
        if len(observations) != len(env_ids) or len(actions) != len(env_ids):
            raise ValueError(f"{len(env_ids)} env_ids, {len(observations)} histories, {len(actions)} action lists")
        if not max((len(o) for o in observations), default=0):
            return
        obs, acts, lengths = inputs.right_aligned(observations, actions, self.config.observation_shape,
                                                  self.config.action_dim)
        self.initial_inference_from_history(obs, acts, env_ids=env_ids, lengths=lengths)

    @torch.no_grad()
    def recurrent_inference(self, latent_state: torch.Tensor, action, env_ids: Sequence[int] | None = None, *,
                            parent_ids=None, child_ids=None) -> InferenceOutput:
        """Expand one node per row: ``latent_state [B, E]`` of the parents, ``action [B]``.

        Rows belong to the envs of the last root call unless ``env_ids`` says otherwise; several
        rows may share an env (a multi-leaf search), each expanding its own node.
        ``parent_ids``/``child_ids [B]`` are the search's node ids (root = 0, see
        :func:`zerokv.model.inputs.node_ids` for what is allowed); the paged backend addresses
        nodes by them, the content-keyed backends accept calls without them. Runs the action token
        (→ reward, next latent), then the predicted latent's token (→ value, policy), and stores
        each child's past.
        """
        self._owner.claim("recurrent_inference")
        cfg = self.config
        if env_ids is None and not self._nodes.root_envs:
            raise ValueError("recurrent_inference before any root: call initial_inference first (or pass env_ids)")
        env_ids = self._nodes.root_envs if env_ids is None else inputs.env_ids(env_ids, None, cfg.env_num, unique=False)
        latent = inputs.latent(latent_state, env_ids, cfg.embed_dim).to(cfg.device, cfg.torch_dtype)
        actions, _ = action_inputs.checked(cfg, action, len(env_ids), name="action", allow_no_action=False)
        ids = self._nodes.check(parent_ids, child_ids, env_ids)
        parents, children = (None, None) if ids is None else ids
        batch = self.context_cache.expand(latent, env_ids, parents)
        next_latent, value_logits, policy_logits, reward_logits = self._step(
            batch, action_inputs.as_tensor(cfg, actions, latent.device))
        inputs.finite(torch.cat([next_latent, value_logits, policy_logits, reward_logits], 1), env_ids,
                      "the model's outputs (next latent, logits)")  # checked before anything is stored
        self.context_cache.store_children(batch, env_ids, next_latent, children)
        if ids is not None:
            self._nodes.add(env_ids, children)
        value, reward = support_to_scalar(torch.stack([value_logits, reward_logits]), cfg.support_size)
        return InferenceOutput(
            value=value, reward=reward, policy_logits=policy_logits, latent_state=next_latent,
            value_logits=value_logits, reward_logits=reward_logits,
        ).float32()

    # ------------------------------------------------------------------------ training
    def forward_sequence(self, obs: torch.Tensor, actions: torch.Tensor) -> SequenceOutput:
        """Teacher-forced pass over ``obs [B, K+1, *obs_shape]`` and ``actions [B, K+1]`` (int64; continuous:
        ``[B, K+1, D]`` float32 in [-1, 1]).

        The training pass: float32 models only (bfloat16 is a search-only mode; AdamW steps on
        bfloat16 weights would round most updates away).
        """
        if self.config.dtype != "float32":
            raise ValueError(
                f"forward_sequence on a model of dtype={self.config.dtype!r}; training needs dtype='float32' "
                "(bfloat16 is search-only: train a float32 model and copy it with load_weights_from)"
            )
        b, steps = actions.shape[:2]
        if 2 * steps > self.config.max_tokens:
            raise ValueError(f"{steps} steps need {2 * steps} tokens > max_tokens={self.config.max_tokens}")
        latents = self.encoder(obs.flatten(0, 1)).view(b, steps, -1)
        act = self.action_embedding(action_inputs.sequence(self.config, actions))
        tokens = torch.stack([latents, act], dim=2).flatten(1, 2)  # (B, 2(K+1), E)
        pos = torch.arange(2 * steps, device=obs.device).expand(b, -1)
        h = self.transformer(tokens, pos)
        h_obs, h_act = h[:, 0::2], h[:, 1::2]
        return SequenceOutput(
            value_logits=self.head_value(h_obs), policy_logits=self.head_policy(h_obs),
            reward_logits=self.head_reward(h_act), next_latent=self.head_latent(h_act), latents=latents,
        )

    def _maybe_log(self) -> None:  # throttled: at most one line every 30 s, and only when asked for
        if self.config.enable_cache_logging and time.monotonic() - self._last_log > 30:
            self._last_log = time.monotonic()
            logger.info("cache stats: %s", self.cache_stats())
