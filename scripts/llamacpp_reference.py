"""llama.cpp's answers on the tiny GGUF models `tests/llamacpp_parity.rs` writes: for each
file, the logits after the test's token sequence and the greedy continuation, as the
JSON fixture tests/data/llamacpp_reference.json. Run through scripts/llamacpp_reference.sh.

    python scripts/llamacpp_reference.py target/tiny-gguf/*.gguf > tests/data/llamacpp_reference.json
"""
import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np
from llama_cpp import Llama

TOKENS = [5, 72, 101, 108, 108, 111, 256, 258, 44, 99, 3, 17, 200, 259]
GREEDY_STEPS = 8


def reference(path):
    llm = Llama(model_path=path, n_ctx=128, n_batch=64, n_threads=2, logits_all=True, verbose=False)
    llm.eval(TOKENS)
    last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    logits = last.tolist()
    greedy = []
    margins = []
    for _ in range(GREEDY_STEPS):
        t = int(np.argmax(last))
        top2 = np.sort(last)[-2:]
        greedy.append(t)
        margins.append(float(top2[1] - top2[0]))
        llm.eval([t])
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {"sha256": sha, "tokens": TOKENS, "last_logits": logits, "greedy": greedy, "greedy_margins": margins}


def main():
    models = {}
    for path in sys.argv[1:]:
        name = os.path.splitext(os.path.basename(path))[0]
        models[name] = reference(path)
    out = {"llama_cpp_python": llama_cpp.__version__, "models": models}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
