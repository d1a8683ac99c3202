"""FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches", Algorithm 1):
the optimiser Wide & Deep trains its wide part with (Cheng et al. 2016, §3.2), per coordinate

    σ = (√(n + g²) − √n) / α ;  z += g − σ w ;  n += g²
    w = 0                                              if |z| ≤ λ1
    w = −(z − sign(z) λ1) / ((β + √n) / α + λ2)        otherwise

so the L1 term λ1 sets rarely useful weights exactly to zero. `lr` is α; the loop's schedule
scales it like any other learning rate.
"""

from __future__ import annotations

import torch


class FTRL(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.05, beta: float = 1.0, l1: float = 1e-4, l2: float = 1e-4) -> None:
        if lr <= 0 or beta < 0 or l1 < 0 or l2 < 0:
            raise ValueError(f"FTRL needs lr > 0 and beta, l1, l2 >= 0; got {lr}, {beta}, {l1}, {l2}")
        super().__init__(params, {"lr": lr, "beta": beta, "l1": l1, "l2": l2})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            alpha, beta, l1, l2 = group["lr"], group["beta"], group["l1"], group["l2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.to_dense() if p.grad.is_sparse else p.grad
                state = self.state[p]
                if not state:
                    state["z"] = torch.zeros_like(p)
                    state["n"] = torch.zeros_like(p)
                z, n = state["z"], state["n"]
                n_new = n + g * g
                sigma = (n_new.sqrt() - n.sqrt()) / alpha
                z.add_(g - sigma * p)
                n.copy_(n_new)
                w = -(z - z.sign() * l1) / ((beta + n.sqrt()) / alpha + l2)
                p.copy_(torch.where(z.abs() <= l1, torch.zeros_like(w), w))
        return loss
