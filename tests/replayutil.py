"""A plain per-row reference of `ReplayBuffer.sample`, shared by the replay tests."""

from __future__ import annotations

import numpy as np

from zerokv.rl.replay import n_step_bootstrap, n_step_value_targets


def reference_batch(segments, starts, unroll_steps, td_steps, discount, num_actions) -> list[dict]:
    """Row b of a batch whose start is `starts[b] = (segment key, t)`, by a loop over whole
    segments (`segments[key]` a closed GameSegment). Pad actions are random: only the real ones
    are given, as "actions_real"."""
    k1 = unroll_steps + 1
    rows = []
    for i, t in starts:
        seg = segments[i]
        n = min(k1, len(seg) - t)
        z = n_step_value_targets(seg.rewards, seg.root_values, seg.bootstrap_value, td_steps, discount)
        known, scale = n_step_bootstrap(seg.rewards, seg.bootstrap_value, td_steps, discount)
        boot = np.minimum(np.arange(t, t + k1) + td_steps, len(seg) - 1)
        pad = k1 - n
        rows.append({
            "obs": np.concatenate([seg.obs[t:t + n], np.repeat(seg.obs[-1:], pad, 0)]),
            "actions_real": seg.actions[t:t + n],
            "rewards": np.concatenate([seg.rewards[t:t + n], np.zeros(pad, np.float32)]),
            "value_targets": np.concatenate([z[t:t + n], np.zeros(pad, np.float32)]),
            "policy_targets": np.concatenate(
                [seg.policies[t:t + n], np.full((pad, num_actions), 1 / num_actions, np.float32)]),
            "mask": np.array([1.0] * n + [0.0] * pad, np.float32),
            "bootstrap_obs": seg.obs[boot],
            "value_known": np.concatenate([known[t:t + n], np.zeros(pad, np.float32)]),
            "bootstrap_scale": np.concatenate([scale[t:t + n], np.zeros(pad, np.float32)]),
        })
    return rows


def assert_rows_match(batch, rows, num_actions) -> None:
    for b, want in enumerate(rows):
        want = dict(want)
        real = want["mask"] == 1
        np.testing.assert_array_equal(batch.actions[b, real], want.pop("actions_real"), err_msg=f"row {b} actions")
        assert ((batch.actions[b] >= 0) & (batch.actions[b] < num_actions)).all()
        for name, value in want.items():
            np.testing.assert_array_equal(getattr(batch, name)[b], value, err_msg=f"row {b} {name}")
