"""A checked TCP transfer between two network namespaces of a lab topology, for the tier-3
tests of the user-space tunnel: the receiver counts and hashes what arrives, the sender sends
``size`` octets of a fixed pattern (optionally from a chosen source address), and the caller
compares ``(octets, SHA-256)`` with :func:`expected`."""

import hashlib
import subprocess
import sys

from haha.lab.timing import scaled

RECEIVER = r"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(1 << 18)
    if not d:
        break
    h.update(d); n += len(d)
print(n, h.hexdigest(), flush=True)
"""

SENDER = r"""
import socket, sys
timeout, source = float(sys.argv[4]), (sys.argv[5] if len(sys.argv) > 5 else None)
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
if source:
    s.bind((source, 0))
s.settimeout(timeout); s.connect((sys.argv[1], int(sys.argv[2])))
size = int(sys.argv[3]); block = bytes(range(256)) * 256; sent = 0
while sent < size:
    s.sendall(block[:size - sent]); sent += min(len(block), size - sent)
s.close()
"""

BLOCK = bytes(range(256)) * 256


def expected(size):
    """(octets, SHA-256 hex digest) of the ``size`` octets the sender sends."""
    h = hashlib.sha256()
    sent = 0
    while sent < size:
        chunk = BLOCK[:size - sent]
        h.update(chunk)
        sent += len(chunk)
    return size, h.hexdigest()


def transfer(topo, receiver, address, sender, port, size, source=None, timeout=60):
    """Listen on ``address``:``port`` in namespace ``receiver``, send ``size`` octets to it
    from namespace ``sender`` (bound to ``source`` when given); return (octets, digest) as
    received. ``timeout`` (scaled for emulation) bounds the connection and the wait."""
    rx = topo.popen(receiver, [sys.executable, "-c", RECEIVER, str(address), str(port)],
                    stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        argv = [sys.executable, "-c", SENDER, str(address), str(port), str(size),
                str(min(timeout, 60))]
        topo.run(sender, argv + ([str(source)] if source else []))
        out, _ = rx.communicate(timeout=scaled(timeout))
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    n, digest = out.split()
    return int(n), digest
