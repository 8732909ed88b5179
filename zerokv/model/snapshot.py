"""Cache snapshots: a world model's root contexts, saved, and loaded only by the same model.

After a restart (evaluation, serving, a restarted collector) every env's root context would be
rebuilt from its history with one batched forward (``rebuild_root_contexts``). A snapshot skips
that: it holds each env's root key and stored root context, exactly as the arena stores them, so
that after :func:`restore` the next ``initial_inference(obs, last_actions=...)`` gives bit for bit
what the uninterrupted model gives. A root context is the product of the weights that computed
it, so a snapshot is refused by any model it was not taken from:

* **weights** — a BLAKE3 hash over every tensor of the state dict (name, dtype, shape, bytes, in
  state-dict order), computed in full at every save and load, never cached (a cache keyed on
  tensor versions would miss writes through ``.data``, numpy views or a fused optimizer step):
  :func:`weights_fingerprint`. BLAKE3 rather than sha256 because this hash is most of a load's
  cost (docs/kv-storage.md, the snapshot table);
* **config** — the fields that change what a root context means (:data:`IDENTITY`: the
  architecture and dtype, the storage dtype, the backend and env_num);
* **content** — BLAKE3 over the header and every tensor, checked before anything is read, so a
  truncated or modified file is refused (an integrity check, not a signature: whoever can write
  the file can recompute it).

A refusal is a :class:`CacheSnapshotError` (a ``ValueError``) naming the mismatch; nothing is changed.
Only the "paged" backend (without ``cache_validation_mode``) can take and restore snapshots.

File format (safetensors, with a JSON header in its metadata):

==================  ===========================  ==================================================
tensor              shape, dtype                 what
==================  ===========================  ==================================================
``key_envs``        ``(m,)`` int64               envs with a root key (a history)
``key_epochs``      ``(m,)`` int64               each key's search epoch
``key_payloads``    ``(m, P)`` uint8             each key's exact latent bytes
``envs``            ``(n,)`` int64               envs with a stored root context (⊆ key_envs)
``lengths``         ``(n,)`` int64               real tokens of each window (≤ W = context_length − 1)
``last``            ``(n,)`` int64               absolute position of each window's newest token
``payload``         ``(L, 2, H, n·W, hd)``       the windows' keys and values, in the storage dtype
``scale``           ``(L, 2, H, n·W)`` bfloat16  their scales (int8 and float8_e4m3fn storage only)
==================  ===========================  ==================================================

metadata ``zerokv``: ``{"format", "config", "weights_blake3", "epoch"}`` as JSON;
``content_blake3``: the content hash. Files are written atomically (temp file, then ``os.replace``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from blake3 import blake3
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from zerokv.cache.protocol import RootRows
from zerokv.cache.storage import SCALED, Quantized
from zerokv.errors import CacheSnapshotError
from zerokv.io import atomic_write_bytes
from zerokv.model.config import ARCHITECTURE, WorldModelConfig
from zerokv.model.context import NodeKey
from zerokv.model.context_cache import RootState

__all__ = ["FORMAT", "IDENTITY", "CacheSnapshotError", "identity", "restore", "snapshot_bytes", "weights_fingerprint"]

FORMAT = "zerokv-root-contexts/1"
"""The snapshot format written here (a file of another format is refused)."""
IDENTITY: tuple[str, ...] = (*ARCHITECTURE, "kv_storage", "cache_backend", "env_num")
"""Config fields a snapshot must share with the model loading it (``kv_storage``: the resolved
storage dtype, so None and the model's own dtype match)."""
# Largest |key| or |value| a snapshot may hold. Real ones are projections of layer-normed tokens (tens
# at most); a forged or bit-flipped one near float32's limit would overflow attention into NaN.
KV_MAGNITUDE_LIMIT = 1e4




def identity(cfg: WorldModelConfig) -> dict:
    """The :data:`IDENTITY` fields of ``cfg``, as JSON values."""
    return json.loads(json.dumps({name: getattr(cfg, name) for name in IDENTITY}))


def weights_fingerprint(model: torch.nn.Module) -> str:
    """BLAKE3 (hex) over every state-dict tensor's name, dtype, shape and bytes, in state-dict order."""
    h = blake3()
    for name, tensor in model.state_dict().items():
        _hash_tensor(h, name, tensor)
    return h.hexdigest()


def _hash_tensor(h, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy() if t.numel() else b"")  # raw bytes (bfloat16, float8 too)


def _content_hash(header: str, tensors: dict[str, torch.Tensor]) -> str:
    h = blake3(header.encode())
    for name in sorted(tensors):
        _hash_tensor(h, name, tensors[name])
    return h.hexdigest()


# ----------------------------------------------------------------------------- save
def snapshot_bytes(config: WorldModelConfig, weights: torch.nn.Module, state: RootState) -> bytes:
    """``state`` (a model's :meth:`~zerokv.model.context_cache.ContextCache.export_state`) as a
    snapshot file's bytes, stamped with ``config``'s identity and the fingerprint of ``weights``."""
    keyed = [(e, k) for e, k in enumerate(state.keys) if k is not None]
    payload_len = len(keyed[0][1].payload) if keyed else 0
    roots = state.roots
    tensors = {
        "key_envs": torch.tensor([e for e, _ in keyed], dtype=torch.int64),
        "key_epochs": torch.tensor([k.epoch for _, k in keyed], dtype=torch.int64),
        "key_payloads": torch.from_numpy(
            np.frombuffer(b"".join(k.payload for _, k in keyed), np.uint8).reshape(len(keyed), payload_len).copy()),
        "envs": torch.from_numpy(roots.envs.astype(np.int64)),
        "lengths": torch.from_numpy(roots.lengths.astype(np.int64)),
        "last": torch.from_numpy(roots.last.astype(np.int64)),
        "payload": roots.stored.payload.contiguous(),
    }
    if roots.stored.scale is not None:
        tensors["scale"] = roots.stored.scale.contiguous()
    header = json.dumps({"format": FORMAT, "config": identity(config),
                         "weights_blake3": weights_fingerprint(weights), "epoch": state.epoch}, sort_keys=True)
    return st_save(tensors, metadata={"zerokv": header, "content_blake3": _content_hash(header, tensors)})


# ----------------------------------------------------------------------------- load
def restore(config: WorldModelConfig, weights: torch.nn.Module, key_hash, data: bytes) -> RootState:
    """The :class:`RootState` in ``data``, checked against the model of ``config`` and ``weights``
    (a :class:`CacheSnapshotError` names the first mismatch: content, format, a config field, the
    weights); its root keys made with ``key_hash``."""
    tensors, header = _parse(data)
    if header.get("format") != FORMAT:
        raise CacheSnapshotError(f"snapshot format {header.get('format')!r}; this zerokv reads {FORMAT!r}")
    theirs, ours = header.get("config", {}), identity(config)
    for name in IDENTITY:
        if theirs.get(name) != ours[name]:
            raise CacheSnapshotError(f"snapshot was taken with {name}={theirs.get(name)!r}, this model has "
                                f"{name}={ours[name]!r}: a snapshot loads only into the model it was taken from")
    mine = weights_fingerprint(weights)
    if header.get("weights_blake3") != mine:
        raise CacheSnapshotError("weights differ: the snapshot's root contexts were computed with other weights "
                            f"(BLAKE3 {str(header.get('weights_blake3'))[:12]}…, this model's {mine[:12]}…); "
                            "rebuild them from history instead")
    epoch = header.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 1 << 62:
        raise CacheSnapshotError(f"snapshot epoch {epoch!r}; must be an int in [0, 2**62)")
    _check_forged(config, tensors, epoch)
    return _state(config, tensors, epoch, key_hash)


def _check_forged(cfg: WorldModelConfig, t: dict[str, torch.Tensor], epoch: int) -> None:
    """What a hash cannot vouch for (anyone can recompute it): each env at most once, integer
    ids, windows at non-negative positions, key epochs not after the snapshot's, key payloads of
    one latent's bytes, finite keys and values. A CacheSnapshotError names the first violation."""
    names = ("key_envs", "key_epochs", "key_payloads", "envs", "lengths", "last", "payload")
    missing = [name for name in names if name not in t]
    if missing:
        raise CacheSnapshotError(f"snapshot lacks tensors {missing}")
    for name in ("key_envs", "key_epochs", "envs", "lengths", "last"):
        if t[name].dtype != torch.int64 or t[name].dim() != 1:
            raise CacheSnapshotError(f"snapshot tensor {name} is {t[name].dtype} of shape {tuple(t[name].shape)}; "
                                "expected a vector of int64")
    for name in ("key_envs", "envs"):
        ids = t[name].tolist()
        if len(set(ids)) != len(ids):
            raise CacheSnapshotError(f"snapshot {name} {ids} repeat an env; each env has at most one root")
    if len(t["key_epochs"]) != len(t["key_envs"]) or (len(t["key_epochs"]) and (
            int(t["key_epochs"].min()) < 0 or int(t["key_epochs"].max()) > epoch)):
        raise CacheSnapshotError(f"snapshot key epochs {t['key_epochs'].tolist()}; must be in [0, {epoch}] (one per key)")
    latent_bytes = cfg.embed_dim * 4  # keys hold a float32 latent's bytes
    n_keys, shape = len(t["key_envs"]), tuple(t["key_payloads"].shape)
    if t["key_payloads"].dtype != torch.uint8 or len(shape) != 2 or shape[0] != n_keys or (
            n_keys and shape[1] != latent_bytes):
        raise CacheSnapshotError(f"snapshot key payloads of shape {tuple(t['key_payloads'].shape)}; expected "
                            f"({len(t['key_envs'])}, {latent_bytes}) uint8")
    lengths, last = t["lengths"], t["last"]
    if lengths.shape == last.shape and len(last) and bool((last - lengths + 1 < 0).any() or (last >= 1 << 62).any()):
        raise CacheSnapshotError(f"snapshot window positions {last.tolist()} with lengths {lengths.tolist()}: a "
                            "window's first token would sit before position 0")
    for name in ("payload", "scale"):
        if name in t and t[name].is_floating_point() and not bool(torch.isfinite(t[name].float()).all()):
            raise CacheSnapshotError(f"snapshot {name} holds NaN or infinite values: keys and values must be finite")
    payload = t["payload"].float().abs()
    largest = float(payload.max()) if payload.numel() else 0.0
    if "scale" in t and t["scale"].is_floating_point() and t["scale"].numel():
        largest *= float(t["scale"].float().abs().max())  # int8 rows: value = code × row scale
    if largest > KV_MAGNITUDE_LIMIT:
        raise CacheSnapshotError(f"snapshot keys or values reach {largest:.3g}; stored keys and values are "
                                 f"bounded by {KV_MAGNITUDE_LIMIT:g} (projections of layer-normed tokens): "
                                 "the file is damaged or forged")
    latents = t["key_payloads"].contiguous().view(torch.float32) if len(t["key_envs"]) else None
    if latents is not None and not bool(torch.isfinite(latents).all()):
        raise CacheSnapshotError("snapshot root keys hold NaN or infinite latents")


def _parse(data: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and header of a snapshot whose content hash checks out."""
    try:
        tensors = st_load(bytes(data))
        size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        header_text, digest = metadata["zerokv"], metadata["content_blake3"]
        header = json.loads(header_text)
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise CacheSnapshotError(f"not a readable zerokv cache snapshot (truncated or damaged?): {e}") from None
    if _content_hash(header_text, tensors) != digest:
        raise CacheSnapshotError("snapshot content does not match its content hash: the file was modified or damaged")
    return tensors, header


def _state(cfg: WorldModelConfig, t: dict[str, torch.Tensor], epoch: int, key_hash) -> RootState:
    """The snapshot's tensors as a :class:`RootState` of the model's ``env_num`` envs."""
    keys: list = [None] * cfg.env_num
    w, n = cfg.context_length - 1, len(t["envs"])
    expected = (cfg.num_layers, 2, cfg.num_heads, n * w, cfg.head_dim)
    ids = np.concatenate([t["key_envs"].numpy(), t["envs"].numpy()])
    lengths = t["lengths"].numpy()
    fits = (tuple(t["payload"].shape) == expected and ("scale" in t) == (cfg.kv_storage in SCALED)
            and not (ids.size and (ids.min() < 0 or ids.max() >= cfg.env_num))
            and lengths.shape == t["last"].shape == (n,) and not (n and (lengths.min() < 1 or lengths.max() > w)))
    if not fits:  # checked before anything changes (the arena would refuse only after the caches were cleared)
        raise CacheSnapshotError(f"snapshot tensors do not fit this model: payload {tuple(t['payload'].shape)} "
                            f"(expected {expected}), scales {'scale' in t}, env ids {ids.tolist()} "
                            f"(env_num={cfg.env_num}), window lengths {lengths.tolist()} (1 … {w})")
    payloads = t["key_payloads"].numpy()
    for i, (env, key_epoch) in enumerate(zip(t["key_envs"].tolist(), t["key_epochs"].tolist(), strict=True)):
        payload = payloads[i].tobytes()
        keys[env] = NodeKey(env, key_epoch, payload, key_hash(env, key_epoch, payload))  # this process's hash
    envs = t["envs"].numpy()
    if any(keys[e] is None for e in envs.tolist()):
        raise CacheSnapshotError("snapshot has a root context without a root key")
    stored = Quantized(t["payload"], t.get("scale"))
    return RootState(keys, RootRows(envs, [keys[e] for e in envs.tolist()], lengths, t["last"].numpy(), stored),
                     epoch)


class CacheSnapshots:
    """Mixin of :class:`~zerokv.model.world_model.WorldModel`: its root contexts saved and loaded."""

    def caches_to_bytes(self) -> bytes:
        """A snapshot of the root contexts (each env's latest root, what the next
        ``initial_inference`` extends), the config and a fingerprint of the weights, as bytes. "paged"
        backend only."""
        self._owner.check("caches_to_bytes")
        return snapshot_bytes(self.config, self, self.context_cache.export_state())

    def save_caches(self, path) -> None:
        """:meth:`caches_to_bytes`, written to ``path`` atomically (safetensors with a JSON header)."""
        atomic_write_bytes(path, self.caches_to_bytes())

    def load_caches_from_bytes(self, data: bytes) -> None:
        """Replace every cache with the snapshot's root contexts: afterwards the next
        ``initial_inference(obs, last_actions=...)`` gives exactly what the model the snapshot was
        taken from would have. Refused (``CacheSnapshotError``, naming the mismatch; nothing
        changed) for a damaged file, or one taken with other weights, another config or another backend."""
        self._owner.claim("load_caches")
        self.context_cache.import_state(restore(self.config, self, self.key_hash, data))
        self._nodes.start([])  # no search is open: the next call is a root call

    def load_caches(self, path) -> None:
        """:meth:`load_caches_from_bytes` of the file at ``path`` (written by :meth:`save_caches`)."""
        self.load_caches_from_bytes(Path(path).read_bytes())
