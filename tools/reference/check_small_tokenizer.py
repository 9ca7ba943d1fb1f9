"""Checks that transformers' CLIPTokenizer and drtune's C tokenizer give identical ids for the small model's
tokenizer folder on the scene captions (training and held-out), and that every caption word is one token.

    tools/reference/.venv/bin/python tools/reference/check_small_tokenizer.py [--model data/models/tiny] [--n 5000]

Runs build/drtune (or $DRTUNE_BIN): `drtune pretrain --captions N` for the captions and `drtune probe --component
tokenizer` for the C ids. Exit status 0 when every id agrees.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file
from transformers import CLIPTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="data/models/tiny")
    ap.add_argument("--n", type=int, default=5000, help="captions of each split")
    args = ap.parse_args()
    exe = os.environ.get("DRTUNE_BIN", "build/drtune")
    captions = subprocess.run([exe, "pretrain", "--captions", str(args.n)], check=True, capture_output=True,
                              text=True).stdout.splitlines()
    extra = ["", "a", "A Small RED circle  on the LEFT", "a red circle, a blue square!", "7 purple hexagons"]
    texts = captions + extra
    with tempfile.TemporaryDirectory() as tmp:
        txt, out = os.path.join(tmp, "prompts.txt"), os.path.join(tmp, "ids.safetensors")
        with open(txt, "w", encoding="utf-8") as f:
            f.write("\n".join(texts) + "\n")
        subprocess.run([exe, "probe", "--model", args.model, "--component", "tokenizer", "--inputs", txt, "--out",
                        out], check=True, capture_output=True)
        c_ids = load_file(out)["input_ids"]
    tok = CLIPTokenizer.from_pretrained(os.path.join(args.model, "tokenizer"))
    hf_ids = np.array(tok(texts, padding="max_length", max_length=77, truncation=True)["input_ids"], dtype=np.int32)
    same = (c_ids == hf_ids).all(axis=1)
    words = sorted({w for c in captions for w in c.split()})
    multi = [w for w in words if len(tok(w, add_special_tokens=False)["input_ids"]) != 1]
    print(f"vocabulary {len(tok)} tokens (bos {tok.bos_token_id}, eos {tok.eos_token_id}), {len(words)} caption "
          f"words, {len(multi)} of them more than one token {multi}")
    print(f"{int(same.sum())} of {len(same)} prompts ({len(captions)} captions + {len(extra)} others) give identical "
          f"ids in transformers {__import__('transformers').__version__} and drtune")
    for i in np.nonzero(~same)[0][:5]:
        print("  differs:", repr(texts[i]), c_ids[i][:12], hf_ids[i][:12])
    return 0 if same.all() and not multi else 1


if __name__ == "__main__":
    sys.exit(main())
