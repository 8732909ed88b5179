"""VisualMatch and KeyToDoor (Hung et al. 2019, "transporting value"), in UniZero's form.

A grid world seen through a 5×5 egocentric window (observation ``(3, 5, 5)`` RGB in [0, 1]), 4
actions (0 north, 1 south, 2 west, 3 east), played in three phases:

- **explore** (``explore_steps``): VisualMatch shows the player, walled in, one square of one of
  three colours (blue, green, red); KeyToDoor puts the player in a room with a key to pick up.
- **distractor** (``memory_length`` steps): a room of 10 apples (each worth ``apple_reward``,
  0 by default as in LightZero; respawning ``respawn_every`` frames after a pickup).
- **reward** (``reward_steps`` = 15): VisualMatch shows the three colours; stepping on the one seen in
  the explore phase gives ``final_reward`` (1), on either other gives 0, and all three vanish.
  KeyToDoor shows a door that opens (``final_reward``) only if the key was picked up.

The layouts, phase lengths, rewards and update order are LightZero's (zoo/memory/envs/pycolab_tvt,
on pycolab); the grid logic is written here directly. Timing follows pycolab's ``Story``: a phase
of F steps takes F actions, and the action that ends a phase returns the next phase's first view,
so an episode is exactly ``explore_steps + memory_length + reward_steps`` steps. Colours are
pycolab's (0–999 per channel) divided by 1000; LightZero wrote them into uint8 without scaling (so
they wrap modulo 256), which changes pixel values but not which squares look alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium
import numpy as np
from gymnasium import spaces

VIEW = 5
"""Side of the egocentric window (the player at its centre; off-board squares are background)."""
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
"""(row, col) step of actions 0 north, 1 south, 2 west, 3 east."""
PLAYER, WALL, FLOOR, KEY, DOOR, APPLE, INDICATOR = "+", "#", " ", "k", "d", "a", "i"
COLOUR_SYMBOLS = ("b", "c", "e")
"""VisualMatch's three colour squares (blue, green, red)."""
COLOURS = {
    PLAYER: (898, 584, 430), WALL: (100, 100, 100), FLOOR: (800, 800, 800), KEY: (627, 321, 176),
    DOOR: (529, 808, 922), APPLE: (550, 700, 0), INDICATOR: (1000, 1000, 1000),
    "b": (0, 0, 1000), "c": (0, 1000, 0), "e": (1000, 0, 0),
}
"""pycolab colours (0–999 per channel) of every symbol."""

APPLE_GRID = ("###########", "#a a a a a#", "# a a a a #", "#a a a a a#", "# a a a a #", "#a a + a a#",
              "###########")
VISUAL_EXPLORE_GRID = ("           ", "    ppp    ", "    p+p    ", "    ppp    ", "           ",
                       "           ", "           ")
"""LightZero's PASSIVE_EXPLORE_GRID: one of the eight ``p`` becomes the colour, the rest walls."""
VISUAL_REWARD_GRID = ("###########", "# b  c  e #", "#         #", "#         #", "####   ####",
                      "   # + #   ", "   #####   ")
KEY_EXPLORE_GRID = ("  #######  ", "  #kkkkk#  ", "  #kkkkk#  ", "  ##   ##  ", "  #+++++#  ",
                    "  #+++++#  ", "  #######  ")
"""One of the ten ``k`` keeps the key, one of the ten ``+`` the player."""
KEY_REWARD_GRID = ("           ", "   ##d##   ", "   #   #   ", "   # + #   ", "   #   #   ",
                   "   #####   ", "           ")
INDICATOR_POSITION = (0, 5)
"""Where KeyToDoor flashes the indicator for the one frame in which the key is picked up."""


@dataclass(slots=True)
class Room:
    """One phase's board: static walls/floor, the player, the items on the floor.

    ``items`` maps a position to the symbol of a visible item there; ``blocking`` holds the symbols
    the player cannot walk onto (walls always); ``items_over_player`` paints items above the player
    (pycolab's z-order in the reward rooms).
    """

    board: np.ndarray  # (H, W) of one-character str: WALL or FLOOR
    player: tuple[int, int]
    items: dict[tuple[int, int], str]
    steps: int  # actions this phase takes
    blocking: set[str] = field(default_factory=set)
    items_over_player: bool = False
    frame: int = 0  # actions played in this room
    flash: dict[tuple[int, int], str] = field(default_factory=dict)  # drawn for one frame only

    @classmethod
    def parse(cls, art: tuple[str, ...], steps: int, item_symbols: str, **kwargs) -> Room:
        board = np.array([list(row) for row in art])
        items, player = {}, None
        for (r, c), ch in np.ndenumerate(board):
            if ch == PLAYER:
                player = (r, c)
            elif ch in item_symbols:
                items[(r, c)] = str(ch)
            if ch != WALL:
                board[r, c] = FLOOR
        return cls(board, player, items, steps, **kwargs)

    def move(self, action: int) -> None:
        dr, dc = MOVES[action]
        r, c = self.player[0] + dr, self.player[1] + dc
        h, w = self.board.shape
        if not (0 <= r < h and 0 <= c < w) or self.board[r, c] == WALL:
            return
        if self.items.get((r, c)) in self.blocking:
            return
        self.player = (r, c)

    def view(self) -> np.ndarray:
        """The 5×5 window of symbols centred on the player, off-board squares FLOOR."""
        h, w = self.board.shape
        out = np.full((VIEW, VIEW), FLOOR)
        half = VIEW // 2
        layers = [self.items, {self.player: PLAYER}]
        if self.items_over_player:
            layers.reverse()
        for i in range(VIEW):
            for j in range(VIEW):
                r, c = self.player[0] - half + i, self.player[1] - half + j
                if 0 <= r < h and 0 <= c < w:
                    out[i, j] = self.board[r, c]
                    for layer in layers:
                        out[i, j] = layer.get((r, c), out[i, j])
                    out[i, j] = self.flash.get((r, c), out[i, j])
        return out


def keep(rng: np.random.Generator, art: tuple[str, ...], symbol: str, n: int, replace: str = FLOOR) -> tuple[str, ...]:
    """``art`` with ``n`` of its ``symbol`` squares kept at random, the others set to ``replace``."""
    grid = np.array([list(row) for row in art])
    where = np.argwhere(grid == symbol)
    drop = rng.permutation(len(where))[: len(where) - n]
    for r, c in where[drop]:
        grid[r, c] = replace
    return tuple("".join(row) for row in grid)


def to_rgb(symbols: np.ndarray) -> np.ndarray:
    """``(5, 5)`` symbols → ``(3, 5, 5)`` float32 colours in [0, 1] (unknown symbols black)."""
    rgb = np.zeros((3, *symbols.shape), dtype=np.float32)
    for (i, j), ch in np.ndenumerate(symbols):
        rgb[:, i, j] = np.asarray(COLOURS.get(str(ch), (0, 0, 0)), dtype=np.float32) / 1000.0
    return rgb


class MemoryEnv(gymnasium.Env):
    """The three phases and their bookkeeping; the two tasks differ in their explore and reward rooms."""

    metadata = {"render_modes": ["rgb_array"]}
    PHASES = ("explore", "distractor", "reward")
    DEFAULT_EXPLORE_STEPS = 1

    def __init__(self, memory_length: int = 30, *, explore_steps: int | None = None, reward_steps: int = 15,
                 num_apples: int = 10, apple_reward: tuple[float, float] = (0.0, 0.0), respawn_every: int = 300,
                 final_reward: float = 1.0, render_mode: str | None = None) -> None:
        explore_steps = self.DEFAULT_EXPLORE_STEPS if explore_steps is None else explore_steps
        for name, value, low in (("memory_length", memory_length, 1), ("explore_steps", explore_steps, 1),
                                 ("reward_steps", reward_steps, 1), ("num_apples", num_apples, 0),
                                 ("respawn_every", respawn_every, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}={value!r}; must be an integer >= {low}")
        if num_apples > APPLE_GRID_SQUARES:
            raise ValueError(f"num_apples={num_apples}; the distractor room has {APPLE_GRID_SQUARES} apple squares")
        if len(apple_reward) != 2 or apple_reward[0] > apple_reward[1]:
            raise ValueError(f"apple_reward={apple_reward!r}; must be a range (low, high) with low <= high")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; allowed: None, 'rgb_array'")
        self.steps_per_phase = {"explore": int(explore_steps), "distractor": int(memory_length),
                                "reward": int(reward_steps)}
        self.memory_length = int(memory_length)
        self.num_apples, self.respawn_every = int(num_apples), int(respawn_every)
        self.apple_reward = (float(apple_reward[0]), float(apple_reward[1]))
        self.final_reward = float(final_reward)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3, VIEW, VIEW), dtype=np.float32)
        self.action_space = spaces.Discrete(len(MOVES))
        self.room: Room | None = None
        self.phase = 0
        self.success = False
        self._last_pickup: dict[tuple[int, int], int] = {}

    @property
    def episode_steps(self) -> int:
        """Actions in every episode: explore + memory_length + reward steps."""
        return sum(self.steps_per_phase.values())

    # --------------------------------------------------------------- the two tasks fill these in
    def _explore_room(self) -> Room:
        raise NotImplementedError

    def _reward_room(self) -> Room:
        raise NotImplementedError

    def _explore_update(self, room: Room) -> float:
        return 0.0

    def _reward_update(self, room: Room) -> float:
        raise NotImplementedError

    # --------------------------------------------------------------------------- the phases
    def _distractor_room(self) -> Room:
        art = keep(self.np_random, APPLE_GRID, APPLE, self.num_apples)
        room = Room.parse(art, self.steps_per_phase["distractor"], APPLE)
        self._apple_squares = set(room.items)
        self._last_pickup = {}
        return room

    def _distractor_update(self, room: Room) -> float:
        reward = 0.0
        if room.items.pop(room.player, None) is not None:
            self._last_pickup[room.player] = room.frame
            reward = float(self.np_random.uniform(*self.apple_reward)) if self.apple_reward[1] > 0 else 0.0
        if self.respawn_every:
            for pos, frame in list(self._last_pickup.items()):
                if room.frame > frame + self.respawn_every:
                    room.items[pos] = APPLE
                    del self._last_pickup[pos]
        return reward

    def _start_phase(self, phase: int) -> None:
        self.phase = phase
        name = self.PHASES[phase]
        self.room = {"explore": self._explore_room, "distractor": self._distractor_room,
                     "reward": self._reward_room}[name]()

    def _observation(self) -> np.ndarray:
        return to_rgb(self.room.view())

    def _info(self) -> dict:
        return {"phase": self.PHASES[self.phase], "success": self.success}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.success = False
        self._start_phase(0)
        return self._observation(), self._info()

    def step(self, action):
        if self.room is None:
            raise RuntimeError("step() before reset()")
        action = int(action)
        if not 0 <= action < len(MOVES):
            raise ValueError(f"action={action}; allowed: 0 (north), 1 (south), 2 (west), 3 (east)")
        room = self.room
        room.flash = {}
        room.move(action)
        room.frame += 1
        update = (self._explore_update, self._distractor_update, self._reward_update)[self.phase]
        reward = update(room)
        terminated = False
        if room.frame >= room.steps:
            if self.phase + 1 < len(self.PHASES):
                self._start_phase(self.phase + 1)
            else:
                terminated = True
        return self._observation(), reward, terminated, False, self._info()

    def render(self):
        if self.render_mode == "rgb_array" and self.room is not None:
            return (255 * self._observation().transpose(1, 2, 0)).astype(np.uint8)
        return None


APPLE_GRID_SQUARES = sum(row.count(APPLE) for row in APPLE_GRID)


class VisualMatchEnv(MemoryEnv):
    """VisualMatch: remember the colour seen in the explore phase (1 step, UniZero's setting) and step
    on it in the reward phase (15 steps). A random choice succeeds 1/3 of the time."""

    DEFAULT_EXPLORE_STEPS = 1

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super(MemoryEnv, self).reset(seed=seed)
        self.target = COLOUR_SYMBOLS[int(self.np_random.integers(len(COLOUR_SYMBOLS)))]
        self.choice: str | None = None
        return super().reset(options=options)

    def _explore_room(self) -> Room:
        art = keep(self.np_random, VISUAL_EXPLORE_GRID, "p", 1, replace=WALL)
        art = tuple(row.replace("p", self.target) for row in art)
        return Room.parse(art, self.steps_per_phase["explore"], self.target, blocking={self.target})

    def _reward_room(self) -> Room:
        return Room.parse(VISUAL_REWARD_GRID, self.steps_per_phase["reward"], "".join(COLOUR_SYMBOLS),
                          items_over_player=True)

    def _reward_update(self, room: Room) -> float:
        picked = room.items.get(room.player)
        if picked is None:
            return 0.0
        room.items.clear()  # a choice is final: every colour vanishes
        self.choice, self.success = picked, picked == self.target
        return self.final_reward if self.success else 0.0


class KeyToDoorEnv(MemoryEnv):
    """KeyToDoor: pick up the key in the explore phase (15 steps, LightZero's setting for this task) and
    open the door with it in the reward phase (15 steps)."""

    DEFAULT_EXPLORE_STEPS = 15

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super(MemoryEnv, self).reset(seed=seed)
        self.has_key = False
        return super().reset(options=options)

    def _explore_room(self) -> Room:
        art = keep(self.np_random, KEY_EXPLORE_GRID, KEY, 1)
        art = keep(self.np_random, art, PLAYER, 1)
        return Room.parse(art, self.steps_per_phase["explore"], KEY)

    def _explore_update(self, room: Room) -> float:
        if room.items.get(room.player) == KEY:
            del room.items[room.player]
            self.has_key = True
            room.flash = {INDICATOR_POSITION: INDICATOR}
        return 0.0

    def _reward_room(self) -> Room:
        blocking = set() if self.has_key else {DOOR}
        return Room.parse(KEY_REWARD_GRID, self.steps_per_phase["reward"], DOOR, blocking=blocking,
                          items_over_player=True)

    def _reward_update(self, room: Room) -> float:
        if room.items.get(room.player) == DOOR and self.has_key:
            self.has_key, self.success = False, True  # one opening per episode
            return self.final_reward
        return 0.0
