"""Side-by-side peer measurement: Hugging Face transformers (fp32, weights dequantised
from the same GGUF) on the workloads of benches/forward.rs: prefill of a 256-token prompt
and 64-token single-sequence greedy decode, 2 threads. Prints tokens/s (medians).

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install transformers gguf torch accelerate
    /tmp/peers/bin/python benches/peers/transformers_forward.py "$(affectbench models path smollm2-135m-instruct)"
"""
import os
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
d, f = os.path.dirname(path), os.path.basename(path)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
text = "You sit in a quiet room and notice your breathing, slow and even. " * 40
ids = torch.tensor([tok(text).input_ids[:256]])

prefill = []
decode = []
with torch.inference_mode():
    for _ in range(5):
        t = time.perf_counter()
        model(ids, logits_to_keep=1)
        prefill.append(256 / (time.perf_counter() - t))
    for _ in range(3):
        out = model(ids[:, :32], use_cache=True, logits_to_keep=1)
        past, nxt = out.past_key_values, torch.tensor([[42]])
        t = time.perf_counter()
        for _ in range(64):
            out = model(nxt, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
        decode.append(64 / (time.perf_counter() - t))
print(f"transformers {torch.__version__}: prefill {statistics.median(prefill):.1f} tok/s, decode {statistics.median(decode):.1f} tok/s")
