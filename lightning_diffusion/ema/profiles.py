"""Power-function EMA profiles, the math of post-hoc EMA (Karras et al. 2024, "Analyzing and improving the
training dynamics of diffusion models", EDM2, sec. 3 and appendix C), written once.

A profile of exponent γ averaged up to step t weighs the training weights of step τ by
p_γ,t(τ) = (γ+1) τ^γ / t^(γ+1) on 0 < τ ≤ t (EDM2 eq. 3); its relative width is
σ_rel = (γ+1)^½ (γ+2)^-1 (γ+3)^-½ (EDM2 sec. 3.1, appendix C.2). It is tracked step by step with
β_γ(t) = (1 - 1/t)^(γ+1) (EDM2 appendix C.1), which gives step τ ≤ t the exact weight
(τ^(γ+1) - (τ-1)^(γ+1)) / t^(γ+1), the integral of p_γ,t over (τ-1, τ]. Any other profile is rebuilt from
snapshots of tracked profiles by least squares in L²: the inner products of two profiles have a closed
form (EDM2 appendix C.3, Algorithm 3), so the weights of the snapshots solve a small linear system.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lightning_diffusion.config import ConfigError


def sigma_rel_of(gamma: float) -> float:
    """σ_rel of the profile of exponent γ (EDM2 sec. 3.1): (γ+1)^½ (γ+2)^-1 (γ+3)^-½."""
    return math.sqrt(gamma + 1) / ((gamma + 2) * math.sqrt(gamma + 3))


GAMMA_OF_WIDEST = (math.sqrt(5) - 3) / 2  # dσ_rel/dγ = 0 ⇔ γ² + 3γ + 1 = 0, the root above -1
SIGMA_REL_MAX = sigma_rel_of(GAMMA_OF_WIDEST)  # ≈ 0.2996: no power-function profile is wider


def gamma_of(sigma_rel: float) -> float:
    """The exponent γ of the profile of relative width ``sigma_rel``: the largest real root of
    γ³ + 7γ² + (16 - σ_rel⁻²)γ + (12 - σ_rel⁻²) = 0, σ_rel's relation solved for γ (EDM2 appendix C.2,
    Algorithm 2); widths ≤ 0 or above the widest profile are refused with the range."""
    if not (isinstance(sigma_rel, (int, float)) and math.isfinite(sigma_rel)) or sigma_rel <= 0:
        raise ConfigError(
            f"an EMA length sigma_rel must be a number above 0, got {sigma_rel!r}; EDM2 uses 0.01 to 0.25 "
            "(e.g. 0.05, 0.10)."
        )
    if sigma_rel >= SIGMA_REL_MAX:
        raise ConfigError(
            f"EMA length sigma_rel {sigma_rel:g} is wider than any power-function profile (sigma_rel < "
            f"{SIGMA_REL_MAX:.4f}, gamma > -1); choose a smaller one, e.g. 0.2."
        )
    t = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - t, 12.0 - t])
    return float(max(root.real for root in roots if abs(root.imag) < 1e-9 and root.real > -1))


def beta(step: int, gamma: float) -> float:
    """The decay of a power-function EMA at optimizer step ``step`` ≥ 1: (1 - 1/t)^(γ+1) (EDM2 appendix
    C.1); 0 at the first step, so the average starts as the first weights."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def step_weights(step: int, gamma: float) -> np.ndarray:
    """The weight the tracked average at ``step`` gives the training weights of steps 1..step: the
    telescoping product of ``beta`` above, (τ^(γ+1) - (τ-1)^(γ+1)) / t^(γ+1) (they sum to 1)."""
    tau = np.arange(1, step + 1, dtype=np.float64) / step
    return tau ** (gamma + 1) - (tau - 1 / step) ** (gamma + 1)


def profile_dot(t_a: np.ndarray, gamma_a: np.ndarray, t_b: np.ndarray, gamma_b: np.ndarray) -> np.ndarray:
    """∫ p_γa,ta(τ) p_γb,tb(τ) dτ for broadcast arrays (EDM2 appendix C.3, Algorithm 3 ``p_dot_p``):
    (γa+1)(γb+1) / (γa+γb+1) · min(ta,tb)^(γa+γb+1) / (ta^(γa+1) tb^(γb+1)), in a form free of overflow."""
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    ratio = t_a / t_b
    exponent = np.where(t_a < t_b, gamma_b, -gamma_a)
    numerator = (gamma_a + 1) * (gamma_b + 1) * ratio**exponent
    return numerator / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b))


def solve_weights(
    steps: Sequence[float], gammas: Sequence[float], target_step: float, target_gamma: float
) -> tuple[np.ndarray, float]:
    """The snapshot weights w minimising ‖p_target - Σ w_i p_i‖ over the snapshot profiles (step_i, γ_i)
    (EDM2 appendix C.3, Algorithm 3 ``solve_weights``), and the relative L² error of that fit,
    ‖p_target - Σ w_i p_i‖ / ‖p_target‖ from the same inner products (0: the target is a snapshot)."""
    steps_ = np.asarray(steps, dtype=np.float64)
    gammas_ = np.asarray(gammas, dtype=np.float64)
    gram = profile_dot(steps_[:, None], gammas_[:, None], steps_[None, :], gammas_[None, :])
    projections = profile_dot(steps_, gammas_, target_step, target_gamma)
    weights = np.linalg.lstsq(gram, projections, rcond=None)[0]
    norm = float(profile_dot(target_step, target_gamma, target_step, target_gamma))
    residual = norm - 2 * weights @ projections + weights @ gram @ weights
    return weights, math.sqrt(max(float(residual), 0.0) / norm)
