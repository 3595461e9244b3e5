"""The export stage, in the order it runs (:mod:`.pipeline` drives it):

resolve (:mod:`.spec`, :mod:`.architectures`) -> wrap (:mod:`.wrapper`, :mod:`.pooling`, :mod:`.ragged`) -> trace
(:mod:`.tracing`, :mod:`.pt2`, :mod:`.onnx_export`) -> check against eager sentence-transformers (:mod:`.reference`,
with :mod:`exporter.checks.parity`) -> render (:mod:`.triton_config`, :mod:`.text_models`) -> write
(:mod:`.repository`, :mod:`.metadata`).

Kept free of imports: the CLI reads the light constants (:mod:`.batching`, :mod:`.pooling`) without loading torch.
"""
