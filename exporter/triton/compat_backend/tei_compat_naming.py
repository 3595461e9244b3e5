"""How the compatibility backend maps config tensors to ``forward()`` arguments and returned outputs, as NVIDIA's
C++ LibTorch backend (r24.10) does, and the torch_aoti (``model.pt2``) path's ordinal naming. Pure: no Triton
objects."""
from tei_compat_config import CompatBackendError


def _index_of(name):
    """The index in ``<name>__<index>`` as the C++ backend reads it (text after the first ``__``, all digits, atoi:
    an empty index is 0), or None when the name does not follow that convention."""
    start = name.find("__")
    if start == -1:
        return None
    tail = name[start + 2:]
    if not all(c.isdigit() for c in tail):
        return None
    return int(tail) if tail else 0


def naming_convention(config_names, arg_names):
    """FORWARD_ARGUMENT (inputs only: every name is an argument), NAMED_INDEX or STRICT_CONFIG_ORDERING."""
    if arg_names is not None and all(name in arg_names for name in config_names):
        return "FORWARD_ARGUMENT"
    if all(_index_of(name) is not None for name in config_names):
        return "NAMED_INDEX"
    return "STRICT_CONFIG_ORDERING"


def match_inputs(config_names, arg_names, model_name="model", batch_targets=()):
    """Map each config input (and then each batch-input target) to a ``forward()`` argument position.

    Returns ``(positions, convention)``; ``positions[i]`` is the argument position of the i-th name of
    ``config_names + batch_targets``. Duplicate or missing positions are not refused here, as in the C++ backend: the
    argument left unset then fails every request in ``forward()``.
    """
    expected = len(config_names) + len(batch_targets)
    if len(arg_names) != expected:
        raise CompatBackendError(
            f"unable to load model '{model_name}', configuration expects {expected} inputs, "
            f"model provides {len(arg_names)}"
        )
    if not config_names:
        raise CompatBackendError("model configuration must contain at least one input, none were specified.",
                                 "INTERNAL")
    convention = naming_convention(config_names, arg_names)
    positions = []
    for i, name in enumerate(list(config_names) + list(batch_targets)):
        if convention == "FORWARD_ARGUMENT":
            positions.append(arg_names.index(name) if name in arg_names else None)
        elif convention == "NAMED_INDEX":
            index = _index_of(name)
            positions.append(index if index is not None else i)
        else:
            positions.append(i)
    for name, position in zip(list(config_names) + list(batch_targets), positions):
        if position is not None and position >= len(arg_names):  # C++: a write past its argument vector
            raise CompatBackendError(
                f"model '{model_name}': input '{name}' has index {position}, but forward() takes only "
                f"{len(arg_names)} inputs (indices 0..{len(arg_names) - 1})")
    return positions, convention


def match_outputs(config_names):
    """Position of each config output in the model's returned tuple (``<name>__<index>``, else config order)."""
    if not config_names:
        raise CompatBackendError("model configuration must contain at least one output, none were specified.",
                                 "INTERNAL")
    convention = naming_convention(config_names, None)
    if convention == "NAMED_INDEX":
        return [_index_of(name) for name in config_names], convention
    return list(range(len(config_names))), convention


def match_pt2(config_names, count, kind, model_name="model"):
    """Positions of a torch_aoti model's config tensors: each must be named ``INPUT__<n>`` / ``OUTPUT__<n>`` (the n-th
    flattened input or output of the package). ``count`` is the package's input count (checked like the C++
    backend does), or None for outputs, whose count is known only at run time."""
    prefix = "INPUT" if kind == "input" else "OUTPUT"
    indices = [_index_of(name) for name in config_names]
    if any(i is None for i in indices) or any(name.rpartition("__")[0] != prefix for name in config_names):
        raise CompatBackendError(
            f"model '{model_name}' is a torch_aoti (model.pt2) model, whose {kind}s are named {prefix}__<n> "
            f"(the n-th {kind} of the package), but the configuration names {config_names}; rename them "
            f"{prefix}__0, {prefix}__1, ..."
        )
    if count is not None and len(config_names) != count:
        raise CompatBackendError(
            f"unable to load model '{model_name}', configuration expects {len(config_names)} {kind}s, "
            f"the model.pt2 package takes {count}"
        )
    if len(set(indices)) != len(indices):
        raise CompatBackendError(
            f"model '{model_name}': {kind} names {config_names} repeat an index; each <name>__<index> must be distinct"
        )
    limit = count if count is not None else max(indices) + 1
    for name, index in zip(config_names, indices):
        if index >= limit:
            raise CompatBackendError(f"model '{model_name}': {kind} '{name}' has index {index}, but the package "
                                     f"takes only {limit} {kind}s")
    return indices
