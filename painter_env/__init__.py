"""The painter environment. ``import painter_env`` registers ``Painter-v0``.

``gymnasium.make("Painter-v0", **kwargs)`` gives the single env (numpy in and out);
``gymnasium.make_vec("Painter-v0", num_envs=N, **kwargs)`` the natively batched torch env.
"""

import gymnasium

from painter_env.env import PainterEnv
from painter_env.vector import PainterVectorEnv

ENV_ID = "Painter-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(
        id=ENV_ID,
        entry_point="painter_env.env:PainterEnv",
        vector_entry_point="painter_env.vector:PainterVectorEnv",
    )

__all__ = ["ENV_ID", "PainterEnv", "PainterVectorEnv"]
