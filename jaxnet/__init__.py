"""jaxnet: two-layer neural networks on CIFAR-10 with JAX.

Pure functions over a params pytree (``model``), a hand-written numpy
reference (``reference``), gradient checks (``gradcheck``) and the notebook's
``TwoLayerNet`` API (``compat``). Importing jaxnet leaves JAX's global
configuration as it was; float64 work happens inside ``jax.enable_x64``.
"""
from .compat import TwoLayerNet
from .gradcheck import compare_gradients, eval_numerical_gradient, rel_error
from .model import init_params, loss, loss_and_grad, predict, scores

__all__ = [
    "TwoLayerNet", "compare_gradients", "eval_numerical_gradient", "rel_error",
    "init_params", "loss", "loss_and_grad", "predict", "scores",
]
