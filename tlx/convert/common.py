"""What every converter family shares: the error type, its multi-problem message, and reading a
transformer stack's shape back from its params."""

import numpy as np

from tlx.errors import UserError


class ConversionError(UserError, ValueError):
    """A checkpoint cannot be converted; the message names the tensor, field or path."""


def problems_error(what: str, problems: list[str]) -> ConversionError:
    return ConversionError(f"{what}:\n  " + "\n  ".join(problems))


def stack_shape(flat: dict, root: str, family: str) -> dict[str, int]:
    """Shape fields of the transformer stack under `root` (encoder | decoder) of flat params,
    read from the tensors themselves; a missing tensor names the path."""

    def shape(path):
        if path not in flat:
            raise ConversionError(f"not a tlx {family} params tree: {path} is missing")
        return np.shape(flat[path])

    layers = {p.split("/")[2] for p in flat if p.startswith(f"{root}/layers/layer_")}
    vocab, hidden = shape(f"{root}/token_embed/embedding")
    _, num_heads, _ = shape(f"{root}/layers/layer_0/attention/query_kernel")
    return {
        "num_layers": len(layers),
        "hidden_size": hidden,
        "num_heads": num_heads,
        "intermediate_size": shape(f"{root}/layers/layer_0/mlp/wi/kernel")[1],
        "vocab_size": vocab,
        "max_position": shape(f"{root}/position_embed/embedding")[0],
    }


def config_mismatches(cfg, inferred: dict) -> list[str]:
    """Fields where a resolved model config disagrees with the checkpoint's tensors."""
    return [
        f"model.{k}={getattr(cfg, k)} in config.json but the checkpoint has {v}"
        for k, v in inferred.items()
        if getattr(cfg, k) != v
    ]
