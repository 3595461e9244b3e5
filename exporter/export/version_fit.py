"""Whether a new version fits a model's other versions. Triton reads one config.pbtxt per model for all its versions,
so an export that adds version N replaces the config the existing versions are served with: what they all share
(what goes in, what comes out, how requests are batched, which backend runs them) must not change."""
from __future__ import annotations

from .triton_config import parse_pbtxt

# ModelConfig fields every version is served by; the rest (instances, thread parameters, warm-up, queue delay, the
# header comment) may change with a new version, as they would with `tune`.
SHARED_FIELDS = ("platform", "backend", "default_model_filename", "max_batch_size", "input", "output", "batch_input",
                 "batch_output", "ensemble_scheduling", "sequence_batching")


def _field(config, name: str) -> str:
    from google.protobuf import text_format

    value = getattr(config, name)
    if hasattr(value, "ListFields"):  # a message: only when set
        return text_format.MessageToString(value, as_one_line=True) if config.HasField(name) else ""
    if hasattr(value, "__len__") and not isinstance(value, str):  # a repeated field
        return " ".join("{" + text_format.MessageToString(v, as_one_line=True) + "}" for v in value)
    return str(value)


def _tensors(config, name: str) -> dict[str, str]:
    from google.protobuf import text_format

    return {t.name: text_format.MessageToString(t, as_one_line=True) for t in getattr(config, name)}


def shared_differences(existing_text: str, new_text: str, where: str = "config.pbtxt") -> list[str]:
    """The fields of :data:`SHARED_FIELDS` in which ``new_text`` (the config an export renders) differs from
    ``existing_text`` (the model's config.pbtxt), one line each ("max_batch_size: 4 -> 2"; inputs and outputs by
    tensor name); [] when it fits."""
    old, new = parse_pbtxt(existing_text, where=where), parse_pbtxt(new_text, where="the new config")
    differences = []
    for name in SHARED_FIELDS:
        if name in ("input", "output"):
            before, after = _tensors(old, name), _tensors(new, name)
            for tensor in sorted(set(before) | set(after), key=lambda t: (t not in before, t)):
                if before.get(tensor) != after.get(tensor):
                    shown = [f"{{{side[tensor]}}}" if tensor in side else "none" for side in (before, after)]
                    differences.append(f"{name} {tensor}: {shown[0]} -> {shown[1]}")
            continue
        before, after = _field(old, name), _field(new, name)
        if before != after:
            differences.append(f"{name}: {before or '(none)'} -> {after or '(none)'}")
    return differences
