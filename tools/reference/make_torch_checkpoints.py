#!/usr/bin/env python3
"""torch.save checkpoints and hostile variants for `drtune convert` (src/io/torchzip.c, tests/reward_convert.c).

Writes tests/fixtures/torch/:
  state.pt            torch.save({"state_dict": OrderedDict(...), "epoch": 3, "note": "..."}): F32, F16, BF16, a
                      transposed (non-contiguous) view, a slice with a storage offset, two views of one storage, an
                      nn.Parameter, a 0-d tensor, an int64 buffer (position_ids); only "state_dict" converts
  nested.pt           torch.save of nested dicts and a list (names "enc.layers.0.w", ...), an int key, an empty
                      tensor and non-tensor leaves
  state_ref.safetensors, nested_ref.safetensors   the expected output: every tensor .contiguous(), int64 as int32
  hps_like.pt         {"state_dict": the open_clip state dict of tests/fixtures/models/reward_oc_gelu, "epoch": 1}
  aesthetic_like.pth  the state dict of tests/fixtures/models/reward_aesthetic (as the LAION .pth)
                      (both must convert to exactly those models' safetensors files)
  state_zip64.pt      state.pt rewritten with every ZIP64 record (sizes and offsets in ZIP64 extra fields, the ZIP64
                      end-of-directory record and locator), as torch.save writes files over 4 GiB (the HPS file)
  hostile_*.pt        files that must be refused (exit 2, one line), each named for what it attempts:
    global_os_system  a pickled object whose __reduce__ is os.system (torch.save of it)
    global_eval       builtins.eval("...")
    reduce_storage    REDUCE calling torch.FloatStorage
    cycle             a list that contains itself
    deep              lists nested 200 deep
    memo_undefined    BINGET of a memo entry never set
    huge_size         a tensor of 2^40 elements on a 4-element storage
    offset_outside    a storage offset past the storage's end
    storage_short     a storage claiming more elements than its data entry holds
    int64_range       an int64 value that does not fit int32
    truncated         the first half of state.pt
    zip_bomb          data.pkl deflate-compressed (10 MB of zeros in a few KB)
    entries_bomb      an end-of-directory record claiming 65535 entries in a tiny directory
    not_zip           a bare pickle (the legacy non-zip torch format)
    crc               state.pt with one byte of a storage flipped

    tools/reference/.venv/bin/python tools/reference/make_torch_checkpoints.py
"""

import io
import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "torch")


def write_ref(path, tensors):
    """safetensors with F32 / F16 / BF16 / I32 tensors, sorted names (what drtune convert must write)."""
    codes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32"}
    header, blobs, off = {"__metadata__": {"generator": "tools/reference/make_torch_checkpoints.py",
                                           "version.torch": torch.__version__}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        if t.dtype == torch.int64:
            t = t.to(torch.int32)
        data = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def save(name, obj):
    path = os.path.join(OUT, name)
    torch.save(obj, path)
    return path


def zip_with_pickle(name, pkl, storages, compress=False):
    """A torch-style zip (archive/data.pkl, archive/data/<key>, archive/version) with a hand-made pickle."""
    path = os.path.join(OUT, name)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for k, v in storages.items():
            z.writestr(f"archive/data/{k}", v)
        z.writestr("archive/version", "3\n")
    return path


def tensor_pickle(storage_type, numel, offset, size, stride):
    """Protocol-2 pickle of {'w': _rebuild_tensor_v2(storage '0', offset, size, stride, False, OrderedDict())}."""
    def tup(vals):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) if -2**31 <= v < 2**31 else
                               b"\x8a\x08" + struct.pack("<q", v) for v in vals) + b"t"
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\n" + storage_type + b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
            + b"J" + struct.pack("<i", numel) + b"tQ"
            + b"J" + struct.pack("<i", offset) + tup(size) + tup(stride)
            + b"\x89ccollections\nOrderedDict\n)RtRs.")


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def to_zip64(src, dst):
    """Rewrites a stored zip with all sizes and offsets in ZIP64 form (what archives over 4 GiB need)."""
    zin = zipfile.ZipFile(src)
    out, central = bytearray(), bytearray()
    for info in zin.infolist():
        data = zin.read(info.filename)
        name = info.filename.encode()
        offset = len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, info.CRC, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), len(extra)) + name + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, info.CRC, 0xFFFFFFFF,
                               0xFFFFFFFF, len(name), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + name + cextra
    cd_off, n = len(out), len(zin.infolist())
    out += central
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_off)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(out)
    assert zipfile.ZipFile(dst).testzip() is None


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(2024)
    base = torch.randn(6, 5, generator=g)
    shared = torch.randn(10, generator=g)
    sd = OrderedDict()
    sd["w_f32"] = torch.randn(3, 4, generator=g)
    sd["w_f16"] = torch.randn(2, 3, generator=g).to(torch.float16)
    sd["w_bf16"] = torch.randn(4, 2, generator=g).to(torch.bfloat16)
    sd["w_transposed"] = base.t()                      # non-contiguous (strides (1, 5))
    sd["w_slice"] = base[2:5, 1:4]                     # storage offset 11, strides (5, 1)
    sd["shared_a"] = shared[:4]
    sd["shared_b"] = shared[3:].view(7)                # same storage, offset 3
    sd["param"] = torch.nn.Parameter(torch.randn(5, generator=g))
    sd["logit_scale"] = torch.tensor(4.6052)           # 0-d
    sd["position_ids"] = torch.arange(7).unsqueeze(0)  # int64
    sd["half_transposed"] = torch.randn(3, 2, generator=g).to(torch.float16).t()
    save("state.pt", {"state_dict": sd, "epoch": 3, "note": "trained"})
    write_ref(os.path.join(OUT, "state_ref.safetensors"), dict(sd))
    to_zip64(os.path.join(OUT, "state.pt"), os.path.join(OUT, "state_zip64.pt"))
    z64 = torch.load(os.path.join(OUT, "state_zip64.pt"), weights_only=True)["state_dict"]
    assert all(torch.equal(z64[k], sd[k]) for k in sd), "torch reads the ZIP64 rewrite differently"

    nested = {"enc": {"layers": [{"w": torch.randn(2, 2, generator=g)}, {"w": torch.randn(1, 3, generator=g)}],
                      "scale": 0.5},
              "head": OrderedDict([(0, torch.randn(3, generator=g).to(torch.bfloat16)), ("bias", torch.zeros(0))]),
              "name": "model", "steps": 100}
    save("nested.pt", nested)
    write_ref(os.path.join(OUT, "nested_ref.safetensors"),
              {"enc.layers.0.w": nested["enc"]["layers"][0]["w"], "enc.layers.1.w": nested["enc"]["layers"][1]["w"],
               "head.0": nested["head"][0], "head.bias": nested["head"]["bias"]})

    # the layouts of the real reward checkpoints, from the small reward models (tests/fixtures/models/reward_*):
    # HPS ({"state_dict": open_clip state dict}, float16 here) and the aesthetic MLP (a bare state dict)
    from safetensors.torch import load_file
    oc = load_file(os.path.join(ROOT, "tests/fixtures/models/reward_oc_gelu/open_clip_model.safetensors"))
    save("hps_like.pt", {"state_dict": OrderedDict(sorted(oc.items())), "epoch": 1})
    mlp = load_file(os.path.join(ROOT, "tests/fixtures/models/reward_aesthetic/model.safetensors"))
    save("aesthetic_like.pth", OrderedDict(sorted(mlp.items())))

    # hostile files
    save("hostile_global_os_system.pt", {"x": Evil(os.system, "echo pwned")})
    save("hostile_global_eval.pt", {"x": Evil(eval, "1+1")})
    zip_with_pickle("hostile_reduce_storage.pt",
                    b"\x80\x02}X\x01\x00\x00\x00xctorch\nFloatStorage\n(K\x04tRs.", {})
    cyc = []
    cyc.append(cyc)
    zip_with_pickle("hostile_cycle.pt", pickle.dumps({"x": cyc}, protocol=2), {})
    deep = []
    for _ in range(200):
        deep = [deep]
    zip_with_pickle("hostile_deep.pt", pickle.dumps({"x": deep}, protocol=2), {})
    zip_with_pickle("hostile_memo_undefined.pt", b"\x80\x02}X\x01\x00\x00\x00xh\x05s.", {})
    four = np.arange(4, dtype=np.float32).tobytes()
    zip_with_pickle("hostile_huge_size.pt", tensor_pickle(b"FloatStorage", 4, 0, [2**40], [1]), {"0": four})
    zip_with_pickle("hostile_offset_outside.pt", tensor_pickle(b"FloatStorage", 4, 4, [1], [1]), {"0": four})
    zip_with_pickle("hostile_storage_short.pt", tensor_pickle(b"FloatStorage", 100, 0, [100], [1]), {"0": four})
    zip_with_pickle("hostile_int64_range.pt", tensor_pickle(b"LongStorage", 1, 0, [1], [1]),
                    {"0": struct.pack("<q", 2**40)})
    with open(os.path.join(OUT, "state.pt"), "rb") as f:
        good = f.read()
    with open(os.path.join(OUT, "hostile_truncated.pt"), "wb") as f:
        f.write(good[:len(good) // 2])
    zip_with_pickle("hostile_zip_bomb.pt", b"\x80\x02}." + b"\x00" * 10_000_000, {}, compress=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}.")
    b = bytearray(buf.getvalue())
    eocd = b.rfind(b"PK\x05\x06")
    b[eocd + 8:eocd + 12] = struct.pack("<HH", 0xFFFE, 0xFFFE)
    with open(os.path.join(OUT, "hostile_entries_bomb.pt"), "wb") as f:
        f.write(bytes(b))
    with open(os.path.join(OUT, "hostile_not_zip.pt"), "wb") as f:
        pickle.dump({"x": list(range(20))}, f, protocol=2)
    crc = bytearray(good)
    at = crc.find(b"archive/data/0") if b"archive/data/0" in crc else crc.find(b"/data/0")
    # the first storage's data starts after its local header; flip a byte 100 bytes past the name
    crc[at + 100] ^= 0xFF
    with open(os.path.join(OUT, "hostile_crc.pt"), "wb") as f:
        f.write(bytes(crc))
    for n in sorted(os.listdir(OUT)):
        print(f"  {n:40s} {os.path.getsize(os.path.join(OUT, n)):8d} bytes")


if __name__ == "__main__":
    main()
