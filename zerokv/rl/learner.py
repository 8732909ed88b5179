"""Learner: UniZero losses on replayed sequences, AdamW, gradient clipping, a momentum target encoder."""

from __future__ import annotations

import copy

import torch

from zerokv.model.losses import unizero_losses
from zerokv.model.support import support_to_scalar
from zerokv.rl.observations import observations_as_float
from zerokv.rl.replay import Batch


class Learner:
    """Updates a :class:`~zerokv.WorldModel` in place.

    The target network is UniZero's momentum copy (θ_target ← (1-τ)·θ_target + τ·θ after each
    update); only its encoder is used, for the next-latent targets.

    With ``fresh_value_targets`` the n-step value targets bootstrap from the current network's
    value of o_{t+n} (as LightZero recomputes them at sampling time) instead of the root value
    stored when the step was collected, which early in training came from a far weaker model.
    """

    def __init__(self, model, *, learning_rate: float, weight_decay: float, grad_clip: float,
                 target_update_rate: float, fresh_value_targets: bool = False) -> None:
        self.model = model
        self.target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
        self.grad_clip, self.tau = grad_clip, target_update_rate
        self.fresh_value_targets = fresh_value_targets
        self.updates = 0

    @torch.no_grad()
    def _value_targets(self, batch: Batch) -> torch.Tensor:
        device = self.model.config.device
        stored = torch.as_tensor(batch.value_targets, device=device)
        if not self.fresh_value_targets or batch.bootstrap_obs is None:
            return stored
        b, steps = batch.value_targets.shape
        boot_obs = observations_as_float(batch.bootstrap_obs, device).flatten(0, 1).unsqueeze(1)  # (B·(K+1), 1, …)
        out = self.model.forward_sequence(boot_obs, torch.zeros(b * steps, 1, dtype=torch.long, device=device))
        values = support_to_scalar(out.value_logits[:, 0], self.model.config.support_size).view(b, steps)
        known = torch.as_tensor(batch.value_known, device=device)
        scale = torch.as_tensor(batch.bootstrap_scale, device=device)
        return known + scale * values

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.model.config
        device = cfg.device
        obs = observations_as_float(batch.obs, device)  # (B, K+1, *obs_shape) float32; uint8 frames / 255
        actions = torch.as_tensor(batch.actions, device=device)
        out = self.model.forward_sequence(obs, actions)
        with torch.no_grad():
            b, steps = actions.shape
            target_latents = self.target_encoder(obs[:, 1:].flatten(0, 1)).view(b, steps - 1, -1)
        losses = unizero_losses(
            out, target_latents=target_latents, rewards=torch.as_tensor(batch.rewards, device=device),
            value_targets=self._value_targets(batch),
            policy_targets=torch.as_tensor(batch.policy_targets, device=device),
            mask=torch.as_tensor(batch.mask, device=device), support_size=cfg.support_size,
            group_size=cfg.latent_group_size,
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            for target, online in zip(self.target_encoder.parameters(), self.model.encoder.parameters(), strict=True):
                target.lerp_(online, self.tau)
        self.updates += 1
        return {**losses.as_floats(), "grad_norm": float(grad_norm)}

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "target_encoder": self.target_encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(), "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.target_encoder.load_state_dict(state["target_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
