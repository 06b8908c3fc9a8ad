"""bench/floor.py: the floor home agent answers real Binding Updates with Binding
Acknowledgements haha's mobile node accepts, and drops what a home agent must drop (so the
floor it measures leaves out no check it claims to make)."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import floor  # noqa: E402


@pytest.mark.parametrize("first_contact", [False, True])
def test_every_binding_update_is_acknowledged_as_haha_expects(first_contact):
    """Each Binding Update (from nodes whose pair the floor holds, or met for the first time
    and derived from the group key) gets one answer, and every answer opens under the node's
    SA and decodes as an accepted acknowledgement of that update's sequence number."""
    packets = floor.binding_updates(first_contact, 1200)
    args = (True, 0) if first_contact else (False, floor.NODES)
    _, answers = floor.serve_and_measure(floor.floor_main, args, packets, False,
                                         need_cpu=False)
    acks = floor.check_answers(answers, sample=len(answers))
    nodes = len(packets) if first_contact else floor.NODES
    assert [a.sequence for a in acks] == [1 + k // nodes for k in range(len(packets))]


def test_forged_replayed_and_stale_updates_get_no_answer():
    """Of a valid update, the same datagram again (an ESP replay), a copy with one bit of its
    ICV flipped, a datagram of another shape, and a later ESP packet carrying an older binding
    sequence number, only the valid update is answered."""
    packets = floor.binding_updates(False, 2 * floor.NODES)
    first, second = packets[0], packets[floor.NODES]  # node 0: sequence 1, then 2
    flipped = first[:-1] + bytes((first[-1] ^ 1,))
    other_shape = first[:6] + b"\x3b" + first[7:]
    ctx = multiprocessing.get_context("spawn")
    from haha.lab.cluster import free_udp_ports

    port = free_udp_ports(1)[0]
    ready = ctx.Event()
    server = ctx.Process(target=floor.floor_main, args=(port, ready, False, floor.NODES),
                         daemon=True)
    server.start()
    try:
        assert ready.wait(60)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        sock.connect(("127.0.0.1", port))
        sock.send(second)  # sequence 2 first: then the one carrying 1 is stale
        assert floor.check_answers([sock.recv(4096)])[0].sequence == 2
        for data in (second, flipped, other_shape, first):
            sock.send(data)
        with pytest.raises(socket.timeout):
            sock.recv(4096)
        sock.close()
    finally:
        server.kill()
        server.join()


def test_the_benchmark_prints_the_floor_and_the_echo_of_one_run():
    """The command prints one JSON object: the echo's CPU per datagram and each floor case's
    per Binding Update with its ratio to that echo."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "floor.py"),
                          "--datagrams", "8000", "--rounds", "1"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    doc = json.loads(out.stdout)
    assert doc["bench"] == "floor"
    cases = {r["case"]: r for r in doc["results"]}
    assert set(cases) == {"echo", "refresh", "first"}
    for case in ("refresh", "first"):
        r = cases[case]
        assert r["ratio_to_echo"] == round(r["value"] / cases["echo"]["value"], 2)
