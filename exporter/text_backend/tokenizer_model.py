"""Triton Python-backend model: UTF-8 text in, the token model's inputs out (written by tei-export).

Self-contained on purpose (numpy, json, triton_python_backend_utils, tokenizers): it runs inside Triton's Python
stub, where the exporter package is not installed. Settings come from ``text_settings.json`` beside this file:
max_seq_len, length buckets, pad id/side, output names and dtypes, and the sentence-transformers prompts.
A request's texts are truncated to max_seq_len and padded to the smallest bucket holding its longest text, so the
dynamic batcher of the token model can merge requests of equal bucket.

With a ragged token model (settings ``token_model``) this is the text model itself (``<name>_text``): a ragged model
takes one text per request, so each text is tokenized unpadded and sent to it as a request of its own ``[1, L]``
(business logic scripting, BLS), and the rows come back in the request's order. Triton then merges the texts of
all requests whatever their lengths, and a request of N texts still gets N rows.
"""
import asyncio
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

_NUMPY = {"TYPE_INT64": np.int64, "TYPE_INT32": np.int32}


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(here, "text_settings.json"), encoding="utf-8") as f:
            settings = json.load(f)
        try:
            import tokenizers
        except ImportError:
            raise RuntimeError(
                "the text model needs the 'tokenizers' package in Triton's Python, which this server lacks: run "
                "'pip install tokenizers==%s' in the container (or serve a packed environment via "
                "EXECUTION_ENV_PATH), then reload the model" % settings.get("tokenizers_version", "")) from None
        self.tokenizer = tokenizers.Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.max_seq_len = int(settings["max_seq_len"])
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_len)
        self.buckets = sorted(int(b) for b in settings["buckets"])
        self.pad_id = int(settings["pad_id"])
        self.left = settings.get("padding_side", "right") == "left"
        config = json.loads(args["model_config"])
        self.token_model = settings.get("token_model")
        # Token outputs (input_ids, ...) for the padded token model; the embedding as received from a ragged one.
        self.outputs = [(o["name"], _NUMPY.get(o["data_type"])) for o in config["output"]]
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        prompt_name = params.get("PROMPT_NAME", settings.get("default_prompt_name") or "")
        prompts = settings.get("prompts") or {}
        if prompt_name and prompt_name not in prompts:
            raise RuntimeError("PROMPT_NAME '%s' is not one of the model's prompts %s" % (prompt_name, sorted(prompts)))
        self.prompt = prompts.get(prompt_name, "") if prompt_name else ""

    def _length(self, longest):
        for size in self.buckets:
            if longest <= size <= self.max_seq_len:
                return size
        return max(longest, min(self.max_seq_len, max(self.buckets)))

    def _texts(self, request):
        """(the request's texts with the prompt, None), or (None, an error response naming a non-UTF-8 element)."""
        raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
        texts = []
        for i, value in enumerate(raw):
            if isinstance(value, str):
                texts.append(self.prompt + value)
                continue
            try:
                texts.append(self.prompt + bytes(value).decode("utf-8"))
            except UnicodeDecodeError as err:
                return None, pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "input 'text' element %d is not valid UTF-8 (%s); send text encoded as UTF-8" % (i, err)))
        return texts, None

    def _one(self, request):
        texts, error = self._texts(request)
        if error is not None:
            return error
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        length = self._length(max(len(e.ids) for e in encodings))
        tensors = []
        for name, dtype in self.outputs:
            out = np.full((len(texts), length), self.pad_id if name == "input_ids" else 0, dtype=dtype)
            for row, e in enumerate(encodings):
                if name == "input_ids":
                    values = e.ids
                elif name == "attention_mask":
                    values = [1] * len(e.ids)
                else:
                    values = e.type_ids
                if self.left:
                    out[row, length - len(values):] = values
                else:
                    out[row, :len(values)] = values
            tensors.append(pb_utils.Tensor(name, out))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    async def _embed(self, request):
        """One request's texts through the ragged token model, one BLS request per text, rows in text order."""
        texts, error = self._texts(request)
        if error is not None:
            return error
        model = self.token_model
        dtype = _NUMPY[model["data_type"]]
        calls = [pb_utils.InferenceRequest(
            model_name=model["name"], requested_output_names=[model["output"]],
            inputs=[pb_utils.Tensor(model["input"], np.asarray([e.ids], dtype=dtype))]).async_exec()
            for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]
        rows = []
        for i, response in enumerate(await asyncio.gather(*calls)):
            if response.has_error():
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "model '%s' failed on text %d: %s" % (model["name"], i, response.error().message())))
            rows.append(pb_utils.get_output_tensor_by_name(response, model["output"]).as_numpy())
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.outputs[0][0], np.concatenate(rows))])

    async def _execute_ragged(self, requests):
        async def answer(request):
            try:
                return await self._embed(request)
            except Exception as err:  # one bad request never takes the others down
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "text model failed: %s: %s" % (type(err).__name__, err)))

        # Every text of every request is in flight at once, for the token model's batcher to merge.
        return list(await asyncio.gather(*(answer(r) for r in requests)))

    def execute(self, requests):
        if self.token_model:
            # A coroutine: the Python backend runs it to completion, so the BLS calls can be awaited together.
            return self._execute_ragged(requests)
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as err:  # one bad request never takes the others down
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "tokenizer failed: %s: %s" % (type(err).__name__, err))))
        return responses
