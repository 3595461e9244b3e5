"""Task adapters: one LoRA adapter of a multi-task checkpoint (jina-embeddings-v3) merged into the weights.

jinaai/jina-embeddings-v3 ships its own modelling code (xlm-roberta-flash-implementation, ``modeling_lora.py``):
every ``nn.Linear`` and ``nn.Embedding`` of the model carries one LoRA adapter per task, registered with
``torch.nn.utils.parametrize``, so its checkpoint stores, per adapted module ``M``,

    M.parametrizations.weight.original   the base weight W
    M.parametrizations.weight.0.lora_A   Linear [tasks, rank, in];     Embedding [tasks, rows, rank]
    M.parametrizations.weight.0.lora_B   Linear [tasks, out, rank];    Embedding [tasks, rank, dim]

and its config names the tasks in index order (``lora_adaptations``), ``lora_rank``, ``lora_alpha`` and each task's
instruction (``task_instructions``). With task t the remote code computes with W + (alpha / rank) * B[t] @ A[t]
for a Linear and W + (alpha / rank) * A[t] @ B[t] for an Embedding (rows x dim, as the weight is stored).
transformers' native ``jina_embeddings_v3`` class has no adapters: the export chooses one task (``--task``), merges
its adapter into W here and writes plain ``M.weight`` keys, which the native class loads with no key left over
(native.py checks). Without ``--task`` such a checkpoint is refused with the list of its tasks.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UnsupportedModelError

_ORIGINAL = ".parametrizations.weight.original"
_LORA = ".parametrizations.weight.0.lora_"


def task_adapters(config: dict) -> tuple[str, ...]:
    """The tasks a checkpoint's adapters are for, in adapter-index order; () for a checkpoint without adapters."""
    tasks = config.get("lora_adaptations") or ()
    return tuple(str(t) for t in tasks)


def choose_task(config: dict, task: str | None, where: str, trust_remote_code: bool = False) -> str | None:
    """The task whose adapter the export merges (None: the checkpoint has none and none was asked for)."""
    tasks = task_adapters(config)
    if not tasks:
        if task is not None:
            raise UnsupportedModelError(
                f"--task {task}: the model has no task adapters (its config.json has no lora_adaptations)",
                fix="leave out --task for this model", where=where)
        return None
    if trust_remote_code:
        raise UnsupportedModelError(
            "a checkpoint with task adapters is exported with transformers' native class and the chosen adapter "
            "merged into its weights, not with its own code", fix="leave out --trust-remote-code and pass --task",
            where=where)
    if task is not None and task not in tasks:
        raise task_error(tasks, f"--task {task} is not one of its tasks", where)
    return task


def require_task(tasks: tuple[str, ...], task: str | None, where: str) -> None:
    """Refuse to load a checkpoint with task adapters when no task was chosen (what only loading the weights needs:
    reading its tokenizer does not)."""
    if tasks and task is None:
        raise task_error(tasks, "no --task given", where)


def task_error(tasks: tuple[str, ...], said: str, where: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"the model has one LoRA adapter per task and one must be chosen at export ({said}); its tasks: "
        f"{', '.join(tasks)}", fix=f"pass --task with one of: {', '.join(tasks)}", where=where)


def task_prompt(config: dict, st_prompts: dict, task: str) -> str | None:
    """The instruction the model's files give ``task``: sentence-transformers' prompt of that name, else the
    config's ``task_instructions``; None when neither names one."""
    if task in st_prompts:
        return str(st_prompts[task])
    instructions = config.get("task_instructions") or {}
    return str(instructions[task]) if task in instructions else None


def merge_task_adapter(weights: dict, config: dict, task: str, where: str) -> dict:
    """``weights`` (a checkpoint's state dict) with ``task``'s adapter merged into every adapted weight and the
    adapter tensors gone: ``M.parametrizations.weight.original`` becomes ``M.weight``. Computed in float32."""
    index = task_adapters(config).index(task)
    rank = int(config.get("lora_rank") or 0)
    alpha = float(config.get("lora_alpha") if config.get("lora_alpha") is not None else 1.0)
    if rank < 1:
        raise UnsupportedModelError("the model has task adapters but no lora_rank", where=where,
                                    fix="the checkpoint's config.json must give lora_rank (its adapters' rank)")
    scale = alpha / rank
    merged, used = {}, set()
    for key, value in weights.items():
        if _LORA in key:
            continue
        if not key.endswith(_ORIGINAL):
            merged[key] = value
            continue
        module = key[: -len(_ORIGINAL)]
        a_key, b_key = f"{module}{_LORA}A", f"{module}{_LORA}B"
        if a_key not in weights or b_key not in weights:
            raise UnsupportedModelError(f"{key} has no lora_A/lora_B beside it", where=where,
                                        fix="the checkpoint is incomplete: download it again")
        used.update((a_key, b_key))
        merged[f"{module}.weight"] = _merged(value, weights[a_key], weights[b_key], index, rank, scale, module,
                                             where)
    left = sorted(k for k in weights if _LORA in k and k not in used)
    if left:
        raise UnsupportedModelError(f"adapter tensors without a base weight: {', '.join(left[:5])}", where=where,
                                    fix="the checkpoint is incomplete: download it again")
    return merged


def _merged(weight, lora_a, lora_b, index: int, rank: int, scale: float, module: str, where: str):
    w, a, b = weight.float(), lora_a[index].float(), lora_b[index].float()
    rows, cols = w.shape
    if a.shape == (rank, cols) and b.shape == (rows, rank):  # Linear: W [out, in]
        return w + scale * (b @ a)
    if a.shape == (rows, rank) and b.shape == (rank, cols):  # Embedding: W [rows, dim]
        return w + scale * (a @ b)
    raise UnsupportedModelError(
        f"{module}: adapter shapes lora_A {tuple(lora_a.shape)}, lora_B {tuple(lora_b.shape)} do not fit the weight "
        f"{tuple(weight.shape)} with lora_rank {rank}", where=where,
        fix="the checkpoint's adapters are not in the jina-embeddings-v3 format tei-export merges")


def read_weights(model_dir: Path) -> tuple[dict, list[Path]]:
    """Every tensor of ``model_dir``'s checkpoint (safetensors, sharded or not, else pytorch_model.bin) and the
    files they came from (with a shard index)."""
    import torch
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        weights = {}
        for f in files:
            weights.update(load_file(str(f)))
        return weights, files + sorted(model_dir.glob("*.safetensors.index.json"))
    bins = sorted(model_dir.glob("pytorch_model*.bin"))
    weights = {}
    for f in bins:
        weights.update(torch.load(str(f), map_location="cpu", weights_only=True))
    return weights, bins + sorted(model_dir.glob("pytorch_model*.bin.index.json"))


def write_merged(model_dir: Path, target: Path, config: dict, task: str) -> list[str]:
    """``model_dir``'s weights with ``task`` merged, written to ``target``/model.safetensors; the names of the
    checkpoint files it replaces (not to be linked beside it)."""
    from safetensors.torch import save_file

    where = str(model_dir)
    weights, files = read_weights(model_dir)
    merged = merge_task_adapter(weights, config, task, where)
    save_file({k: v.contiguous() for k, v in merged.items()}, str(target / "model.safetensors"))
    return [f.name for f in files]
