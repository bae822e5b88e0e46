#!/usr/bin/python3
"""A cab.v1 client in Python for the cross-language integration test.

Generates the stubs from proto/ with grpc_tools.protoc at test time, builds PredictRequests from raw
fp32 inputs (converted to the wire dtype with numpy, independently of the C++ encoders), calls the
server, and writes each serialized response to the output directory for the C++ test to compare.
"""
import argparse
import json
import os
import sys

import numpy as np


def generate_stubs(proto_root, gen_dir):
    """Generates cab_pb2 / cab_pb2_grpc into gen_dir and puts gen_dir on the import path.

    grpc_tools.protoc first. Debian 12's python3-grpc-tools (1.14) bundles protoc 3.5, which rejects
    proto3 `optional` fields (cab.proto uses them), so when it fails the system protoc (3.21) with
    gRPC's Python plugin (both Debian packages the build already installs) generates the same files.
    """
    import subprocess
    from grpc_tools import protoc
    os.makedirs(gen_dir, exist_ok=True)
    proto = os.path.join(proto_root, "cab/v1/cab.proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto_root}", f"--python_out={gen_dir}",
                      f"--grpc_python_out={gen_dir}", proto])
    if rc != 0:
        print(f"grpc_tools.protoc failed with {rc}; using /usr/bin/protoc", file=sys.stderr)
        subprocess.run(["/usr/bin/protoc", f"-I{proto_root}", f"--python_out={gen_dir}",
                        f"--grpc_python_out={gen_dir}",
                        "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin", proto], check=True)
    sys.path.insert(0, gen_dir)


def wire_tensor(pb, values, dtype):
    t = pb.Tensor()
    if dtype == "fp16":
        t.dtype = pb.DTYPE_FP16
        t.data = values.astype("<f2").tobytes()
    else:
        t.dtype = pb.DTYPE_FP32
        t.data = values.astype("<f4").tobytes()
    t.shape.extend(values.shape)
    return t


def session_config(pb, q, k, meta):
    cfg = pb.SessionConfig(layers=1, heads=q.shape[1], kv_heads=k.shape[1], head_dim=q.shape[3],
                           block_size=meta["block_size"], batch=q.shape[0], format=pb.MASK_FORMAT_BSR,
                           dtype=pb.DTYPE_FP16 if meta["dtype"] == "fp16" else pb.DTYPE_FP32)
    cfg.params.policy = pb.MaskPolicy.Value(meta["policy"])
    cfg.params.sparsity = meta["sparsity"]
    cfg.params.graph_degree = meta["graph_degree"]
    return cfg


def chunk_request(pb, q, k, meta, start, end):
    chunk = pb.Chunk(layer=0, start=start, tokens=end - start)
    chunk.q.CopyFrom(wire_tensor(pb, np.ascontiguousarray(q[:, :, start:end]), meta["dtype"]))
    chunk.k.CopyFrom(wire_tensor(pb, np.ascontiguousarray(k[:, :, start:end]), meta["dtype"]))
    return pb.StreamRequest(chunk=chunk)


def hang_stream(pb, stub, q, k, meta):
    import time

    def requests():
        yield pb.StreamRequest(config=session_config(pb, q, k, meta))
        yield chunk_request(pb, q, k, meta, 0, q.shape[2] // 2)
        time.sleep(600)

    for resp in stub.Stream(requests(), timeout=600):
        if resp.WhichOneof("kind") == "ack":
            print("HANGING", flush=True)
            time.sleep(600)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--proto_root", required=True)
    ap.add_argument("--gen_dir", required=True)
    ap.add_argument("--input_dir", required=True)
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--hang_stream", action="store_true",
                    help="open a stream, send one chunk, then wait to be killed (a broken connection)")
    args = ap.parse_args()

    generate_stubs(args.proto_root, args.gen_dir)
    import grpc
    from cab.v1 import cab_pb2 as pb
    from cab.v1 import cab_pb2_grpc as pb_grpc

    with open(os.path.join(args.input_dir, "meta.json")) as f:
        meta = json.load(f)
    q = np.fromfile(os.path.join(args.input_dir, "q.f32"), dtype="<f4").reshape(meta["q_shape"])
    k = np.fromfile(os.path.join(args.input_dir, "k.f32"), dtype="<f4").reshape(meta["k_shape"])

    opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    channel = grpc.insecure_channel(args.server, options=opts)
    stub = pb_grpc.MaskPredictorStub(channel)

    if args.hang_stream:
        hang_stream(pb, stub, q, k, meta)
        return

    info = stub.Info(pb.InfoRequest(), timeout=30)
    with open(os.path.join(args.out_dir, "info.bin"), "wb") as f:
        f.write(info.SerializeToString())

    for name, fmt in (("bsr", pb.MASK_FORMAT_BSR), ("bitmap", pb.MASK_FORMAT_BITMAP), ("flex", pb.MASK_FORMAT_FLEX)):
        req = pb.PredictRequest(block_size=meta["block_size"], format=fmt)
        req.params.policy = pb.MaskPolicy.Value(meta["policy"])
        req.params.sparsity = meta["sparsity"]
        req.params.graph_degree = meta["graph_degree"]
        req.q.CopyFrom(wire_tensor(pb, q, meta["dtype"]))
        req.k.CopyFrom(wire_tensor(pb, k, meta["dtype"]))
        resp = stub.Predict(req, timeout=60)
        with open(os.path.join(args.out_dir, f"predict_{name}.bin"), "wb") as f:
            f.write(resp.SerializeToString())

    # One stream: config, the tokens in two chunks, one query.
    n = q.shape[2]
    half = n // 2

    def requests():
        yield pb.StreamRequest(config=session_config(pb, q, k, meta))
        for start, end in ((0, half), (half, n)):
            yield chunk_request(pb, q, k, meta, start, end)
        yield pb.StreamRequest(query=pb.MaskQuery(layer=0, request_id=77))

    for resp in stub.Stream(requests(), timeout=60):
        if resp.WhichOneof("kind") == "mask":
            with open(os.path.join(args.out_dir, "stream_bsr.bin"), "wb") as f:
                f.write(resp.SerializeToString())
    print("python client: done")


if __name__ == "__main__":
    main()
