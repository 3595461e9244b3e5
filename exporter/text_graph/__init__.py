"""Text in, embeddings out inside one TorchScript graph: the model's own tokenizer reproduced exactly as scripted
code (tables derived from the ``tokenizers`` library at export time), in front of the ragged encoder.

- ``families``: which tokenizers are reproduced (WordPiece, byte-level BPE, Unigram, SentencePiece BPE), their
  tables and scripted modules.
- ``tables`` / ``wordpiece``: WordPiece tables (and what every family shares) and the scripted WordPiece tokenizer.
- ``bytelevel_tables`` / ``bytelevel``: byte-level BPE (RoBERTa, ModernBERT style).
- ``unigram_tables`` / ``unigram`` / ``charsmap``: Unigram with its Precompiled normalizer (XLM-R, bge-m3 style).
- ``spbpe_tables`` / ``spbpe``: SentencePiece-style BPE with byte fallback (Gemma, EmbeddingGemma, Llama 2 style).
- ``scripted``: what every scripted tokenizer does around its model (UTF-8, added tokens, truncation, specials).
- ``text_model``: the ``<name>_text`` module (tokenize every merged text, then encode as the ragged export does).
- ``corpus`` / ``check``: the hostile corpus and the comparison with the library (``tei-export check-tokenizer``).
"""
