#!/usr/bin/env python3
"""Computes the test vectors in this folder from the written specification alone (the doc
comments of `Plan::id`, `Batch::message`, `PlansAcknowledged::attestation_message` and the
`instruction` module), independently of the Rust code that the vectors then check.

Run: python3 schema/tests/vectors/generate.py [OUT_DIR] (default: the folder of this script).
ops/test regenerates them into a temporary folder and fails if they differ.
"""
import hashlib
import json
import os
import struct
import sys

HERE = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

G = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
G2 = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
G3 = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"


class Transcript:
    def __init__(self, tag):
        t = hashlib.sha256(tag.encode()).digest()
        self.data = t + t

    def append(self, label, value):
        self.data += bytes([len(label)]) + label.encode() + struct.pack("<Q", len(value)) + value

    def finish(self):
        return hashlib.sha256(self.data).hexdigest()


def plan_id(plan):
    t = Transcript("serai-processor/plan-id/v2")
    t.append("key", bytes.fromhex(plan["key"]))
    t.append("inputs", struct.pack("<Q", len(plan["inputs"])))
    for i in plan["inputs"]:
        t.append("input", bytes.fromhex(i["txid"]) + struct.pack("<I", i["vout"]))
    t.append("payments", struct.pack("<Q", len(plan["payments"])))
    for p in plan["payments"]:
        t.append("address", bytes.fromhex(p["script"]))
        if p["data"] is None:
            t.append("no-data", b"")
        else:
            t.append("data", bytes.fromhex(p["data"]))
        t.append("amount", struct.pack("<Q", p["amount"]))
    if plan["change"] is None:
        t.append("no-change", b"")
    else:
        t.append("change", bytes.fromhex(plan["change"]))
    t.append("fee_rate", struct.pack("<Q", plan["fee_rate"]))
    if plan.get("replaces") is not None:
        t.append("replaces", bytes.fromhex(plan["replaces"]["plan"]))
        t.append("replaced_fee_rate", struct.pack("<Q", plan["replaces"]["fee_rate"]))
    return t.finish()


def attestation_message(network, key, block, plans):
    t = Transcript("serai-processor/plans-acknowledged/v1")
    t.append("network", bytes([network]))
    t.append("key", bytes.fromhex(key))
    t.append("block", struct.pack("<Q", block))
    t.append("plans", struct.pack("<Q", len(plans)))
    for p in plans:
        t.append("plan", bytes.fromhex(p))
    return t.finish()


def batch_message(batch):
    domain = b"serai-processor/batch/v1"
    out = bytes([len(domain)]) + domain
    out += bytes([batch["network"]]) + struct.pack("<I", batch["id"]) + bytes.fromhex(batch["block"])
    out += struct.pack("<I", len(batch["instructions"]))
    for i in batch["instructions"]:
        out += b"\x00" + bytes.fromhex(i["to"]) + struct.pack("<Q", i["amount"])
    return out.hex()


# secp256k1, for the key derivation vectors (schema/src/taproot.rs).
SECP_P = 2**256 - 2**32 - 977
SECP_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP_G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
          0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)


def point_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % SECP_P == 0:
        return None
    if a == b:
        lam = 3 * a[0] * a[0] * pow(2 * a[1], SECP_P - 2, SECP_P) % SECP_P
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], SECP_P - 2, SECP_P) % SECP_P
    x = (lam * lam - a[0] - b[0]) % SECP_P
    return (x, (lam * (a[0] - x) - a[1]) % SECP_P)


def point_mul(k, point=SECP_G):
    result = None
    while k:
        if k & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        k >>= 1
    return result


def lift_x(x):
    y = pow((x ** 3 + 7) % SECP_P, (SECP_P + 1) // 4, SECP_P)
    return (x, y if y % 2 == 0 else SECP_P - y)


def tagged(tag, data):
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + data).digest()


def derive(group_hex, kind):
    group_x = int(group_hex[2:], 16)
    key = lift_x(group_x)
    if kind != "external":
        offset = int.from_bytes(tagged("serai-processor/key-offset/v1", kind.encode()), "big")
        key = point_add(key, point_mul(offset))
    internal = key[0]
    tweak = int.from_bytes(tagged("TapTweak", internal.to_bytes(32, "big")), "big")
    output = point_add(lift_x(internal), point_mul(tweak))
    return "5120" + output[0].to_bytes(32, "big").hex()


def compressed(point):
    return ("02" if point[1] % 2 == 0 else "03") + point[0].to_bytes(32, "big").hex()


keys = []
for name, scalar in [("generator", 1), ("three", 3), ("negated generator: odd y, same x", SECP_N - 1), ("seven", 7), ("a large scalar", SECP_N - 5)]:
    group = compressed(point_mul(scalar))
    keys.append({"name": name, "group": group,
                 "external": derive(group, "external"),
                 "branch": derive(group, "branch"),
                 "change": derive(group, "change")})


P2WPKH = "0014" + "11" * 20
P2TR = "5120" + "22" * 32
P2PKH = "76a914" + "33" * 20 + "88ac"
P2SH = "a914" + "44" * 20 + "87"
P2WSH = "0020" + "55" * 32

plans = [
    {"name": "empty plan, no change", "key": G, "inputs": [], "payments": [], "change": None,
     "fee_rate": 0},
    {
        "name": "one input, one payment, change",
        "key": G,
        "inputs": [{"txid": "aa" * 32, "vout": 0, "kind": "external", "amount": 100000}],
        "payments": [{"script": P2WPKH, "data": None, "amount": 50000}],
        "change": G,
        "fee_rate": 10,
    },
    {
        "name": "payment with empty data differs from no data",
        "key": G,
        "inputs": [{"txid": "aa" * 32, "vout": 0, "kind": "external", "amount": 100000}],
        "payments": [{"script": P2WPKH, "data": "", "amount": 50000}],
        "change": G,
        "fee_rate": 10,
    },
    {
        "name": "branch and change inputs, every address type, data, other change key",
        "key": G2,
        "inputs": [
            {"txid": "01" * 32, "vout": 7, "kind": "branch", "amount": 2500000},
            {"txid": "02" * 32, "vout": 4294967295, "kind": "change", "amount": 10000},
        ],
        "payments": [
            {"script": P2TR, "data": "deadbeef", "amount": 1000000},
            {"script": P2PKH, "data": None, "amount": 20000},
            {"script": P2SH, "data": None, "amount": 30000},
            {"script": P2WSH, "data": "00", "amount": 2100000000000000},
        ],
        "change": G3,
        "fee_rate": 18446744073709551615,
    },
]
for p in plans:
    p["id"] = plan_id(p)
# A replacement: the second plan at a higher fee rate, naming it.
replacement = {key: value for key, value in plans[1].items() if key != "id"}
replacement.update({"name": "a replacement of the second plan at 15 sat/vB", "fee_rate": 15,
                    "replaces": {"plan": plans[1]["id"], "fee_rate": 10}})
replacement["id"] = plan_id(replacement)
plans.append(replacement)

batches = [
    {"name": "empty batch", "network": 1, "id": 0, "block": "00" * 32, "instructions": []},
    {
        "name": "two transfers",
        "network": 1,
        "id": 258,
        "block": "0f" * 32,
        "instructions": [
            {"to": "ab" * 32, "amount": 123456789},
            {"to": "cd" * 32, "amount": 10000},
        ],
    },
]
for b in batches:
    b["message"] = batch_message(b)

attestations = [
    {"name": "no plans", "network": 1, "key": G, "block": 0, "plans": []},
    {"name": "two plans", "network": 1, "key": G2, "block": 77, "plans": [plans[1]["id"], plans[3]["id"]]},
]
for a in attestations:
    a["message"] = attestation_message(a["network"], a["key"], a["block"], a["plans"])

instructions = [
    {"name": "transfer", "origin": None, "to": "ab" * 32, "encoding": "0100" + "ab" * 32},
    {"name": "refundable p2wpkh", "origin": P2WPKH, "to": "01" * 32,
     "encoding": "0101" + "16" + P2WPKH + "00" + "01" * 32},
    {"name": "refundable p2tr", "origin": P2TR, "to": "02" * 32,
     "encoding": "0101" + "22" + P2TR + "00" + "02" * 32},
]

for name, data in [("plan_ids.json", plans), ("batch_messages.json", batches),
                   ("attestations.json", attestations), ("in_instructions.json", instructions),
                   ("taproot_keys.json", keys)]:
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
