"""The eager reference: sentence-transformers itself, built with the exported model's pooling and normalisation.

Parity is always measured against this object, so "equal" means equal to what ``SentenceTransformer.encode`` returns.
"""
from __future__ import annotations

import torch

from .spec import ModelSpec


def load_reference(spec: ModelSpec, device: str = "cpu"):
    """A SentenceTransformer for ``spec``: Transformer -> Pooling(spec.pooling) [-> Normalize]."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    # float32 whatever the checkpoint stores: transformers loads a float16/bfloat16 checkpoint in that dtype, and
    # the reference (and the float32 export built from its weights) would then compute in half precision
    transformer = Transformer(
        str(spec.path),
        max_seq_length=spec.max_seq_len,
        model_kwargs={"trust_remote_code": spec.trust_remote_code, "dtype": torch.float32},
        config_kwargs={"trust_remote_code": spec.trust_remote_code},
    )
    modules = [transformer, Pooling(spec.hidden_size, pooling_mode=spec.pooling)]
    if spec.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device=device)
    model.eval()
    return model


def reference_embeddings(reference, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings of the reference on already tokenized ``features`` (same tensors the export sees)."""
    with torch.inference_mode():
        out = reference({k: v.clone() for k, v in features.items()})
    return out["sentence_embedding"].float()


def encoder_of(reference) -> torch.nn.Module:
    """The Hugging Face model inside the reference, so the export uses the very same weights."""
    return reference[0].auto_model
