"""Porting ObjectRL (PyTorch) Bayesian layers and MLPs to Flax variables, without torch.

ObjectRL's ``objectrl.nets.layers.bayesian_layers`` modules keep, in their state dict:

* ``weight_mu``, ``weight_rho``: shape ``(out, in)`` (PyTorch layout);
* ``bias_mu``, ``bias_rho``: shape ``(out,)`` (absent with ``bias=False``);
* the buffers ``prior_mean``, ``prior_std``: shape ``()`` or ``(1,)`` (a scalar prior) or
  ``(out, in)``. ObjectRL applies this one prior to the weights and, when it is a scalar,
  to the bias as well.

``CLTLinearDet`` in ObjectRL still holds ``weight_rho``, ``bias_rho`` and the prior buffers
(its ``__init`` is never called), but never uses them; they are accepted and dropped.

ObjectRL's ``BayesianMLP`` wraps its layers in ``self.model = nn.Sequential(...)``, so its
keys read ``model.<index>.<name>`` where ``<index>`` counts the activation modules too
(``0, 2, 4, ...`` for ``'bbb'``/``'lr'``; ``0, 1, 2, ...`` for the CLT types).
:func:`port_objectrl_mlp` accepts any common prefix (``''``, ``'model.'``,
``'critic.model.'``...) followed by ``<index>.<name>`` and maps the layers, in increasing
``<index>`` order, onto ``layers_0, layers_1, ...`` of a :class:`~bayeslayers_jax.BayesianMLP`.

Convert a PyTorch state dict to NumPy first, e.g.
``{k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from bayeslayers_jax._layer_core import prior_array
from bayeslayers_jax.linen import LAYER_TYPES, BayesianMLP, BBBLinear, CLTLinear, CLTLinearDet, LRLinear

__all__ = ["port_objectrl_layer", "port_objectrl_mlp", "OBJECTRL_KEYS"]

#: The per-layer state-dict entries of an ObjectRL Bayesian layer.
OBJECTRL_KEYS = ("weight_mu", "weight_rho", "bias_mu", "bias_rho", "prior_mean", "prior_std")

_LAYER_CLASSES = (BBBLinear, LRLinear, CLTLinear, CLTLinearDet)
_KEY_RE = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)\.(?P<name>[A-Za-z_]+)$")


def _float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as err:  # e.g. a torch tensor that requires grad
        raise TypeError(
            f"state dict entry {name!r} could not be converted to a NumPy array ({err}); "
            "convert torch tensors with .detach().cpu().numpy()"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"state dict entry {name!r} must be a real array, got dtype {arr.dtype}")
    return arr


def _expect_shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise ValueError(f"state dict entry {name!r} has shape {arr.shape}, expected {shape}")


def _port_prior(
    name: str, arr: np.ndarray, out_in: tuple[int, int], positive: bool
) -> np.ndarray:
    """An ObjectRL prior buffer in Flax layout: a scalar, or the ``(out, in)`` array transposed."""
    if arr.size == 1:
        arr = arr.reshape(())
    elif arr.shape == out_in:
        arr = arr.T
    else:
        raise ValueError(
            f"state dict entry {name!r} has shape {arr.shape}, expected a scalar, (1,) or {out_in}"
        )
    if not np.all(np.isfinite(arr)) or (positive and not np.all(arr > 0)):
        what = "finite and > 0" if positive else "finite"
        raise ValueError(f"state dict entry {name!r} must be {what} everywhere")
    return arr


def _check_state_dict(state_dict: Any) -> None:
    """Raises ``TypeError`` unless ``state_dict`` is a mapping with ``str`` keys."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "state_dict must be a dict of arrays keyed by name (e.g. "
            "{k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}), "
            f"got {type(state_dict).__name__}"
        )
    for key in state_dict:
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {key!r} ({type(key).__name__})")


def _port_layer(
    state: Mapping[str, Any], layer: Any, where: str
) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
    """(params, prior or None, in_features) for one layer; ``where`` prefixes key names."""
    det = isinstance(layer, CLTLinearDet)
    required = ["weight_mu"] + ([] if det else ["weight_rho"])
    if layer.use_bias:
        required += ["bias_mu"] + ([] if det else ["bias_rho"])
    optional = {"prior_mean", "prior_std"}
    if det:  # ObjectRL's CLTLinearDet keeps these although it never uses them
        optional |= {"weight_rho", "bias_rho"}
    missing = [where + k for k in required if k not in state]
    extra = [where + k for k in state if k not in required and k not in optional]
    if missing or extra:
        raise ValueError(
            f"state dict does not match {type(layer).__name__}(features={layer.features}, "
            f"use_bias={layer.use_bias}): missing keys {missing}, unexpected keys {extra}"
        )
    arrays = {k: _float_array(where + k, v) for k, v in state.items()}
    w = arrays["weight_mu"]
    if w.ndim != 2 or w.shape[0] != layer.features:
        raise ValueError(
            f"state dict entry {where + 'weight_mu'!r} has shape {w.shape}, expected "
            f"({layer.features}, in_features) (PyTorch layout (out, in))"
        )
    out_in = w.shape
    dtype = layer.param_dtype
    params = {"weight_mu": jnp.asarray(w.T, dtype)}
    if not det:
        _expect_shape(where + "weight_rho", arrays["weight_rho"], out_in)
        params["weight_rho"] = jnp.asarray(arrays["weight_rho"].T, dtype)
    if layer.use_bias:
        _expect_shape(where + "bias_mu", arrays["bias_mu"], (layer.features,))
        params["bias_mu"] = jnp.asarray(arrays["bias_mu"], dtype)
        if not det:
            _expect_shape(where + "bias_rho", arrays["bias_rho"], (layer.features,))
            params["bias_rho"] = jnp.asarray(arrays["bias_rho"], dtype)
    if det:
        return params, None, out_in[1]

    in_out = (out_in[1], out_in[0])
    weight_mean = (
        _port_prior(where + "prior_mean", arrays["prior_mean"], out_in, positive=False)
        if "prior_mean" in arrays
        else layer.prior_mean
    )
    weight_std = (
        _port_prior(where + "prior_std", arrays["prior_std"], out_in, positive=True)
        if "prior_std" in arrays
        else layer.prior_std
    )
    prior = {
        "weight_mean": prior_array(weight_mean, in_out, dtype, "prior_mean"),
        "weight_std": prior_array(weight_std, in_out, dtype, "prior_std"),
    }
    if layer.use_bias:
        # ObjectRL shares a scalar prior with the bias; else the layer's own bias prior.
        bias_mean, bias_std = layer.bias_prior_mean, layer.bias_prior_std
        if bias_mean is None:
            bias_mean = weight_mean if np.size(weight_mean) == 1 else layer.prior_mean
        if bias_std is None:
            bias_std = weight_std if np.size(weight_std) == 1 else layer.prior_std
        prior["bias_mean"] = prior_array(bias_mean, (layer.features,), dtype, "bias_prior_mean")
        prior["bias_std"] = prior_array(bias_std, (layer.features,), dtype, "bias_prior_std")
    return params, prior, out_in[1]


def port_objectrl_layer(
    state_dict: Mapping[str, Any], layer: BBBLinear | LRLinear | CLTLinear | CLTLinearDet, *, prefix: str = ""
) -> dict[str, dict[str, Any]]:
    """Converts one ObjectRL Bayesian layer's state dict into Flax variables for ``layer``.

    Args:
        state_dict: NumPy arrays keyed ``prefix + name`` with ``name`` among
            :data:`OBJECTRL_KEYS` (PyTorch layout: weights ``(out, in)``). ``prior_mean`` and
            ``prior_std`` are optional (the layer's own prior is used when absent); keys not
            starting with ``prefix`` are an error.
        layer: the matching Flax module (its class, ``features``, ``use_bias`` and
            ``param_dtype`` decide what is expected and produced).
        prefix: common key prefix, e.g. ``'model.0.'``.

    Returns:
        ``{'params': ..., 'prior': ...}`` (``{'params': ...}`` for :class:`CLTLinearDet`),
        with the kernels transposed to ``(in, out)``, ready for ``layer.apply``.

    Raises:
        TypeError: ``state_dict`` is not a mapping with ``str`` keys, ``layer`` is not one of
            the Bayesian layers, or an entry is not numeric.
        ValueError: missing or unexpected keys, a shape mismatch, or a prior std <= 0.

    Examples:
        >>> import jax.numpy as jnp, numpy as np
        >>> from bayeslayers_jax import LRLinear, port_objectrl_layer
        >>> sd = {"weight_mu": np.ones((2, 3)), "weight_rho": np.full((2, 3), -3.0),
        ...       "bias_mu": np.zeros(2), "bias_rho": np.full(2, -3.0),
        ...       "prior_mean": np.zeros(1), "prior_std": np.ones(1)}  # PyTorch: (out, in)
        >>> layer = LRLinear(2)
        >>> variables = port_objectrl_layer(sd, layer)
        >>> variables["params"]["weight_mu"].shape  # Flax: (in, out)
        (3, 2)
        >>> print(layer.apply(variables, jnp.ones((1, 3)), map=True))
        [[3. 3.]]
        >>> port_objectrl_layer(list(sd.items()), layer)
        Traceback (most recent call last):
        ...
        TypeError: state_dict must be a dict of arrays keyed by name (e.g. {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}), got list
    """
    _check_state_dict(state_dict)
    if not isinstance(layer, _LAYER_CLASSES):
        raise TypeError(
            f"layer must be a BBBLinear, LRLinear, CLTLinear or CLTLinearDet, got {type(layer).__name__}"
        )
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {prefix!r} ({type(prefix).__name__})")
    outside = [k for k in state_dict if not k.startswith(prefix)]
    if outside:
        raise ValueError(f"state dict keys {outside} do not start with prefix {prefix!r}")
    state = {k[len(prefix):]: v for k, v in state_dict.items()}
    params, prior, _ = _port_layer(state, layer, prefix)
    return {"params": params} if prior is None else {"params": params, "prior": prior}


def port_objectrl_mlp(state_dict: Mapping[str, Any], model: BayesianMLP) -> dict[str, dict[str, Any]]:
    """Converts an ObjectRL ``BayesianMLP`` state dict into Flax variables for ``model``.

    Keys must read ``<prefix><index>.<name>`` with one prefix shared by all keys (e.g.
    ``model.0.weight_mu`` from ObjectRL's ``BayesianMLP``, or ``0.weight_mu`` from a bare
    ``nn.Sequential``). The distinct indices, in increasing order, are the layers
    ``layers_0, layers_1, ...``; gaps (activation modules) are fine. Each layer's entries
    are converted as in :func:`port_objectrl_layer`, and consecutive widths must chain (a
    CReLU doubles them).

    Args:
        state_dict: NumPy arrays in PyTorch layout.
        model: the :class:`~bayeslayers_jax.BayesianMLP` to load into (its
            ``layer_type``, ``act``, ``features`` and ``use_bias`` must match the ObjectRL
            network).

    Returns:
        ``{'params': {'layers_0': ..., ...}, 'prior': {...}}`` (no ``'prior'`` for
        ``'cltdet'``), ready for ``model.apply``.

    Raises:
        TypeError: ``state_dict`` is not a mapping with ``str`` keys, or ``model`` is not a
            ``BayesianMLP``.
        ValueError: malformed or inconsistent keys, two keys for one entry (``model.0.x``
            and ``model.00.x`` both parse to index 0), wrong number of layers, missing or
            unexpected entries, or a shape mismatch.

    Examples:
        ObjectRL's ``BayesianMLP(dim_in=3, dim_out=1, depth=2, width=4)`` of ``'lr'`` layers
        holds ``model.0.*`` and ``model.2.*`` (``model.1`` is the ReLU):

        >>> import jax.numpy as jnp, numpy as np
        >>> from bayeslayers_jax import BayesianMLP, port_objectrl_mlp
        >>> def objectrl_layer(n_in, n_out):
        ...     return {"weight_mu": np.full((n_out, n_in), 0.5), "weight_rho": np.full((n_out, n_in), -5.0),
        ...             "bias_mu": np.zeros(n_out), "bias_rho": np.full(n_out, -5.0)}
        >>> sd = {f"model.{i}.{k}": a for i, layer in ((0, objectrl_layer(3, 4)), (2, objectrl_layer(4, 1)))
        ...       for k, a in layer.items()}
        >>> model = BayesianMLP((4, 1), layer_type="lr")
        >>> variables = port_objectrl_mlp(sd, model)
        >>> sorted(variables["params"]), variables["params"]["layers_0"]["weight_mu"].shape
        (['layers_0', 'layers_1'], (3, 4))
        >>> print(model.apply(variables, jnp.ones((1, 3)), map=True))  # 4 * 0.5 * (3 * 0.5)
        [[3.]]
    """
    _check_state_dict(state_dict)
    if not isinstance(model, BayesianMLP):
        raise TypeError(f"model must be a BayesianMLP, got {type(model).__name__}")
    parsed = []
    for key in state_dict:
        match = _KEY_RE.match(key)
        if match is None:
            raise ValueError(
                f"state dict key {key!r} is not of the form '<prefix><index>.<name>' "
                "(e.g. 'model.0.weight_mu')"
            )
        parsed.append((key, match["prefix"], int(match["index"]), match["name"]))
    prefixes = {p for _, p, _, _ in parsed}
    if len(prefixes) > 1:
        raise ValueError(f"state dict keys mix several prefixes: {sorted(prefixes)}")
    groups: dict[int, dict[str, Any]] = {}
    seen: dict[tuple[int, str], str] = {}  # (index, name) -> the key that gave it
    for key, _, index, name in parsed:
        if (index, name) in seen:
            raise ValueError(
                f"state dict keys {seen[index, name]!r} and {key!r} both name entry {name!r} "
                f"of layer index {index}"
            )
        seen[index, name] = key
        groups.setdefault(index, {})[name] = state_dict[key]
    prefix = prefixes.pop() if prefixes else ""
    n = len(model.features)
    if len(groups) != n:
        raise ValueError(
            f"state dict holds {len(groups)} layers (indices {sorted(groups)}), but the model "
            f"has {n} (features={tuple(model.features)})"
        )
    cls = LAYER_TYPES[model.layer_type]
    params: dict[str, Any] = {}
    priors: dict[str, Any] = {}
    previous_out = None
    for i, index in enumerate(sorted(groups)):
        layer = cls(**model.layer_kwargs(i))
        p, prior, in_features = _port_layer(groups[index], layer, f"{prefix}{index}.")
        if previous_out is not None:
            expected = previous_out * (2 if model.act == "crelu" else 1)
            if in_features != expected:
                raise ValueError(
                    f"state dict entry '{prefix}{index}.weight_mu' has {in_features} inputs, "
                    f"but the previous layer gives {expected} (act={model.act!r})"
                )
        previous_out = layer.features
        params[f"layers_{i}"] = p
        if prior is not None:
            priors[f"layers_{i}"] = prior
    return {"params": params} if not priors else {"params": params, "prior": priors}
