"""tei_export.json: what was exported and how, beside each model version, for clients, verify and humans."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import RepositoryError
from .batching import PADDED_TOKENS, RAGGED_TOKENS
from .repository import METADATA_FILE

TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class ExportMetadata:
    source: str  # hub id or folder given to `trace`; verify loads the eager reference from here
    source_path: str  # the local folder the weights came from
    revision: str | None
    model_type: str
    pooling: str
    normalize: bool
    max_seq_len: int
    hidden_size: int  # the width of one embedding row (the Dense output or --dims where the chain has them)
    input_names: list[str]  # what a client sends, in order (ragged: input_ids alone, one text per request)
    input_dtype: str  # "int64" or "int32"
    output_names: list[str]
    dtype: str  # compute precision inside the graph
    format: str  # "torchscript" or "pt2"
    device: str
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    # The prompt the text model(s) beside this export put before every text (trace --prompt-name NAME, else the
    # model's default_prompt_name); None: no text model, or no prompt. A query and a document model are two exports.
    text_prompt_name: str | None = None
    tokenizer_dir: str = TOKENIZER_DIR  # relative to the version folder
    versions: dict[str, str] = field(default_factory=dict)  # torch, transformers, sentence-transformers, tei-export
    parity: dict = field(default_factory=dict)
    # "padded" (requests merge when their lengths are equal) or "ragged" (any lengths merge; one text per request,
    # [1, L], and Triton passes the offsets_input batch input itself). Missing in exports made before ragged: padded.
    batching: str = "padded"
    offsets_input: str | None = None
    token_budget: int | None = None  # ragged: rows x padded length per encoder call
    # The export variant (padded, ragged, pt2; see export/variants.py) and what a client sends to it. Exports made
    # before variants were recorded get them from format and batching when read.
    variant: str = ""
    client: str = ""
    # The sentence-transformers modules after the Transformer, overrides applied (export/modules.py); exports made
    # before the chain was recorded get it from pooling and normalize.
    modules: list = field(default_factory=list)
    dims: int | None = None
    trust_remote_code: bool = False
    task: str | None = None  # the task adapter merged into the weights (export/adapters.py)

    def __post_init__(self):
        if not self.variant:
            variant = "pt2" if self.format == "pt2" else ("ragged" if self.batching == "ragged" else "padded")
            object.__setattr__(self, "variant", variant)
        if not self.client:
            object.__setattr__(self, "client", RAGGED_TOKENS if self.variant == "ragged" else PADDED_TOKENS)
        if not self.modules:
            chain = [{"kind": "Pooling", "mode": self.pooling}] + ([{"kind": "Normalize"}] if self.normalize else [])
            object.__setattr__(self, "modules", chain)

    def write(self, version_dir: Path) -> Path:
        path = version_dir / METADATA_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, version_dir: Path) -> "ExportMetadata":
        path = Path(version_dir) / METADATA_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RepositoryError(f"cannot read export metadata: {err}",
                                  fix="re-export the model with tei-export trace", where=str(path)) from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def library_versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    from .. import __version__

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence-transformers": sentence_transformers.__version__, "tei-export": __version__}
