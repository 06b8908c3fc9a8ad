"""Packet I/O: transports that move complete IPv6 packets (see ``docs/io.md``).

- :mod:`.raw`: raw IPv6 out, AF_PACKET + classic BPF in, an nft table against Parameter Problem
  (privileged; a real deployment).
- :mod:`.udp`: IPv6 packets in UDP datagrams between loopback ports (unprivileged development).
- :mod:`.memory`: an in-memory hub for tests and embedders.
- :mod:`.tun`: a TUN device as a reader/writer of whole packets.
- :mod:`.bpf`: the classic BPF assembler, interpreter and mobility filter.
- :mod:`.system`: the operating-system seam and its in-memory twin.
"""
