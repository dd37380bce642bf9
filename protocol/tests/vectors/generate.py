#!/usr/bin/env python3
"""Generate golden ISO 8583 test vectors with pyiso8583 (an independent
implementation, not this codebase).

Run from the repository root:

    pip install pyiso8583==4.0.1 && python3 protocol/tests/vectors/generate.py

Outputs (all next to this script unless noted):

    iso87.json        vectors for dialect `iso87`
    iso87-hex.json    the same messages encoded in dialect `iso87-hex`
    ../../../fuzz/corpus/decode_frame/<name>.bin
                      framed iso87 bytes, as seed inputs for the fuzzer

The spec dicts handed to pyiso8583 are derived from config/specs/*.toml, see
README.md for the mapping. Output is deterministic (fixed random seed).
"""

from __future__ import annotations

import copy
import json
import random
import string
import sys
import tomllib
from pathlib import Path

import iso8583
import iso8583.specs

PYISO8583_VERSION = "4.0.1"

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SPECS_DIR = REPO / "config" / "specs"
FUZZ_DIR = REPO / "fuzz" / "corpus" / "decode_frame"

SEED = 8583
DIALECTS = ("iso87", "iso87-hex")
TEXT_CLASSES = {"n", "a", "an", "ans", "ns", "z", "x+n"}


# ---------------------------------------------------------------------------
# Spec loading: TOML field table -> pyiso8583 spec dict
# ---------------------------------------------------------------------------


def load_dialect(name: str) -> dict:
    """Load a dialect TOML, resolving `base` for the field table."""
    with open(SPECS_DIR / f"{name}.toml", "rb") as f:
        doc = tomllib.load(f)
    fields: dict[str, dict] = {}
    if "base" in doc:
        fields.update(load_dialect(doc["base"])["fields"])
    fields.update(doc.get("fields", {}))
    doc["fields"] = fields
    return doc


def build_spec(dialect: dict) -> dict:
    msg = dialect["message"]
    if msg["mti_encoding"] != "ascii":
        raise SystemExit(f"unsupported mti_encoding {msg['mti_encoding']!r}")
    if msg["text_encoding"] != "ascii" or msg["length_encoding"] != "ascii":
        raise SystemExit("only ascii text/length encodings are supported")
    if dialect["frame"].get("header_length", 0) != 0:
        raise SystemExit("fixed message headers are not supported")

    if msg["bitmap_encoding"] == "binary":
        base = iso8583.specs.default
    elif msg["bitmap_encoding"] == "hex":
        base = iso8583.specs.default_ascii
    else:
        raise SystemExit(f"unsupported bitmap_encoding {msg['bitmap_encoding']!r}")

    binary_enc = msg["binary_encoding"]
    if binary_enc == "hex" and msg["length_counts"] != "wire":
        # pyiso8583 always counts what is on the wire for text-encoded fields.
        raise SystemExit("hex binary fields require length_counts = 'wire'")
    if binary_enc == "binary" and msg["length_counts"] != "value":
        raise SystemExit("binary fields require length_counts = 'value'")

    spec: dict = {
        "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0,
              "desc": "Message Header"},
        "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4,
              "desc": "Message Type"},
        "p": dict(base["p"]),
        "1": dict(base["1"]),
    }
    for num, fd in dialect["fields"].items():
        if int(num) in (1, 65):
            raise SystemExit(f"field {num} must not be in the field table")
        cls = fd["class"]
        kind = fd["kind"]
        size = fd["length"] if kind == "fixed" else fd["length_max"]
        if cls == "b":
            if binary_enc == "binary":
                data_enc = "b"
            elif binary_enc == "hex":
                data_enc = "ascii"  # value is an uppercase hex string
                size *= 2
            else:
                raise SystemExit(f"unsupported binary_encoding {binary_enc!r}")
        elif cls in TEXT_CLASSES:
            data_enc = "ascii"
        else:
            raise SystemExit(f"field {num}: unknown class {cls!r}")
        len_type = {"fixed": 0, "llvar": 2, "lllvar": 3}[kind]
        spec[str(int(num))] = {
            "data_enc": data_enc,
            "len_enc": "ascii",
            "len_type": len_type,
            "max_len": size,
            "desc": fd["name"],
        }
    return spec


def frame(dialect: dict, msg: bytes) -> bytes:
    hdr_kind = dialect["frame"]["length_header"]
    if hdr_kind == "binary2":
        hdr = len(msg).to_bytes(2, "big")
    elif hdr_kind == "ascii4":
        hdr = f"{len(msg):04d}".encode("ascii")
        assert len(hdr) == 4
    else:
        raise SystemExit(f"unsupported length_header {hdr_kind!r}")
    framed = hdr + msg
    assert len(framed) <= dialect["frame"]["frame_length_max"], len(framed)
    return framed


# ---------------------------------------------------------------------------
# Value validation against the field table (pyiso8583 does not check classes)
# ---------------------------------------------------------------------------

DIGITS = set(string.digits)
ALNUM = set(string.ascii_letters + string.digits)
PRINTABLE = {chr(c) for c in range(0x20, 0x7F)}
SPECIAL = PRINTABLE - ALNUM
HEXU = set("0123456789ABCDEF")


def validate(name: str, mti: str, fields: dict[str, str], table: dict) -> None:
    assert len(mti) == 4 and set(mti) <= DIGITS, (name, mti)
    for k, v in fields.items():
        fd = table[k]
        cls, kind = fd["class"], fd["kind"]
        where = f"{name}: DE{k}={v!r}"
        if cls == "b":
            assert set(v) <= HEXU and len(v) % 2 == 0, where
            n = len(v) // 2
        else:
            n = len(v)
            allowed = {
                "n": DIGITS,
                "a": set(string.ascii_letters),
                "an": ALNUM,
                "ans": PRINTABLE,
                "ns": DIGITS | SPECIAL,
                "z": DIGITS | {"="},
            }.get(cls)
            if cls == "x+n":
                assert v[:1] in ("C", "D") and set(v[1:]) <= DIGITS, where
            else:
                assert set(v) <= allowed, where
        if kind == "fixed":
            assert n == fd["length"], where
        else:
            assert n <= fd["length_max"], where


# ---------------------------------------------------------------------------
# EMV BER-TLV helpers
# ---------------------------------------------------------------------------


def tlv(tag: str, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value)
    n = len(value)
    if n < 0x80:
        ln = bytes([n])
    elif n < 0x100:
        ln = bytes([0x81, n])
    else:
        ln = bytes([0x82]) + n.to_bytes(2, "big")
    return bytes.fromhex(tag) + ln + value


def parse_tlv(data: bytes) -> list[tuple[str, bytes]]:
    """Strict BER-TLV parser used to check that DE55 values are well formed."""
    out = []
    i = 0
    while i < len(data):
        t0 = i
        first = data[i]
        i += 1
        if first & 0x1F == 0x1F:
            while True:
                b = data[i]
                i += 1
                if not b & 0x80:
                    break
        tag = data[t0:i].hex().upper()
        ln = data[i]
        i += 1
        if ln & 0x80:
            nb = ln & 0x7F
            assert nb in (1, 2), "unsupported BER length form"
            ln = int.from_bytes(data[i:i + nb], "big")
            i += nb
        val = data[i:i + ln]
        assert len(val) == ln, f"truncated TLV {tag}"
        i += ln
        if first & 0x20:  # constructed: parse the contents too
            parse_tlv(val)
        out.append((tag, val))
    assert i == len(data)
    return out


# ---------------------------------------------------------------------------
# Test data helpers
# ---------------------------------------------------------------------------


def luhn_complete(prefix: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch)
        if i % 2 == 0:  # these positions get doubled once a check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return prefix + str((10 - total % 10) % 10)


def luhn_ok(pan: str) -> bool:
    return luhn_complete(pan[:-1]) == pan


PAN_VISA = "4111111111111111"
PAN_MC = "5500005555555559"
PAN_AMEX = "378282246310005"
PAN_DISCOVER = "6011111111111117"
PAN_VISA_DEBIT = "4000056655665556"
PAN_VISA_13 = "4222222222222"
PAN_MAESTRO = "6759649826438453"
PAN_19 = luhn_complete("411111111111111111")
for _p in (PAN_VISA, PAN_MC, PAN_AMEX, PAN_DISCOVER, PAN_VISA_DEBIT, PAN_VISA_13,
           PAN_MAESTRO, PAN_19):
    assert luhn_ok(_p), _p
assert len(PAN_19) == 19

rng = random.Random(SEED)


def rhex(nbytes: int) -> str:
    return bytes(rng.getrandbits(8) for _ in range(nbytes)).hex().upper()


def stan() -> str:
    return f"{rng.randrange(1, 1_000_000):06d}"


def digits(n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def de43(name: str, city: str, state: str, country: str) -> str:
    v = name.ljust(23)[:23] + city.ljust(13)[:13] + state.ljust(2) + country.ljust(2)
    assert len(v) == 40
    return v


def de90(mti: str, stan_: str, dt: str, acq: str, fwd: str = "") -> str:
    v = mti + stan_ + dt + acq.zfill(11) + fwd.zfill(11)
    assert len(v) == 42
    return v


def amount(minor: int) -> str:
    return f"{minor:012d}"


def emv_arqc(amount12: str, currency: str, country: str, aid: str, txn_date: str,
             entry: str = "contact", extra: bytes = b"") -> str:
    """A typical authorisation-request ICC data set (ARQC)."""
    iad = ("06010A03A0B800" if aid.startswith("A000000003")
           else "0110A04001220000000000000000000000FF")
    cvm = "420300" if entry == "contact" else "1F0302"
    data = b"".join([
        tlv("9F26", rhex(8)),            # application cryptogram (ARQC)
        tlv("9F27", "80"),               # cryptogram information data: ARQC
        tlv("9F10", iad),                # issuer application data
        tlv("9F37", rhex(4)),            # unpredictable number
        tlv("9F36", f"{rng.randrange(1, 0xFFFF):04X}"),  # ATC
        tlv("95", "0000048000" if entry == "contact" else "0000000000"),  # TVR
        tlv("9A", txn_date),             # transaction date YYMMDD
        tlv("9C", "00"),                 # transaction type: purchase
        tlv("9F02", amount12),           # amount authorised
        tlv("5F2A", "0" + currency),     # transaction currency code
        tlv("82", "3900" if aid.startswith("A000000003") else "1980"),  # AIP
        tlv("9F1A", "0" + country),      # terminal country code
        tlv("9F34", cvm),                # CVM results
        tlv("9F33", "E0F8C8"),           # terminal capabilities
        tlv("9F35", "22"),               # terminal type
        tlv("84", aid),                  # dedicated file name (AID)
        tlv("9F03", "000000000000"),     # amount other
        tlv("5F34", "01"),               # PAN sequence number
    ]) + extra
    parse_tlv(data)
    return data.hex().upper()


def emv_arpc(script: bytes = b"") -> str:
    """Authorisation-response ICC data: issuer authentication data (+ scripts)."""
    data = tlv("91", rhex(8) + "3030") + script
    parse_tlv(data)
    return data.hex().upper()


def issuer_script(tag: str, commands: list[str]) -> bytes:
    body = tlv("9F18", rhex(4)) + b"".join(tlv("86", c) for c in commands)
    return tlv(tag, body)


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------

ACQ = "123456"        # DE32 acquiring institution id
FWD = "654321"        # DE33 forwarding institution id
RCV = "98765432"      # DE100 receiving institution id
TID = "TERM0001"
MID = "ACME0000001    "  # space padded to 15
MID2 = "MERCHANT0000042"
LOC = de43("ACME HARDWARE STORE #12", "SPRINGFIELD", "IL", "US")
LOC_DE = de43("BAECKEREI MUELLER", "BERLIN", "BE", "DE")
LOC_WEB = de43("EXAMPLE ONLINE SHOP", "SAN FRANCISCO", "CA", "US")

vectors: list[tuple[str, dict[str, str]]] = []


def add(name: str, mti: str, fields: dict[str, str]) -> dict[str, str]:
    assert name not in [n for n, _ in vectors], name
    msg = {"t": mti, **fields}
    vectors.append((name, msg))
    return msg


def response(req: dict[str, str], mti: str, keep: list[str], extra: dict[str, str]) -> dict[str, str]:
    out = {k: req[k] for k in keep if k in req}
    out.update(extra)
    return out


def rrn(dt: str) -> str:
    return "5326" + dt[4:8] + digits(4)  # 12 chars, julian-ish date + serial


RESP_KEEP = ["2", "3", "4", "7", "11", "12", "13", "18", "22", "23", "25", "32", "33",
             "37", "41", "42", "49"]

# --- 0100 / 0101 / 0110 authorisations -------------------------------------

dt = "1122143015"
amt = amount(12345)
req = visa_chip = add("0100-visa-chip-pin-emv-arqc", "0100", {
    "2": PAN_VISA, "3": "000000", "4": amt, "7": dt, "11": stan(), "12": "083015",
    "13": "1122", "14": "2512", "18": "5411", "22": "051", "23": "001", "25": "00",
    "32": ACQ, "35": PAN_VISA + "=25122011234567890000", "37": rrn(dt),
    "41": TID, "42": MID, "43": LOC, "49": "840", "52": rhex(8),
    "55": emv_arqc(amt, "840", "840", "A0000000031010", "251122"),
})
add("0101-repeat-visa-chip-pin-emv-arqc", "0101", {k: v for k, v in req.items() if k != "t"})
add("0110-approved-visa-chip-emv-arpc", "0110", response(req, "0110", RESP_KEEP, {
    "38": "A1B2C3", "39": "00", "55": emv_arpc(),
}))
add("0110-declined-05-do-not-honor", "0110", response(req, "0110", RESP_KEEP, {"39": "05"}))

dt = "1122143527"
amt = amount(250000)
req = mc_chip = add("0100-mastercard-chip-emv-proprietary-df01", "0100", {
    "2": PAN_MC, "3": "000000", "4": amt, "7": dt, "11": stan(), "12": "093527",
    "13": "1122", "14": "2709", "18": "5732", "22": "051", "23": "000", "25": "00",
    "32": ACQ, "33": FWD, "35": PAN_MC + "=27092011000000000000", "37": rrn(dt),
    "41": "POS00017", "42": MID2, "43": LOC, "49": "840",
    "55": emv_arqc(amt, "840", "840", "A0000000041010", "251122",
                   extra=tlv("DF01", "0102030405")),   # unknown proprietary tag
})
add("0110-declined-51-insufficient-funds", "0110", response(req, "0110", RESP_KEEP, {
    "39": "51", "44": "INSUFFICIENTFUNDS",
}))

dt = "1122144001"
req = add("0100-amex-15-digit-pan-magstripe", "0100", {
    "2": PAN_AMEX, "3": "000000", "4": amount(8999), "7": dt, "11": stan(),
    "12": "094001", "13": "1122", "18": "5812", "22": "021", "25": "00", "32": ACQ,
    "35": PAN_AMEX + "=2512101123456789", "37": rrn(dt), "41": TID, "42": MID,
    "43": LOC, "49": "840",
})
add("0110-declined-61-exceeds-withdrawal-limit", "0110", response(req, "0110", RESP_KEEP, {
    "39": "61",
}))

dt = "1122144510"
req = visa13 = add("0100-visa-13-digit-pan-manual-entry", "0100", {
    "2": PAN_VISA_13, "3": "000000", "4": amount(1999), "7": dt, "11": stan(),
    "12": "094510", "13": "1122", "14": "2612", "18": "5999", "22": "012", "25": "08",
    "32": ACQ, "37": rrn(dt), "41": TID, "42": MID, "43": LOC, "49": "840",
})
add("0110-approved-visa-13-digit-pan", "0110", response(req, "0110", RESP_KEEP, {
    "38": "004711", "39": "00",
}))

dt = "1122145033"
add("0100-19-digit-pan-and-de32-at-llvar-max", "0100", {
    "2": PAN_19, "3": "000000", "4": amount(4200), "7": dt, "11": stan(),
    "12": "095033", "13": "1122", "14": "2811", "18": "5411", "22": "901", "25": "00",
    "32": "12345678901", "33": "10987654321", "37": rrn(dt), "41": TID, "42": MID,
    "43": LOC, "49": "840",
})

dt = "1122145502"
de48 = ("ECI05;CAVV=" + "A" * 28 + ";XID=" + rhex(20) + ";")
de48 += "".join(rng.choice(string.ascii_uppercase + string.digits + " -/.")
                for _ in range(999 - len(de48)))
assert len(de48) == 999
add("0100-ecommerce-discover-de48-lllvar-999", "0100", {
    "2": PAN_DISCOVER, "3": "000000", "4": amount(15900), "7": dt, "11": stan(),
    "12": "095502", "13": "1122", "14": "2703", "18": "5969", "22": "810", "25": "59",
    "32": ACQ, "37": rrn(dt), "41": "WEB00001", "42": MID2, "43": LOC_WEB,
    "48": de48, "49": "840",
})

dt = "1122150010"
track1 = f"B{PAN_VISA_DEBIT}^TEST/CARDHOLDER A^2512101000000000000000000000"
assert len(track1) <= 76
add("0100-visa-debit-track1-de45", "0100", {
    "3": "000000", "4": amount(7550), "7": dt, "11": stan(), "12": "100010",
    "13": "1122", "18": "5411", "22": "901", "25": "00", "32": ACQ, "37": rrn(dt),
    "41": TID, "42": MID, "43": LOC, "45": track1, "49": "840",
})

dt = "1122150544"
amt = amount(3250)
req = add("0100-maestro-contactless-eur-secondary-bitmap-de128", "0100", {
    "2": PAN_MAESTRO, "3": "000000", "4": amt, "7": dt, "11": stan(), "12": "160544",
    "13": "1122", "14": "2610", "18": "5462", "22": "071", "23": "002", "25": "00",
    "32": ACQ, "37": rrn(dt), "41": "BKR00003", "42": MID2, "43": LOC_DE, "49": "978",
    "55": emv_arqc(amt, "978", "276", "A0000000043060", "251122", entry="contactless"),
    "100": RCV, "128": rhex(8),
})
add("0110-approved-maestro-contactless-de128", "0110", response(req, "0110", RESP_KEEP, {
    "38": "Z9Y8X7", "39": "00", "100": RCV, "128": rhex(8),
}))

# Issuer scripts force DE55 over 127 bytes of TLV: long-form BER length 0x81.
script = issuer_script("72", [
    "841E000004" + rhex(4),                       # APPLICATION BLOCK + MAC
    "04DA9F580903" + rhex(8),                      # PUT DATA consecutive limit
    "04DA9F590903" + rhex(8),
    "8418000010" + rhex(8) + rhex(8),             # APPLICATION UNBLOCK-ish + MAC
    "04DA00CA0F" + "000000050000" + "0840" + rhex(5) + rhex(4),
    "04DA9F14" + "0903" + rhex(8) + rhex(8) + rhex(8) + rhex(16),
])
assert len(script) > 130
add("0110-approved-emv-issuer-script-long-form-length", "0110", response(
    visa_chip, "0110", RESP_KEEP, {"38": "A1B2C4", "39": "00", "55": emv_arpc(script)}))
assert b"\x72\x81" in bytes.fromhex(vectors[-1][1]["55"])


def max_de55() -> str:
    """Issuer response ICC data sized to exactly 255 bytes (the DE55 maximum)."""
    for pad in range(0, 255):
        s = issuer_script("71", ["8424000008" + rhex(8)]) + issuer_script(
            "72", ["04DA9F5800" + "00" * pad, "04DA9F59" + rhex(12)])
        data = bytes.fromhex(emv_arpc(s))
        if len(data) == 255:
            return data.hex().upper()
    raise AssertionError("could not size DE55 to 255 bytes")


add("0110-approved-de55-at-lllvar-max-255-bytes", "0110", response(
    mc_chip, "0110", RESP_KEEP, {"38": "MC0042", "39": "00", "55": max_de55()}))
assert len(vectors[-1][1]["55"]) == 510

add("0110-zero-length-de44-llvar", "0110", response(
    visa13, "0110", RESP_KEEP, {"38": "104455", "39": "00", "44": ""}))

# --- 0200 / 0201 / 0210 financial ------------------------------------------

dt = "1122160211"
amt = amount(4599)
req = add("0200-purchase-chip-pin-de64-mac", "0200", {
    "2": PAN_VISA, "3": "000000", "4": amt, "7": dt, "11": stan(), "12": "110211",
    "13": "1122", "14": "2512", "18": "5411", "22": "051", "23": "001", "25": "00",
    "32": ACQ, "35": PAN_VISA + "=25122011234567890000", "37": rrn(dt), "41": TID,
    "42": MID, "43": LOC, "49": "840", "52": rhex(8),
    "55": emv_arqc(amt, "840", "840", "A0000000031010", "251122"), "64": rhex(8),
})
purchase = req
add("0201-repeat-purchase-chip-pin", "0201", {k: v for k, v in req.items() if k != "t"})
add("0210-approved-purchase-de64-mac", "0210", response(req, "0210", RESP_KEEP, {
    "38": "789012", "39": "00", "55": emv_arpc(), "64": rhex(8),
}))

dt = "1122160945"
req = add("0200-purchase-with-cashback-de54", "0200", {
    "2": PAN_VISA_DEBIT, "3": "090000", "4": amount(7000), "7": dt, "11": stan(),
    "12": "110945", "13": "1122", "18": "5411", "22": "021", "25": "00", "32": ACQ,
    "35": PAN_VISA_DEBIT + "=2611101000000000", "37": rrn(dt), "41": TID, "42": MID,
    "43": LOC, "49": "840", "52": rhex(8), "54": "0040840D000000002000",
})
add("0210-declined-51-cashback", "0210", response(req, "0210", RESP_KEEP, {"39": "51"}))

dt = "1122161502"
req = add("0200-balance-inquiry-atm", "0200", {
    "2": PAN_MC, "3": "301000", "4": amount(0), "7": dt, "11": stan(), "12": "111502",
    "13": "1122", "18": "6011", "22": "021", "25": "02", "32": ACQ,
    "35": PAN_MC + "=27092011000000000000", "37": rrn(dt), "41": "ATM00451",
    "42": "BANKATM00000451", "43": de43("FIRST BANK ATM 451", "CHICAGO", "IL", "US"),
    "49": "840", "52": rhex(8),
})
add("0210-balance-inquiry-de54-balances", "0210", response(req, "0210", RESP_KEEP, {
    "38": "BAL001", "39": "00",
    "54": "1001840C0000001234561002840C000000100000",
}))

dt = "1122162020"
req = add("0200-transfer-de102-de103-de100", "0200", {
    "2": PAN_19, "3": "401020", "4": amount(50000), "7": dt, "11": stan(),
    "12": "112020", "13": "1122", "18": "6011", "22": "021", "25": "02", "32": ACQ,
    "37": rrn(dt), "41": "ATM00451", "42": "BANKATM00000451",
    "43": de43("FIRST BANK ATM 451", "CHICAGO", "IL", "US"), "49": "840",
    "52": rhex(8), "100": RCV, "102": "0012345678901234567890123456",
    "103": "DE89370400440532013000", "128": rhex(8),
})
add("0210-approved-transfer-de102-de103", "0210", response(
    req, "0210", RESP_KEEP + ["100", "102", "103"], {"38": "TRF777", "39": "00",
                                                   "128": rhex(8)}))

dt = "1122162533"
atm = add("0200-atm-withdrawal-fees-de28-de30-x-n", "0200", {
    "2": PAN_VISA, "3": "011000", "4": amount(20000), "7": dt, "11": stan(),
    "12": "112533", "13": "1122", "18": "6011", "22": "021", "25": "02",
    "28": "C00000150", "30": "D00000075", "32": ACQ,
    "35": PAN_VISA + "=25121011234567890000", "37": rrn(dt), "41": "ATM00451",
    "42": "BANKATM00000451", "43": de43("FIRST BANK ATM 451", "CHICAGO", "IL", "US"),
    "49": "840", "52": rhex(8),
})

add("0210-zero-length-de48-lllvar", "0210", response(
    atm, "0210", RESP_KEEP + ["28"], {"38": "ATM123", "39": "00", "48": ""}))

# --- 0400 / 0401 / 0410 / 0420 / 0421 / 0430 reversals -----------------------

dt = "1122163000"
rev = add("0400-reversal-of-purchase-de90", "0400", {
    "2": purchase["2"], "3": purchase["3"], "4": purchase["4"], "7": dt,
    "11": stan(), "12": "113000", "13": "1122", "18": "5411", "22": "051",
    "25": "00", "32": ACQ, "37": purchase["37"], "41": TID, "42": MID, "49": "840",
    "90": de90("0200", purchase["11"], purchase["7"], ACQ),
})
add("0401-repeat-reversal-of-purchase", "0401", {k: v for k, v in rev.items() if k != "t"})
add("0410-reversal-response-approved", "0410", response(rev, "0410", RESP_KEEP + ["90"], {
    "39": "00"}))

dt = "1122163500"
adv = add("0420-reversal-advice-timeout-de90", "0420", {
    "2": PAN_MC, "3": "000000", "4": amount(250000), "7": dt, "11": stan(),
    "12": "113500", "13": "1122", "22": "051", "25": "00", "32": ACQ, "33": FWD,
    "37": mc_chip["37"], "38": "MC0042", "39": "68", "41": "POS00017",
    "42": MID2, "49": "840",
    "90": de90("0100", mc_chip["11"], mc_chip["7"], ACQ, FWD),
    "100": RCV,
})
add("0421-repeat-reversal-advice-timeout", "0421", {k: v for k, v in adv.items() if k != "t"})
add("0430-reversal-advice-response-de90", "0430", response(
    adv, "0430", RESP_KEEP + ["90", "100"], {"39": "00"}))

dt = "1122164012"
adv = add("0420-partial-reversal-de95-replacement-amounts", "0420", {
    "2": PAN_VISA_DEBIT, "3": "000000", "4": amount(10000), "7": dt, "11": stan(),
    "12": "114012", "13": "1122", "22": "071", "25": "00", "32": ACQ,
    "37": "532611220777", "38": "PARTL1", "39": "00", "41": "FUEL0009",
    "42": "PETROL000000009", "49": "840",
    "90": de90("0200", "000777", "1122150000", ACQ),
    "95": amount(6342) + amount(0) + "C00000000" + "C00000000",
    "128": rhex(8),
})
add("0430-partial-reversal-response-de128", "0430", response(
    adv, "0430", RESP_KEEP + ["90", "95"], {"39": "00", "128": rhex(8)}))

# --- 0800 / 0810 network management --------------------------------------------

for code, label, dt in (("001", "sign-on", "1122060000"),
                        ("002", "sign-off", "1122235959"),
                        ("301", "echo-test", "1122120000")):
    req = add(f"0800-{label}-de70-{code}", "0800", {
        "7": dt, "11": stan(), "33": FWD, "70": code,
    })
    add(f"0810-{label}-response-de70-{code}", "0810", {
        "7": req["7"], "11": req["11"], "33": FWD, "39": "00", "70": code,
    })

add("0800-echo-test-minimal-only-secondary-field", "0800", {"7": "1122120500",
                                                            "11": stan(), "70": "301"})
add("0800-sign-on-de53-de96-security", "0800", {
    "7": "1122060005", "11": stan(), "53": "2001010100000000", "70": "001",
    "96": rhex(8),
})


# ---------------------------------------------------------------------------
# Encode, verify, write
# ---------------------------------------------------------------------------


def main() -> int:
    if iso8583.__version__ != PYISO8583_VERSION:
        print(f"warning: pyiso8583 {iso8583.__version__} installed, vectors were "
              f"made with {PYISO8583_VERSION}", file=sys.stderr)

    table = load_dialect("iso87")["fields"]
    names = [n for n, _ in vectors]
    assert len(set(names)) == len(names)

    per_dialect: dict[str, list[dict]] = {}
    for dname in DIALECTS:
        dialect = load_dialect(dname)
        spec = build_spec(dialect)
        out = []
        for name, msg in vectors:
            mti = msg["t"]
            fields = {k: v for k, v in msg.items() if k != "t"}
            assert "1" not in fields and "65" not in fields
            validate(name, mti, fields, table)

            wire, _ = iso8583.encode(copy.deepcopy(msg), spec)
            wire = bytes(wire)

            # Sanity: decode back, compare, re-encode.
            dec, _ = iso8583.decode(wire, spec)
            got = {k: v for k, v in dec.items() if k not in ("t", "p", "1", "h")}
            assert dec["t"] == mti, name
            assert got == fields, (name, dname, got, fields)
            wire2, _ = iso8583.encode(copy.deepcopy(dec), spec)
            assert bytes(wire2) == wire, (name, dname)

            # Bitmap checks: bit 1 iff any 65..128 field, bit 65 never.
            has_secondary = any(int(k) > 64 for k in fields)
            assert ("1" in dec) == has_secondary, name
            if has_secondary:
                sec = bytes.fromhex(dec["1"])
                assert not sec[0] & 0x80, f"{name}: bit 65 set"
            # Hex dialect: everything on the wire is printable ASCII.
            if dialect["message"]["bitmap_encoding"] == "hex":
                assert all(0x20 <= b < 0x7F for b in wire), name

            out.append({
                "name": name,
                "mti": mti,
                "fields": {k: fields[k] for k in sorted(fields, key=int)},
                "wire": wire.hex().upper(),
                "framed": frame(dialect, wire).hex().upper(),
            })
        per_dialect[dname] = out
        path = HERE / f"{dname}.json"
        path.write_text(json.dumps(out, indent=2) + "\n", encoding="ascii")
        print(f"wrote {len(out)} vectors to {path.relative_to(REPO)}")

    # Same canonical field values in both dialects.
    for a, b in zip(per_dialect["iso87"], per_dialect["iso87-hex"]):
        assert a["name"] == b["name"] and a["fields"] == b["fields"]

    FUZZ_DIR.mkdir(parents=True, exist_ok=True)
    for v in per_dialect["iso87"]:
        (FUZZ_DIR / f"{v['name']}.bin").write_bytes(bytes.fromhex(v["framed"]))
    print(f"wrote {len(per_dialect['iso87'])} seeds to {FUZZ_DIR.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
