"""Learner: UniZero losses on replayed sequences, AdamW, gradient clipping, a momentum target network."""

from __future__ import annotations

import contextlib
import copy
import time
from collections import defaultdict
from typing import Literal, get_args

import numpy as np
import torch

from zerokv.checks import check_choice, check_float, check_positive_int
from zerokv.model.config import DTYPES
from zerokv.model.losses import LossWeights
from zerokv.model.support import support_to_scalar
from zerokv.rl.compiled import compile_update_parts
from zerokv.rl.observations import observations_as_float
from zerokv.rl.replay import Batch

ValueBootstrap = Literal["online", "target"]
"""Which network's value of o_{t+n} the fresh n-step value targets bootstrap from."""
VALUE_BOOTSTRAPS: tuple[str, ...] = get_args(ValueBootstrap)
CONTINUOUS_ENTROPY_WEIGHT = 5e-2
"""Entropy bonus of a continuous (Gaussian) policy, as LightZero's Sampled UniZero on DMC."""


class PhaseTimer:
    """Wall seconds per phase of :meth:`Learner.update` (summed over the updates it saw), for
    benchmarks: set ``learner.timer = PhaseTimer()``. ``current`` names the phase running now,
    ``started`` holds each phase's last start (``time.perf_counter()``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.started: dict[str, float] = {}
        self.current: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str):
        self.current, start = name, time.perf_counter()
        self.started[name] = start
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start
            self.current = None


@torch.no_grad()
def latent_values(model, latents: torch.Tensor) -> torch.Tensor:
    """The value of each latent observation on its own, ``latents (N, E)`` → ``(N,)`` float32.

    Equal to ``forward_sequence(obs[:, None], any_action)``'s value read at step 0 when
    ``latents`` is the encoder's ``obs``: that observation token sits at position 0 and attends only
    to itself, so the action token and the reward, latent and policy heads that forward also runs
    change nothing here and are skipped.
    """
    n = latents.shape[0]
    h = model.transformer(latents.unsqueeze(1), torch.zeros(n, 1, dtype=torch.long, device=latents.device))
    return support_to_scalar(model.head_value(h[:, 0]).float(), model.config.support_size)


ROW_BUCKET = 64
"""Row counts that vary from update to update are padded up to a multiple of this. oneDNN builds
and caches a kernel for each shape it meets (up to 1,024 of them), so a different count at every
update filled that cache with hundreds of MB (a CartPole run's RSS grew by ~700 MB); a few
buckets keep it to a few kernels, for at most 63 rows of extra work per call."""


def in_row_buckets(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn``, with ``x (N, …)`` padded by zero rows to a multiple of
    :data:`ROW_BUCKET` and the output cut back to its first N rows."""
    n = x.shape[0]
    pad = -n % ROW_BUCKET
    if pad:
        x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
    return fn(x)[:n]


def bootstrap_values(model, obs: torch.Tensor) -> torch.Tensor:
    """:func:`latent_values` of observations ``obs (N, *obs_shape)``."""
    with torch.no_grad():
        return latent_values(model, model.encoder(obs))


class Learner:
    """Updates a :class:`~zerokv.WorldModel` in place.

    The target network is UniZero's momentum copy (θ_target ← (1-τ)·θ_target + τ·θ after each
    update). Its encoder gives the next-latent targets. With ``value_bootstrap="online"`` only the
    encoder is copied; with ``"target"`` the whole network is (``target_model``), and the fresh
    value targets bootstrap from it, as LightZero's UniZero does (its target model computes the
    targets at sampling time); the encoder's copy is then ``target_model.encoder``, so the latent
    targets are the same either way.

    With ``fresh_value_targets`` the n-step value targets bootstrap from the network's value of
    o_{t+n} (as LightZero recomputes them at sampling time) instead of the root value stored when
    the step was collected, which early in training came from a far weaker model. Only positions
    whose target has a bootstrap term (``bootstrap_scale`` ≠ 0) are evaluated, and given the
    replay's ``td_steps`` n, a bootstrap observation inside the unrolled window (o_{t+k+n} with
    k + n ≤ K, the same frame as ``obs[:, k + n]``) reuses the latent the update has of it (the
    forward's, or the target encoder's with ``"target"``) instead of being encoded again.

    ``target_label_smoothing`` ε mixes the two-hot reward and value targets with the uniform
    distribution over the N support bins, (1-ε)·two_hot + ε/N (LightZero's ``label_smoothing_eps``).

    ``dtype="bfloat16"`` runs the forward passes (and so the backward's matmuls and convolutions)
    under CPU autocast; the weights, gradients, optimizer state and losses stay float32.
    AdamW is the fused kernel: one pass over each parameter instead of a dozen.

    ``compile=True`` runs the forward pass, the target encoder and the losses as ``torch.compile``
    (inductor) graphs, the backward as the compiled forward's backward graph
    (:func:`zerokv.rl.compiled.compile_update_parts`); the same losses to float32 rounding, one
    compile (about a minute or more) at the first update. Where compilation fails it warns once
    and stays eager.
    """

    def __init__(self, model, *, learning_rate: float, weight_decay: float, grad_clip: float,
                 target_update_rate: float, fresh_value_targets: bool = False, td_steps: int | None = None,
                 value_bootstrap: ValueBootstrap = "online", target_label_smoothing: float = 0.0,
                 dtype: str = "float32", compile: bool = False, entropy_weight: float | None = None) -> None:
        """``entropy_weight``: of the policy's entropy bonus; None: UniZero's, 1e-4 for discrete
        actions and 5e-2 for continuous ones (LightZero's Sampled UniZero DMC setting)."""
        self.model = model
        if entropy_weight is None:
            entropy_weight = CONTINUOUS_ENTROPY_WEIGHT if model.config.continuous else LossWeights().entropy
        self.loss_weights = LossWeights(entropy=entropy_weight)
        self.value_bootstrap = check_choice("value_bootstrap", value_bootstrap, VALUE_BOOTSTRAPS, owner="Learner")
        self.label_smoothing = check_float("target_label_smoothing", target_label_smoothing, low=0.0, high=1.0,
                                           high_open=True, owner="Learner")
        self.target_model = None  # (value_bootstrap "target") the momentum copy of the whole network
        if value_bootstrap == "target":
            self.target_model = copy.deepcopy(model).requires_grad_(False)
            self.target_encoder = self.target_model.encoder
        else:
            self.target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay,
                                           fused=True)
        self.grad_clip, self.tau = grad_clip, target_update_rate
        self.fresh_value_targets = fresh_value_targets
        self.td_steps = None if td_steps is None else check_positive_int("td_steps", td_steps, owner="Learner")
        self.dtype = check_choice("dtype", dtype, DTYPES, owner="Learner")
        self.updates = 0
        self.timer: PhaseTimer | None = None
        self.parts = compile_update_parts(model, self.target_encoder, compile=compile)

    def _phase(self, name: str):
        return contextlib.nullcontext() if self.timer is None else self.timer.phase(name)

    def _autocast(self):
        device = self.model.config.device
        device_type = torch.device(device).type
        return torch.autocast(device_type, dtype=DTYPES[self.dtype], enabled=self.dtype != "float32")

    @torch.no_grad()
    def _value_targets(self, batch: Batch, latents: torch.Tensor, target_latents: torch.Tensor) -> torch.Tensor:
        """``[B, K+1]`` float32: the stored n-step targets, or with ``fresh_value_targets`` the
        targets re-bootstrapped from the value of each o_{t+k+n}: the current network's, or with
        ``value_bootstrap="target"`` the momentum copy's. ``latents [B, K+1, E]``: the forward's
        latents of ``batch.obs``; ``target_latents [B, K, E]``: the target encoder's of ``obs[:, 1:]``."""
        device = self.model.config.device
        if not self.fresh_value_targets or batch.bootstrap_obs is None:
            return torch.as_tensor(batch.value_targets, device=device)
        net = self.model if self.target_model is None else self.target_model
        if self.target_model is not None:  # step 0 is never a bootstrap observation (n ≥ 1): zeros stand in
            latents = torch.nn.functional.pad(target_latents, (0, 0, 1, 0))
        scale = torch.as_tensor(batch.bootstrap_scale, device=device)
        known = torch.as_tensor(batch.value_known, device=device)
        rows = scale.flatten().nonzero().squeeze(1)  # flat positions b·(K+1) + k with a bootstrap term
        values = torch.zeros(scale.numel(), dtype=torch.float32, device=device)
        if rows.numel():
            boot = self._bootstrap_latents(batch, rows, latents, net.encoder).float()
            values[rows] = in_row_buckets(lambda x: latent_values(net, x), boot)
        return known + scale * values.view_as(scale)

    def _bootstrap_latents(self, batch: Batch, rows: torch.Tensor, latents: torch.Tensor, encoder) -> torch.Tensor:
        """``(len(rows), E)``: ``encoder``'s latents of the bootstrap observations at the flat
        positions ``rows``; o_{t+k+n} with k + n ≤ K is ``obs[b, k + n]``, whose latent by that
        encoder ``latents [B, K+1, E]`` holds already (flat position + n)."""
        steps, n = latents.shape[1], self.td_steps
        reuse = torch.zeros_like(rows, dtype=torch.bool) if n is None else rows % steps + n < steps
        out = latents.new_empty(rows.numel(), latents.shape[-1])
        # (B·(K+1), …) in the replay's dtype (uint8 frames stay uint8 until the rows are chosen)
        boot_obs = batch.bootstrap_obs.reshape(-1, *batch.bootstrap_obs.shape[2:])
        if reuse.any():
            first = int(rows[reuse][0])  # a spot check of the contract (one frame): td_steps is the replay's
            obs = batch.obs.reshape(-1, *batch.obs.shape[2:])
            if not np.array_equal(boot_obs[first], obs[first + n]):
                raise ValueError(f"Learner: td_steps={n} does not match the batch (bootstrap_obs of flat position "
                                 f"{first} is not obs of position {first + n}); pass the replay's td_steps")
            out[reuse] = latents.flatten(0, 1)[rows[reuse] + n]
        if not reuse.all():
            chosen = boot_obs[rows[~reuse].cpu().numpy()]
            out[~reuse] = in_row_buckets(encoder, observations_as_float(chosen, latents.device))
        return out

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.model.config
        device = cfg.device
        obs = observations_as_float(batch.obs, device)  # (B, K+1, *obs_shape) float32; uint8 frames / 255
        actions = torch.as_tensor(batch.actions, device=device)  # [B, K+1] int64, or [B, K+1, D] float32
        b, steps = actions.shape[:2]
        with self._autocast():
            with self._phase("forward"):
                out = self.parts.forward(obs, actions)
            with self._phase("target"), torch.no_grad():
                target_latents = self.parts.target(obs[:, 1:].flatten(0, 1)).view(b, steps - 1, -1)
            with self._phase("bootstrap"):
                value_targets = self._value_targets(batch, out.latents.detach(), target_latents)
        with self._phase("losses"):
            losses = self.parts.losses(
                out, target_latents=target_latents.float(), rewards=torch.as_tensor(batch.rewards, device=device),
                value_targets=value_targets, policy_targets=torch.as_tensor(batch.policy_targets, device=device),
                mask=torch.as_tensor(batch.mask, device=device), support_size=cfg.support_size,
                group_size=cfg.latent_group_size, label_smoothing=self.label_smoothing, weights=self.loss_weights,
                sampled_actions=None if batch.sampled_actions is None
                else torch.as_tensor(batch.sampled_actions, device=device),
            )
        with self._phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
        with self._phase("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()  # (the oneDNN-packed copies of the weights follow: zerokv.model.linear)
        with self._phase("momentum"), torch.no_grad():
            target, online = ((self.target_encoder, self.model.encoder) if self.target_model is None
                              else (self.target_model, self.model))
            for p_target, p_online in zip(target.parameters(), online.parameters(), strict=True):
                p_target.lerp_(p_online, self.tau)
        self.updates += 1
        return {**losses.as_floats(), "grad_norm": float(grad_norm)}

    def state_dict(self) -> dict:
        """The weights, the momentum copy (``target_encoder``, or ``target_model`` with
        ``value_bootstrap="target"``), the optimizer state and the update count."""
        target = ({"target_encoder": self.target_encoder.state_dict()} if self.target_model is None
                  else {"target_model": self.target_model.state_dict()})
        return {"model": self.model.state_dict(), **target, "optimizer": self.optimizer.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        key = "target_encoder" if self.target_model is None else "target_model"
        if key not in state:
            raise ValueError(f"Learner: the state has no {key!r} (it has {sorted(state)}); it was saved with "
                             f"another value_bootstrap than {self.value_bootstrap!r}")
        (self.target_encoder if self.target_model is None else self.target_model).load_state_dict(state[key])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a checkpoint from the unfused optimizer
            group["fused"], group["foreach"] = True, None
        self.updates = state["updates"]
