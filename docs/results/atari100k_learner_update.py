import time, torch, numpy as np
from zerokv.model.config import WorldModelConfig
from zerokv.model.world_model import WorldModel
from zerokv.rl.learner import Learner
from zerokv.bench.learner import LearnerBench, random_replay
torch.set_num_threads(2)
sizes = {"atari100k": dict(embed_dim=768, num_heads=8, encoder_channels=64),
         "atari100k-cpu": dict(embed_dim=384, num_heads=6, encoder_channels=32),
         "atari(light)": dict(embed_dim=768, num_heads=8, encoder="light")}
learners = {}
for name, kw in sizes.items():
    kw = {"encoder": "unizero", **kw}
    cfg = WorldModelConfig(observation_shape=(3, 64, 64), action_space_size=6, num_layers=2, context_length=8,
                           max_tokens=22, support_size=300, **kw)
    torch.manual_seed(0)
    learners[name] = Learner(WorldModel(cfg), learning_rate=1e-4, weight_decay=1e-4, grad_clip=20.0,
                             target_update_rate=0.05, fresh_value_targets=True, td_steps=5, dtype="bfloat16")
replay = random_replay(LearnerBench(replay_steps=400, segment_length=50), learners["atari100k"].model.config)
res = {n: [] for n in learners}
for r in range(3):
    batch = replay.sample(64)
    for n in (list(learners) if r % 2 == 0 else list(learners)[::-1]):
        w, c = time.perf_counter(), time.process_time()
        learners[n].update(batch)
        if r:
            res[n].append((time.perf_counter() - w, time.process_time() - c))
        print(n, r, res[n][-1] if r else "warmup", flush=True)
for n, v in res.items():
    print(f"{n}: wall {np.median([a for a, _ in v]):.2f} s, cpu {np.median([b for _, b in v]):.2f} s per update (bf16 autocast, batch 64x11)")
