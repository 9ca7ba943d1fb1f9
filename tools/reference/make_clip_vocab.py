#!/usr/bin/env python3
# make_clip_vocab.py: rebuilds data/tokenizer/clip/{vocab.json,merges.txt} from the CLIP BPE merge list
# (bpe_simple_vocab_16e6.txt.gz, shipped in the open_clip_torch wheel) exactly as CLIPTokenizer expects them.
#
# usage: tools/reference/.venv/bin/pip download open_clip_torch --no-deps -d /tmp/oc
#        tools/reference/.venv/bin/python tools/reference/make_clip_vocab.py /tmp/oc/open_clip_torch-*.whl
import gzip
import hashlib
import json
import os
import sys
import zipfile

N_MERGES = 49152 - 256 - 2  # merges used by OpenAI CLIP: lines 1..48894 after the header


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_clip_vocab.py open_clip_torch-*.whl")
    with zipfile.ZipFile(sys.argv[1]) as whl:
        gz = whl.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    print("bpe_simple_vocab_16e6.txt.gz sha256", hashlib.sha256(gz).hexdigest())
    lines = gzip.decompress(gz).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:N_MERGES + 1]]
    assert len(merges) == N_MERGES and all(len(m) == 2 for m in merges)

    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "tokenizer", "clip")
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        f.write("".join(f"{a} {b}\n" for a, b in merges))
    print("wrote", len(vocab), "tokens and", len(merges), "merges to", os.path.normpath(out))


if __name__ == "__main__":
    main()
