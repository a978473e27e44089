"""The standard workloads of `affectbench bench` on the two peer engines, for a
side-by-side run in one session (benches/peers/run_peers.sh drives it).

    python peers.py ENGINE GGUF [--threads 2] [--repeats 5] [--workload FILE]

ENGINE is llamacpp (llama-cpp-python, the same GGUF) or transformers (fp32 weights
dequantised from the same GGUF). Prints one JSON object with the fields `bench --json`
prints: prefill_tok_s (256 tokens), decode_tok_s (64 tokens, one sequence, greedy),
batch32_decode_tok_s (32 sampled sequences; transformers only: llama-cpp-python's API
decodes one sequence), questionnaire_items_s (best variant) with every variant measured,
and peak_rss_bytes. Medians of --repeats runs after a warm-up, as in affectbench.
"""
import argparse
import copy
import json
import math
import os
import resource
import statistics
import time

# The same text affectbench's bench uses for its 256-token prompt.
PROMPT_TEXT = "The quick brown fox jumps over the lazy dog while the committee reviews the annual report on regional water supplies. "


def median_seconds(repeats, fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def llamacpp(args, work):
    from llama_cpp import Llama
    import numpy as np

    llm = Llama(model_path=args.gguf, n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads, n_batch=512, logits_all=True, verbose=False)
    enc = lambda t, special=False: llm.tokenize(t.encode(), add_bos=special, special=False)
    prompt = (enc(PROMPT_TEXT) * 40)[:256]

    def prefill():
        llm.reset()
        llm.eval(prompt)

    def decode():
        llm.reset()
        llm.eval(prompt[:32])
        for _ in range(64):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])

    prefix = enc(work["prefix"], True)
    items = [enc(i) for i in work["items"]]
    options = [enc(" " + o)[0] for o in work["options"]]

    def answer_probs():
        row = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        row = row - row.max()
        p = np.exp(row[options])
        return p / p.sum()

    def naive():
        for it in items:
            llm.reset()
            llm.eval(prefix + it)
            answer_probs()

    def prefix_reuse():
        llm.reset()
        llm.eval(prefix)
        state = llm.save_state()
        for it in items:
            llm.load_state(state)
            llm.eval(it)
            answer_probs()

    out = {"engine": "llama-cpp-python " + __import__("llama_cpp").__version__}
    out["prefill_tok_s"] = 256 / median_seconds(args.repeats, prefill)
    out["decode_tok_s"] = 64 / median_seconds(args.repeats, decode)
    out["batch32_decode_tok_s"] = None
    variants = {"naive": naive, "prefix_reuse": prefix_reuse}
    out["questionnaire"] = {k: len(items) / median_seconds(args.repeats, f) for k, f in variants.items()}
    out["questionnaire_items_s"] = max(out["questionnaire"].values())
    out["peak_rss_bytes"] = peak_rss()
    return out


def transformers_engine(args, work):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    d, f = os.path.dirname(args.gguf), os.path.basename(args.gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    enc = lambda t: tok(t, add_special_tokens=False).input_ids
    prompt = torch.tensor([(enc(PROMPT_TEXT) * 40)[:256]])
    prefix = tok(work["prefix"]).input_ids
    items = [enc(i) for i in work["items"]]
    options = [enc(" " + o)[0] for o in work["options"]]
    out = {"engine": f"transformers {transformers.__version__} / torch {torch.__version__}, fp32"}

    with torch.inference_mode():
        out["prefill_tok_s"] = 256 / median_seconds(args.repeats, lambda: model(prompt, logits_to_keep=1))

        def decode():
            o = model(prompt[:, :32], use_cache=True, logits_to_keep=1)
            past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
            for _ in range(64):
                o = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)

        out["decode_tok_s"] = 64 / median_seconds(args.repeats, decode)

        def batch32():
            model.generate(prompt[:, :32].repeat(32, 1), attention_mask=torch.ones(32, 32, dtype=torch.long), do_sample=True, temperature=1.0,
                           max_new_tokens=64, min_new_tokens=64, pad_token_id=tok.eos_token_id)

        out["batch32_decode_tok_s"] = 32 * 64 / median_seconds(max(1, args.repeats // 2), batch32)

        def probs(logits):
            return torch.softmax(logits[options].double(), 0)

        def naive():
            for it in items:
                probs(model(torch.tensor([prefix + it]), logits_to_keep=1).logits[0, -1])

        def kv_reuse():
            o = model(torch.tensor([prefix]), use_cache=True, logits_to_keep=1)
            for it in items:
                past = copy.deepcopy(o.past_key_values)
                probs(model(torch.tensor([it]), past_key_values=past, use_cache=True, logits_to_keep=1).logits[0, -1])

        def batched():
            # Prefix once, then every item in one right-padded batch after it; logits at
            # each item's own last token.
            o = model(torch.tensor([prefix]), use_cache=True, logits_to_keep=1)
            past = o.past_key_values
            past.batch_repeat_interleave(len(items))
            width = max(len(i) for i in items)
            ids = torch.tensor([i + [tok.eos_token_id or 0] * (width - len(i)) for i in items])
            mask = torch.tensor([[1] * (len(prefix) + len(i)) + [0] * (width - len(i)) for i in items])
            logits = model(ids, past_key_values=past, attention_mask=mask, use_cache=True).logits
            for r, i in enumerate(items):
                probs(logits[r, len(i) - 1])

        variants = {"naive": naive, "kv_reuse": kv_reuse, "batched_after_prefix": batched}
        out["questionnaire"] = {k: len(items) / median_seconds(args.repeats, f) for k, f in variants.items()}
    out["questionnaire_items_s"] = max(out["questionnaire"].values())
    out["peak_rss_bytes"] = peak_rss()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", choices=["llamacpp", "transformers"])
    p.add_argument("gguf")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workload", default=os.path.join(os.path.dirname(__file__), "..", "workloads", "questionnaire.json"))
    args = p.parse_args()
    work = json.load(open(args.workload))
    fn = llamacpp if args.engine == "llamacpp" else transformers_engine
    print(json.dumps(fn(args, work)))


if __name__ == "__main__":
    main()
