"""A codec in another process, for tests/test_wire_fast.py (not a test module).

Run as ``python wire_codec_child.py``; ``HAHA_WIRE_PLAIN`` in its environment chooses the
codec's plain forms or its shortcuts. It writes one pickled line, its ``haha.wire._fast.FAST``,
then answers requests read from stdin: each a 4-octet length and a pickled
``(function name, args, kwargs)`` naming a codec function, answered the same way with
``("ok", result)`` or ``("error", exception type name, WireError reason or None, text)``.
"""

import pickle
import struct
import sys

from haha.wire import WireError, _fast, icmpv6, ipv6, mh, options

FUNCTIONS = {
    "encode_mh": mh.encode_mh,
    "decode_mh": mh.decode_mh,
    "encode_icmpv6": icmpv6.encode_icmpv6,
    "decode_icmpv6": icmpv6.decode_icmpv6,
    "build_packet": ipv6.build_packet,
    "parse_packet": ipv6.parse_packet,
    "encode_options": options.encode_options,
    "encode_entries": options.encode_entries,
}

_LEN = struct.Struct("!I")


def call(name, args, kwargs):
    """What ``FUNCTIONS[name](*args, **kwargs)`` gives, as a picklable outcome."""
    try:
        return ("ok", FUNCTIONS[name](*args, **kwargs))
    except (WireError, TypeError, ValueError) as e:
        return ("error", type(e).__name__, getattr(e, "reason", None), str(e))


def send(out, value):
    data = pickle.dumps(value)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def main():
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    send(out, _fast.FAST)
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        name, args, kwargs = pickle.loads(inp.read(_LEN.unpack(head)[0]))
        send(out, call(name, args, kwargs))


if __name__ == "__main__":
    main()
