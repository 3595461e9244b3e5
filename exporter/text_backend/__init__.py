"""The Python-backend ``model.py`` of the ``<name>_tokenizer`` model, shipped as a file and copied into the repository."""
from pathlib import Path

TOKENIZER_MODEL_PY = Path(__file__).resolve().parent / "tokenizer_model.py"
