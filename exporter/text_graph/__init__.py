"""Text in, embeddings out inside one TorchScript graph: the model's own tokenizer reproduced exactly as scripted
code (tables derived from the ``tokenizers`` library at export time), in front of the ragged encoder.

- ``tables``: the tables, derived from a ``tokenizers.Tokenizer``; unsupported parts refused by name.
- ``wordpiece``: the scripted WordPiece tokenizer built from them.
- ``text_model``: the ``<name>_text`` module (tokenize every merged text, then encode as the ragged export does).
- ``check``: the tokenizer against the library over a hostile corpus (``tei-export check-tokenizer``).
"""
