"""A memory of the best program found so far for each training image (memoised wake-sleep).

Amortise, then refine: the encoder proposes programs cheaply, search (Gibbs refinement) improves
them, and what search finds is kept per image, so that refinement accumulates over the visits of
an image instead of starting again each time. The dictionary is then fitted to the remembered
programs and the encoder is taught to write them (``agents.estimators.memoised``).

The memory holds programs only; how good a program is depends on the dictionary, which keeps
changing, so candidates are always compared by their SSE under the current dictionary.

References:
    Hewitt, Le, Tenenbaum, Learning to learn generative programs with Memoised Wake-Sleep, 2020;
    Anthony, Tian, Barber, Thinking Fast and Slow with Deep Learning and Tree Search, 2017.
"""

from __future__ import annotations

import torch

from agents.gibbs import program_sse
from decoders.dictionary import PatchDictionary
from decoders.kernel import CanvasGeometry


class ProgramMemory:
    """``programs`` ``(N, T, 4)``: the best known program of each of N images (``filled`` says which)."""

    def __init__(self, num_images: int, steps: int, device: torch.device | str = "cpu"):
        self.programs = torch.zeros(num_images, steps, 4, dtype=torch.long, device=device)
        self.filled = torch.zeros(num_images, dtype=torch.bool, device=device)

    @torch.no_grad()
    def best(
        self,
        index: torch.Tensor,
        targets: torch.Tensor,
        candidates: torch.Tensor,
        dictionary: PatchDictionary,
        geometry: CanvasGeometry,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best of the remembered program and ``candidates`` ``(B, C, T, 4)`` for images ``index``
        ``(B,)``, by SSE under the current dictionary: programs ``(B, T, 4)`` and their SSE ``(B,)``."""
        batch, count = candidates.shape[:2]
        remembered = self.programs[index].unsqueeze(1)
        everything = torch.cat([remembered, candidates], dim=1)
        values, support = dictionary.patches()
        repeated = targets.repeat_interleave(count + 1, 0)
        flat = everything.reshape(batch * (count + 1), *everything.shape[2:])
        sse = program_sse(repeated, flat, values, support, dictionary.num_levels, geometry).view(batch, count + 1)
        sse[:, 0] = torch.where(self.filled[index], sse[:, 0], torch.inf)  # an empty slot is never chosen
        choice = sse.argmin(1)
        rows = torch.arange(batch, device=index.device)
        return everything[rows, choice], sse[rows, choice]

    def store(self, index: torch.Tensor, programs: torch.Tensor) -> None:
        """Remember ``programs`` ``(B, T, 4)`` for images ``index`` (the last row wins on a repeated image)."""
        order = torch.arange(len(index), device=index.device)
        last = torch.full_like(self.filled, -1, dtype=torch.long).scatter_reduce_(0, index, order, reduce="amax")
        keep = last[index] == order
        self.programs[index[keep]] = programs[keep].to(self.programs.device)
        self.filled[index[keep]] = True

    def state_dict(self) -> dict:
        return {"programs": self.programs.cpu(), "filled": self.filled.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.programs.copy_(state["programs"])
        self.filled.copy_(state["filled"])
