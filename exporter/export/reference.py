"""The eager reference: sentence-transformers itself, built from the export's own module chain.

Parity is always measured against this object, so "equal" means equal to what ``SentenceTransformer.encode`` returns
for a model loaded with the export's overrides (pooling, normalisation, Matryoshka dims, max length) and revision.
The modules are sentence-transformers' own classes, loaded from the model's folders: the export takes its head's
weights from them (:mod:`.head`), never from a second reading of the files.
"""
from __future__ import annotations

import numpy as np
import torch

from .spec import ModelSpec


class Reference:
    """A SentenceTransformer (Transformer -> the chain's modules up to truncation) and what encode() adds after
    forward(): Matryoshka truncation, then normalisation again when the chain normalises."""

    def __init__(self, model, spec: ModelSpec):
        self.model = model
        self.spec = spec

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def encoder(self) -> torch.nn.Module:
        """The Hugging Face model inside the reference, so the export uses the very same weights."""
        return self.model[0].auto_model

    def head_module(self, index: int) -> torch.nn.Module:
        """The sentence-transformers module of the chain's ``index``-th entry (Dense, LayerNorm), for its weights."""
        return self.model[1 + index]

    def preprocess(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.model.preprocess(texts)

    def encode(self, texts: list[str], batch_size: int = 32, prompt: str = "",
               prompt_name: str | None = None) -> np.ndarray:
        """``SentenceTransformer.encode`` with ``prompt``, or the model's prompt named ``prompt_name`` (none by
        default, not even the model's default prompt: prompts are the client's, or baked into a text model)."""
        chosen = {"prompt_name": prompt_name} if prompt_name is not None else {"prompt": prompt}
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=self._renormalize, truncate_dim=self.spec.dims, **chosen)

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sentence embeddings on already tokenized ``features`` (the same tensors the export sees)."""
        with torch.inference_mode():
            out = self.model({k: v.clone() for k, v in features.items()})["sentence_embedding"].float()
        if self.spec.dims is not None:
            out = out[:, :self.spec.dims]
            if self._renormalize:
                out = torch.nn.functional.normalize(out, p=2.0, dim=1)
        return out

    @property
    def _renormalize(self) -> bool:
        return self.spec.dims is not None and self.spec.normalize


def load_reference(spec: ModelSpec, device: str = "cpu") -> Reference:
    """sentence-transformers built from ``spec``: its Transformer, then the chain's modules before truncation."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer

    # float32 whatever the checkpoint stores: transformers loads a float16/bfloat16 checkpoint in that dtype, and
    # the reference (and the float32 export built from its weights) would then compute in half precision
    model_kwargs = {"trust_remote_code": spec.trust_remote_code, "dtype": torch.float32}
    if spec.architecture.attention:
        model_kwargs["attn_implementation"] = spec.architecture.attention
    if spec.native:
        _check_native(spec, model_kwargs)
    transformer = Transformer(str(spec.load_path), max_seq_length=spec.max_seq_len, model_kwargs=model_kwargs,
                              config_kwargs={"trust_remote_code": spec.trust_remote_code})
    modules: list[torch.nn.Module] = [transformer]
    width = spec.hidden_size
    for module in spec.chain.before_truncation():  # sentence-transformers truncates in encode(): see encode()
        modules.append(module.load(spec.root, width))
        width = getattr(module, "out_features", width)
    # the model's prompts, so encode(prompt_name=...) finds them; no default prompt (encode() applies none unasked)
    model = SentenceTransformer(modules=modules, device=device, prompts=dict(spec.prompts) or None)
    model.eval()
    return Reference(model, spec)


def _check_native(spec: ModelSpec, model_kwargs: dict) -> None:
    """A checkpoint loaded with its family's native class instead of its own code must map every weight."""
    from transformers import AutoModel

    from .native import check_weights_map

    _, info = AutoModel.from_pretrained(str(spec.native_path), output_loading_info=True, **model_kwargs)
    check_weights_map(info, spec.path, spec.model_type)
