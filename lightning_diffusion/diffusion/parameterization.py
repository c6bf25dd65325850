"""Conversions between what a network predicts (eps, v or x0), the denoised estimate D and the score.

D(z_t) estimates E[y | z_t] (the lecture's E[y|t,z]). With z = alpha y + sigma eps and
v = alpha eps - sigma y (Salimans & Ho 2022, eq. 8 ff.):
  eps-prediction: D = (z - sigma eps_hat) / alpha
  v-prediction:   D = alpha z - sigma v_hat
  x0-prediction:  D = y_hat
Tweedie's formula gives the score: grad_z log p_t(z) = (alpha D - z) / sigma^2.
"""

from __future__ import annotations

from torch import Tensor

from lightning_diffusion.config import ConfigError

PREDICTIONS = ("eps", "v", "x0")


def broadcast_to(values: Tensor | float, like: Tensor) -> Tensor | float:
    """Reshape per-sample values (B,) to (B, 1, ..., 1) so they broadcast against ``like``; floats pass."""
    if isinstance(values, float):
        return values
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def check_prediction(prediction: str) -> str:
    """Return ``prediction`` if it is a known parameterisation, else raise a clear error."""
    if prediction not in PREDICTIONS:
        raise ConfigError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}.")
    return prediction


def denoised_from_output(
    output: Tensor, z: Tensor, alpha: Tensor | float, sigma: Tensor | float, prediction: str
) -> Tensor:
    """The denoised estimate D from a network output under the given parameterisation."""
    alpha, sigma = broadcast_to(alpha, z), broadcast_to(sigma, z)
    if prediction == "eps":
        return (z - sigma * output) / alpha
    if prediction == "v":
        return alpha * z - sigma * output
    check_prediction(prediction)
    return output


def eps_from_denoised(denoised: Tensor, z: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """The noise estimate implied by D: eps = (z - alpha D) / sigma."""
    return (z - broadcast_to(alpha, z) * denoised) / broadcast_to(sigma, z)


def score_from_denoised(denoised: Tensor, z: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """Tweedie: grad_z log p_t(z) = (alpha D - z) / sigma^2."""
    alpha, sigma = broadcast_to(alpha, z), broadcast_to(sigma, z)
    return (alpha * denoised - z) / sigma**2


def denoised_from_score(score: Tensor, z: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """Inverse of Tweedie: D = (z + sigma^2 score) / alpha."""
    alpha, sigma = broadcast_to(alpha, z), broadcast_to(sigma, z)
    return (z + sigma**2 * score) / alpha
