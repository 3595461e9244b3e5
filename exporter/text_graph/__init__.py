"""Text in, embeddings out inside one TorchScript graph: the model's own tokenizer reproduced exactly as scripted
code (tables derived from the ``tokenizers`` library at export time), in front of the ragged encoder.

- ``families``: which tokenizers are reproduced (WordPiece, byte-level BPE), their tables and scripted modules.
- ``tables`` / ``wordpiece``: WordPiece tables (and what every family shares) and the scripted WordPiece tokenizer.
- ``bytelevel_tables`` / ``bytelevel``: byte-level BPE (RoBERTa, ModernBERT style).
- ``scripted``: what every scripted tokenizer does around its model (UTF-8, added tokens, truncation, specials).
- ``text_model``: the ``<name>_text`` module (tokenize every merged text, then encode as the ragged export does).
- ``corpus`` / ``check``: the hostile corpus and the comparison with the library (``tei-export check-tokenizer``).
"""
